//! Rolling a deployment's replicas over to a new model or shape, decided from the specs and the
//! replica set alone (the actor carries the decisions out). One new replica at a time: each
//! one that becomes ready replaces one stale replica; when there is no room for a new one, a
//! stale one is drained first.

use super::replicas::{ReplicaSet, ReplicaState};
use crate::spec::DeploymentSpec;

/// Whether `new` needs new replicas rather than a change in place: a different model file,
/// slots, threads or context (queue, scaling and weights change in place).
pub(super) fn reshapes(old: &DeploymentSpec, new: &DeploymentSpec) -> bool {
    new.model != old.model
        || new.slots_per_replica != old.slots_per_replica
        || new.threads_per_replica != old.threads_per_replica
        || new.context_length != old.context_length
}

/// Whether to start a replica of `generation` now: some replica is stale and no new one is
/// loading already.
pub(super) fn should_start_new(replicas: &ReplicaSet, generation: u64) -> bool {
    let stale = replicas.stale(generation).next().is_some();
    let loading = replicas
        .iter()
        .any(|r| r.generation == generation && r.state == ReplicaState::Loading);
    stale && !loading
}

/// The stale replica a newly ready replica of `generation` replaces, if one is left: the one
/// [`ReplicaSet::choose_to_drain`] would drain first, only if it is stale.
pub(super) fn replaced(replicas: &ReplicaSet, generation: u64) -> Option<u64> {
    let first = *replicas.choose_to_drain(1, generation).first()?;
    replicas
        .stale(generation)
        .any(|r| r.id == first)
        .then_some(first)
}

/// The replica to drain when a new one has no room: the first to drain (stale ones first).
pub(super) fn make_room(replicas: &ReplicaSet, generation: u64) -> Option<u64> {
    replicas.choose_to_drain(1, generation).first().copied()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::replicas::Replica;
    use super::*;

    fn set(replicas: &[(u64, ReplicaState, usize)]) -> ReplicaSet {
        let mut set = ReplicaSet::default();
        for &(generation, state, in_flight) in replicas {
            let id = set.next_id();
            set.insert(Replica {
                id,
                generation,
                model: format!("m{generation}.gguf"),
                state,
                backend: None,
                slots: 2,
                in_flight,
                batch_in_flight: 0,
                saturated: false,
                idle_since: None,
                started: Instant::now(),
                completed: 0,
                drain_reason: String::new(),
            });
        }
        set
    }

    #[test]
    fn only_the_shape_of_a_replica_needs_a_rollout() {
        let old = DeploymentSpec::new("d", "a.gguf");
        let mut new = old.clone();
        new.min_replicas = 1;
        new.idle_seconds += 10;
        assert!(!reshapes(&old, &new));
        for change in [
            |s: &mut DeploymentSpec| s.model = "b.gguf".into(),
            |s: &mut DeploymentSpec| s.slots_per_replica += 1,
            |s: &mut DeploymentSpec| s.threads_per_replica += 1,
            |s: &mut DeploymentSpec| s.context_length = Some(512),
        ] {
            let mut new = old.clone();
            change(&mut new);
            assert!(reshapes(&old, &new));
        }
    }

    #[test]
    fn one_new_replica_loads_at_a_time_while_any_is_stale() {
        use ReplicaState::*;
        assert!(
            !should_start_new(&set(&[(2, Ready, 0)]), 2),
            "nothing stale"
        );
        assert!(should_start_new(&set(&[(1, Ready, 0), (1, Ready, 1)]), 2));
        assert!(!should_start_new(
            &set(&[(1, Ready, 0), (2, Loading, 0)]),
            2
        ));
        // A stale replica already draining is on its way out.
        assert!(!should_start_new(
            &set(&[(1, Draining, 1), (2, Ready, 0)]),
            2
        ));
    }

    #[test]
    fn a_ready_replica_replaces_the_idlest_stale_one_and_never_a_fresh_one() {
        use ReplicaState::*;
        let replicas = set(&[(1, Ready, 2), (1, Ready, 0), (2, Ready, 0)]);
        assert_eq!(
            replaced(&replicas, 2),
            Some(2),
            "the stale one with nothing running"
        );
        let replicas = set(&[(2, Ready, 0), (2, Ready, 1)]);
        assert_eq!(replaced(&replicas, 2), None);
        let replicas = set(&[(1, Draining, 1), (2, Ready, 0)]);
        assert_eq!(replaced(&replicas, 2), None, "already draining");
    }

    #[test]
    fn room_is_made_by_draining_a_stale_replica_first() {
        use ReplicaState::*;
        let replicas = set(&[(2, Ready, 0), (1, Ready, 3)]);
        assert_eq!(make_room(&replicas, 2), Some(2));
        assert_eq!(make_room(&set(&[]), 2), None);
    }
}
