//! What the deployment's actor tells outside: waiting clients their places, metrics, and the
//! admin view.

use std::time::Instant;

use backend::{Event, Priority};

use super::Actor;
use crate::deployment::replicas::ReplicaState;
use crate::deployment::DeploymentView;
use crate::metrics;

impl Actor {
    /// Send each waiting client its new place in its class when it moved by at least a tenth
    /// (an interactive client's place counts no batch work).
    pub(super) fn report_positions(&mut self, class: Priority) {
        let queue = self.queue.class_mut(class);
        let drain = queue.drain_rate().clone();
        for (i, (_, w)) in queue.items_mut().enumerate() {
            let position = i + 1;
            if w.reported.abs_diff(position) >= (w.reported / 10).max(1) {
                w.reported = position;
                let _ = w.events.send(Ok(Event::Queued {
                    position,
                    eta_ms: drain.eta_ms(position),
                }));
            }
        }
    }

    pub(super) fn publish(&self) {
        let name = &self.spec.name;
        metrics::queue(name, self.queue.len(), self.replicas.in_flight());
        metrics::batch(
            name,
            self.queue.class(Priority::Batch).len(),
            self.replicas.batch_in_flight(),
        );
        metrics::replicas(
            name,
            self.replicas.count(ReplicaState::Loading),
            self.replicas.count(ReplicaState::Ready),
            self.replicas.count(ReplicaState::Draining),
        );
    }

    pub(super) fn view(&self, now: Instant) -> DeploymentView {
        DeploymentView {
            spec: self.spec.clone(),
            replicas: self.replicas.views(now),
            queue_length: self.queue.len(),
            in_flight: self.replicas.in_flight(),
            drain_per_sec: self
                .queue
                .class(Priority::Interactive)
                .drain_rate()
                .per_sec(),
            tokens_per_sec: if self.tokens.is_observed() {
                self.tokens.per_sec()
            } else {
                0.0
            },
            replica_memory_bytes: self.footprint.total_bytes(),
            replica_threads: self.footprint.threads,
        }
    }
}
