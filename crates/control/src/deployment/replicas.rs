//! A deployment's replicas and their states: bookkeeping only (which replica takes the next
//! request, which ones to drain), no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use backend::{Backend, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Placed and loading its model.
    Loading,
    /// Taking requests.
    Ready,
    /// Taking no new requests; unloaded once its running ones finish.
    Draining,
}

impl ReplicaState {
    /// The state's name in the admin API and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Draining => "draining",
        }
    }
}

pub(crate) struct Replica {
    pub id: u64,
    pub generation: u64,
    pub model: String,
    pub state: ReplicaState,
    pub backend: Option<Arc<dyn Backend>>,
    pub slots: usize,
    /// Requests running on it, batch ones included (more than `slots` while interactive work
    /// has pre-empted batch work, which waits in the engine to resume).
    pub in_flight: usize,
    /// Of `in_flight`, the batch requests.
    pub batch_in_flight: usize,
    /// Its engine refused a request as overloaded: no more until one of its requests ends.
    pub saturated: bool,
    /// Nothing running since then (`None` while busy).
    pub idle_since: Option<Instant>,
    pub started: Instant,
    pub completed: u64,
    /// Why it is draining (for the event when it is unloaded).
    pub drain_reason: String,
}

impl Replica {
    pub fn interactive_in_flight(&self) -> usize {
        self.in_flight.saturating_sub(self.batch_in_flight)
    }

    /// A request of this class started on it.
    pub fn take(&mut self, class: Priority) {
        self.in_flight += 1;
        if class == Priority::Batch {
            self.batch_in_flight += 1;
        }
    }

    /// A request of this class ended on it (or was sent back).
    pub fn give_back(&mut self, class: Priority) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if class == Priority::Batch {
            self.batch_in_flight = self.batch_in_flight.saturating_sub(1);
        }
    }
}

/// A replica as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: u64,
    pub state: ReplicaState,
    pub model: String,
    pub generation: u64,
    pub slots: usize,
    pub in_flight: usize,
    pub completed: u64,
    pub age_secs: u64,
}

#[derive(Default)]
pub(crate) struct ReplicaSet {
    replicas: BTreeMap<u64, Replica>,
    next_id: u64,
}

impl ReplicaSet {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn insert(&mut self, replica: Replica) {
        self.replicas.insert(replica.id, replica);
    }

    pub fn get(&self, id: u64) -> Option<&Replica> {
        self.replicas.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Replica> {
        self.replicas.get_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Replica> {
        self.replicas.remove(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Replica> {
        self.replicas.values_mut()
    }

    pub fn count(&self, state: ReplicaState) -> usize {
        self.iter().filter(|r| r.state == state).count()
    }

    pub fn in_flight(&self) -> usize {
        self.iter().map(|r| r.in_flight).sum()
    }

    /// Batch requests running (or pre-empted and waiting to resume) on replicas.
    pub fn batch_in_flight(&self) -> usize {
        self.iter().map(|r| r.batch_in_flight).sum()
    }

    /// A ready replica that can take a request of this class now, if any: a batch request
    /// needs a free slot; an interactive one only a slot no interactive request holds (its
    /// engine pre-empts batch work for it). The most free slots first, then the most slots
    /// free of interactive work (ties: the newest generation, then the lowest id).
    pub fn pick(&self, class: Priority) -> Option<u64> {
        self.iter()
            .filter(|r| r.state == ReplicaState::Ready && !r.saturated)
            .filter(|r| match class {
                Priority::Interactive => r.interactive_in_flight() < r.slots,
                Priority::Batch => r.in_flight < r.slots,
            })
            .max_by_key(|r| {
                (
                    r.slots.saturating_sub(r.in_flight),
                    r.slots - r.interactive_in_flight(),
                    r.generation,
                    std::cmp::Reverse(r.id),
                )
            })
            .map(|r| r.id)
    }

    /// Up to `n` replicas to drain: older generations first, then loading ones (nothing to
    /// wait for), then the least busy, the newest id last.
    pub fn choose_to_drain(&self, n: usize, generation: u64) -> Vec<u64> {
        let mut candidates: Vec<&Replica> = self
            .iter()
            .filter(|r| r.state != ReplicaState::Draining)
            .collect();
        candidates.sort_by_key(|r| {
            (
                r.generation >= generation,
                r.state == ReplicaState::Ready,
                r.in_flight,
                std::cmp::Reverse(r.id),
            )
        });
        candidates.into_iter().take(n).map(|r| r.id).collect()
    }

    /// Replicas of older generations that are not draining yet.
    pub fn stale(&self, generation: u64) -> impl Iterator<Item = &Replica> {
        self.iter()
            .filter(move |r| r.generation < generation && r.state != ReplicaState::Draining)
    }

    pub fn views(&self, now: Instant) -> Vec<ReplicaView> {
        self.iter()
            .map(|r| ReplicaView {
                id: r.id,
                state: r.state,
                model: r.model.clone(),
                generation: r.generation,
                slots: r.slots,
                in_flight: r.in_flight,
                completed: r.completed,
                age_secs: now.saturating_duration_since(r.started).as_secs(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: u64, slots: usize, interactive: usize, batch: usize) -> Replica {
        Replica {
            id,
            generation: 1,
            model: "m".into(),
            state: ReplicaState::Ready,
            backend: None,
            slots,
            in_flight: interactive + batch,
            batch_in_flight: batch,
            saturated: false,
            idle_since: None,
            started: Instant::now(),
            completed: 0,
            drain_reason: String::new(),
        }
    }

    fn set(replicas: Vec<Replica>) -> ReplicaSet {
        let mut set = ReplicaSet::default();
        for r in replicas {
            set.insert(r);
        }
        set
    }

    #[test]
    fn a_replica_full_of_batch_work_still_takes_interactive_requests() {
        let s = set(vec![replica(1, 2, 0, 2)]);
        assert_eq!(s.pick(Priority::Interactive), Some(1));
        assert_eq!(s.pick(Priority::Batch), None);
        // Interactive work that has pre-empted batch work: the batch waits in the engine.
        let s = set(vec![replica(1, 2, 2, 2)]);
        assert_eq!(s.pick(Priority::Interactive), None);
        assert_eq!(s.pick(Priority::Batch), None);
    }

    #[test]
    fn interactive_requests_prefer_free_slots_over_preempting_batch_work() {
        let s = set(vec![replica(1, 4, 0, 4), replica(2, 4, 3, 0)]);
        assert_eq!(s.pick(Priority::Interactive), Some(2));
        let s = set(vec![replica(1, 4, 0, 4), replica(2, 4, 4, 0)]);
        assert_eq!(s.pick(Priority::Interactive), Some(1));
    }

    #[test]
    fn batch_requests_take_only_free_slots() {
        let s = set(vec![replica(1, 2, 1, 0), replica(2, 2, 0, 2)]);
        assert_eq!(s.pick(Priority::Batch), Some(1));
        let mut r = replica(1, 2, 1, 0);
        r.take(Priority::Batch);
        assert_eq!((r.in_flight, r.batch_in_flight), (2, 1));
        let s = set(vec![r]);
        assert_eq!(s.pick(Priority::Batch), None);
        assert_eq!(s.pick(Priority::Interactive), Some(1));
    }
}
