//! A deployment's replicas and their states: bookkeeping only (which replica takes the next
//! request, which ones to drain), no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use backend::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Placed and loading its model.
    Loading,
    /// Taking requests.
    Ready,
    /// Taking no new requests; unloaded once its running ones finish.
    Draining,
}

pub(crate) struct Replica {
    pub id: u64,
    pub generation: u64,
    pub model: String,
    pub state: ReplicaState,
    pub backend: Option<Arc<dyn Backend>>,
    pub slots: usize,
    pub in_flight: usize,
    /// Its engine refused a request as overloaded: no more until one of its requests ends.
    pub saturated: bool,
    /// Nothing running since then (`None` while busy).
    pub idle_since: Option<Instant>,
    pub started: Instant,
    pub completed: u64,
    /// Why it is draining (for the event when it is unloaded).
    pub drain_reason: String,
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

    /// The ready replica with the most free slots (ties: the newest generation, then the
    /// lowest id), if any has one.
    pub fn pick(&self) -> Option<u64> {
        self.iter()
            .filter(|r| r.state == ReplicaState::Ready && !r.saturated && r.in_flight < r.slots)
            .max_by_key(|r| (r.slots - r.in_flight, r.generation, std::cmp::Reverse(r.id)))
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
