//! The two priority classes of a deployment's queue: interactive requests and batch lines
//! ([`Priority`]), each a fair [`State`] of its own.
//!
//! An interactive request is always taken before any batch request, whatever their arrival
//! order; batch requests are fair-shared among tenants within their own class. Positions and
//! ETAs told to interactive clients come from the interactive queue alone, so batch work never
//! counts ahead of them (on a replica it yields its slot: see the engine's pre-emption). Batch
//! requests may wait much longer than interactive ones ([`BATCH_MAX_WAIT`]): a batch has a
//! completion window of hours and its runner, not the queue, decides when a line is too late.

use std::time::{Duration, Instant};

pub use backend::Priority;

use super::{Entry, QueueConfig, State, TicketId};

/// How long a batch request may wait in line (at least the deployment's `max_wait`).
pub const BATCH_MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct Classes<T> {
    interactive: State<T>,
    batch: State<T>,
}

fn batch_config(config: &QueueConfig) -> QueueConfig {
    QueueConfig {
        max_wait: config.max_wait.max(BATCH_MAX_WAIT),
        ..config.clone()
    }
}

impl<T> Classes<T> {
    pub fn new(config: QueueConfig) -> Self {
        Self {
            batch: State::new(batch_config(&config)),
            interactive: State::new(config),
        }
    }

    /// New bounds for both classes (batch keeps its longer wait).
    pub fn set_config(&mut self, config: QueueConfig) {
        self.batch.set_config(batch_config(&config));
        self.interactive.set_config(config);
    }

    /// A tenant's weight, in both classes.
    pub fn set_weight(&mut self, tenant: &str, weight: u32) {
        self.interactive.set_weight(tenant, weight);
        self.batch.set_weight(tenant, weight);
    }

    pub fn class(&self, priority: Priority) -> &State<T> {
        match priority {
            Priority::Interactive => &self.interactive,
            Priority::Batch => &self.batch,
        }
    }

    pub fn class_mut(&mut self, priority: Priority) -> &mut State<T> {
        match priority {
            Priority::Interactive => &mut self.interactive,
            Priority::Batch => &mut self.batch,
        }
    }

    /// Requests waiting in both classes.
    pub fn len(&self) -> usize {
        self.interactive.len() + self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.interactive.is_empty() && self.batch.is_empty()
    }

    /// The class the next dispatch takes from: interactive whenever one waits.
    pub fn next_class(&self) -> Option<Priority> {
        if !self.interactive.is_empty() {
            Some(Priority::Interactive)
        } else if !self.batch.is_empty() {
            Some(Priority::Batch)
        } else {
            None
        }
    }

    /// Take the next request to dispatch, if a replica can take its class (`room`): an
    /// interactive one whenever one waits, else a batch one. A waiting interactive request
    /// that finds no room holds batch requests back too: they would only take the slot it
    /// needs next.
    pub fn pop_next(
        &mut self,
        now: Instant,
        room: impl FnOnce(Priority) -> bool,
    ) -> Option<(Priority, Entry<T>)> {
        let class = self.next_class()?;
        if !room(class) {
            return None;
        }
        self.class_mut(class).pop(now).map(|e| (class, e))
    }

    /// Take a waiting request regardless of capacity (shutdown, a failed start).
    pub fn pop_any(&mut self, now: Instant) -> Option<Entry<T>> {
        self.interactive.pop(now).or_else(|| self.batch.pop(now))
    }

    /// The capacity serving both classes (see [`State::set_slots`]): batch work yields its
    /// slots, so interactive requests see every slot.
    pub fn set_slots(&mut self, now: Instant, ready: usize, planned: usize) {
        self.interactive.set_slots(now, ready, planned);
        self.batch.set_slots(now, ready, planned);
    }

    /// Requests past their class's maximum wait at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Entry<T>> {
        let mut out = self.interactive.expire(now);
        out.extend(self.batch.expire(now));
        out
    }

    /// Remove the waiting requests for which `f` holds (clients that left).
    pub fn remove_where(&mut self, mut f: impl FnMut(&T) -> bool) {
        for class in [Priority::Interactive, Priority::Batch] {
            let q = self.class_mut(class);
            for id in q.ids_where(&mut f) {
                q.remove(id);
            }
        }
    }

    /// The waiting request with this id in this class.
    pub fn get_mut(&mut self, priority: Priority, id: TicketId) -> Option<&mut T> {
        self.class_mut(priority).get_mut(id)
    }
}
