//! What a deployment gives up when another needs room on the node: pure decisions over its
//! replicas, no I/O. The node is told each replica's [`Standing`] every tick (and on each
//! change), and a request to give one up is answered from the same rule, so what the node
//! names and what the deployment does agree.

use crate::placement::Standing;

use super::replicas::{Replica, ReplicaState};

/// The deployment, as far as giving replicas up goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holding {
    /// Replicas loading or ready.
    pub active: usize,
    /// Replicas ready.
    pub ready: usize,
    /// Its floor: `min_replicas` (at least one while pinned).
    pub min: usize,
    /// Nothing of its own waits.
    pub queue_empty: bool,
}

/// What the node is told of replica `r`: idle (anyone may have it unloaded), spare (a
/// deployment with nothing may have it drained: another replica of this one serves, or it
/// holds only batch work), leaving, or busy. A deployment never gives up its minimum.
pub(crate) fn standing(r: &Replica, h: &Holding) -> Standing {
    match r.state {
        ReplicaState::Draining => Standing::Leaving,
        ReplicaState::Loading => Standing::Busy,
        ReplicaState::Ready if h.active <= h.min => Standing::Busy,
        ReplicaState::Ready if r.in_flight == 0 => match r.idle_since {
            Some(since) if h.queue_empty => Standing::Idle(since),
            _ => Standing::Busy,
        },
        ReplicaState::Ready if h.ready > 1 || r.batch_in_flight == r.in_flight => Standing::Spare,
        ReplicaState::Ready => Standing::Busy,
    }
}

/// What to do with a replica another deployment asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Give {
    /// Idle: unload it now.
    Unload,
    /// Spare: take no more work on it, unload it when its requests are done.
    Drain,
    /// Needed after all (it got work, or the deployment shrank meanwhile).
    Keep,
}

pub(crate) fn on_eviction(r: &Replica, h: &Holding) -> Give {
    match standing(r, h) {
        Standing::Idle(_) => Give::Unload,
        Standing::Spare => Give::Drain,
        Standing::Busy | Standing::Leaving => Give::Keep,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn replica(state: ReplicaState, in_flight: usize, batch: usize) -> Replica {
        let now = Instant::now();
        Replica {
            id: 1,
            generation: 1,
            model: "m".into(),
            state,
            backend: None,
            slots: 4,
            in_flight,
            batch_in_flight: batch,
            saturated: false,
            idle_since: (in_flight == 0).then_some(now),
            started: now,
            completed: 0,
            drain_reason: String::new(),
        }
    }

    fn holding(active: usize, min: usize, queue_empty: bool) -> Holding {
        Holding {
            active,
            ready: active,
            min,
            queue_empty,
        }
    }

    #[test]
    fn an_idle_replica_above_the_minimum_is_unloaded_for_anyone() {
        let r = replica(ReplicaState::Ready, 0, 0);
        assert!(matches!(
            standing(&r, &holding(1, 0, true)),
            Standing::Idle(_)
        ));
        assert_eq!(on_eviction(&r, &holding(1, 0, true)), Give::Unload);
        // Its own requests wait: it is about to get work.
        assert_eq!(standing(&r, &holding(1, 0, false)), Standing::Busy);
        assert_eq!(on_eviction(&r, &holding(1, 0, false)), Give::Keep);
    }

    #[test]
    fn the_minimum_is_never_given_up() {
        for r in [
            replica(ReplicaState::Ready, 0, 0),
            replica(ReplicaState::Ready, 2, 2),
            replica(ReplicaState::Ready, 2, 0),
        ] {
            assert_eq!(standing(&r, &holding(1, 1, true)), Standing::Busy);
            assert_eq!(on_eviction(&r, &holding(1, 1, true)), Give::Keep);
        }
    }

    #[test]
    fn a_busy_replica_is_spare_when_another_serves_or_it_holds_only_batch_work() {
        let interactive = replica(ReplicaState::Ready, 2, 1);
        // The only replica, serving interactive work: it stays.
        assert_eq!(
            standing(&interactive, &holding(1, 0, false)),
            Standing::Busy
        );
        assert_eq!(on_eviction(&interactive, &holding(1, 0, false)), Give::Keep);
        // One of two ready: it may be drained for a deployment with nothing.
        assert_eq!(
            standing(&interactive, &holding(2, 0, false)),
            Standing::Spare
        );
        assert_eq!(
            on_eviction(&interactive, &holding(2, 0, false)),
            Give::Drain
        );
        // Two active but the other still loading: nothing else serves yet.
        let loading = Holding {
            ready: 1,
            ..holding(2, 0, false)
        };
        assert_eq!(standing(&interactive, &loading), Standing::Busy);
        // The only replica, but only batch work on it: batch yields to interactive demand.
        let batch = replica(ReplicaState::Ready, 3, 3);
        assert_eq!(standing(&batch, &holding(1, 0, false)), Standing::Spare);
        assert_eq!(on_eviction(&batch, &holding(1, 0, false)), Give::Drain);
    }

    #[test]
    fn loading_and_draining_replicas_are_not_given_up_again() {
        let loading = replica(ReplicaState::Loading, 0, 0);
        assert_eq!(standing(&loading, &holding(3, 0, true)), Standing::Busy);
        let draining = replica(ReplicaState::Draining, 1, 0);
        assert_eq!(standing(&draining, &holding(3, 0, true)), Standing::Leaving);
        assert_eq!(on_eviction(&draining, &holding(3, 0, true)), Give::Keep);
    }
}
