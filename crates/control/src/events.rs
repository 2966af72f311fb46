//! A deployment's event log: scale decisions, replica starts and stops, refusals, each with a
//! time and a reason. Bounded: the oldest events fall off.

use std::collections::VecDeque;
use std::time::SystemTime;

/// Events kept per deployment.
pub const EVENTS_KEPT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The autoscaler changed the desired replica count.
    Scale,
    /// A replica finished loading.
    ReplicaReady,
    /// A replica was drained and unloaded.
    ReplicaStopped,
    /// A replica could not be started (no room, launch error).
    ReplicaFailed,
    /// The model changed: replicas roll over to it.
    Rollout,
}

impl EventKind {
    /// The event's name in the admin API (the console shows it with spaces).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::ReplicaReady => "replica_ready",
            Self::ReplicaStopped => "replica_stopped",
            Self::ReplicaFailed => "replica_failed",
            Self::Rollout => "rollout",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScaleEvent {
    pub at: SystemTime,
    pub deployment: String,
    pub kind: EventKind,
    /// Replica count before and after (for `Scale`; the current count otherwise).
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<ScaleEvent>,
}

impl EventLog {
    pub fn push(&mut self, event: ScaleEvent) {
        tracing::info!(
            deployment = %event.deployment,
            kind = ?event.kind,
            from = event.from,
            to = event.to,
            reason = %event.reason,
            "deployment event"
        );
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Oldest first.
    pub fn snapshot(&self) -> Vec<ScaleEvent> {
        self.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let mut log = EventLog::default();
        for i in 0..EVENTS_KEPT + 10 {
            log.push(ScaleEvent {
                at: SystemTime::UNIX_EPOCH,
                deployment: "d".into(),
                kind: EventKind::Scale,
                from: i,
                to: i + 1,
                reason: String::new(),
            });
        }
        let s = log.snapshot();
        assert_eq!(s.len(), EVENTS_KEPT);
        assert_eq!(s[0].from, 10);
    }
}
