use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn footprint(weights: &str, weights_bytes: u64, private_bytes: u64, threads: usize) -> Footprint {
    Footprint {
        weights_key: weights.to_owned(),
        weights_bytes,
        private_bytes,
        threads,
        kind: backend::ModelKind::Generate,
    }
}

fn nodes(n: usize, memory_bytes: u64, threads: usize) -> Vec<NodeCapacity> {
    (0..n)
        .map(|i| NodeCapacity {
            id: format!("node-{i:04}"),
            budget: NodeBudget {
                memory_bytes,
                threads,
            },
        })
        .collect()
}

fn demand(name: &str, replicas: usize, f: Footprint) -> Demand {
    Demand {
        deployment: name.to_owned(),
        replicas,
        footprint: f,
    }
}

/// Every node's use from scratch, weights counted once per node: nothing over its budget.
fn assert_no_overcommit(nodes: &[NodeCapacity], demands: &[Demand], plan: &Plan) {
    let footprints: BTreeMap<String, Footprint> = demands
        .iter()
        .map(|d| (d.deployment.clone(), d.footprint.clone()))
        .collect();
    let use_ = usage(&plan.assignments, &footprints);
    for node in nodes {
        if let Some(&(bytes, threads)) = use_.get(&node.id) {
            assert!(bytes <= node.budget.memory_bytes, "{} over memory", node.id);
            assert!(threads <= node.budget.threads, "{} over threads", node.id);
        }
    }
    let live: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    for a in plan.assignments.values().flatten() {
        assert!(live.contains(a.node.as_str()), "{a:?} on a dead node");
    }
}

/// Each deployment's indexes appear once, all below its replica count.
fn assert_indexes_unique(demands: &[Demand], plan: &Plan) {
    for d in demands {
        let list = plan
            .assignments
            .get(&d.deployment)
            .cloned()
            .unwrap_or_default();
        let set: BTreeSet<u32> = list.iter().map(|a| a.index).collect();
        assert_eq!(
            set.len(),
            list.len(),
            "{} has a duplicated index",
            d.deployment
        );
        assert!(set.iter().all(|&i| (i as usize) < d.replicas));
    }
}

#[test]
fn replicas_of_a_deployment_spread_over_distinct_nodes() {
    let nodes = nodes(3, 8 * GIB, 4);
    let demands = vec![demand(
        "smol",
        3,
        footprint("smol.gguf", 100 * MIB, 50 * MIB, 1),
    )];
    let plan = place(&nodes, &demands, &Assignments::new());
    let on: BTreeSet<&str> = plan.assignments["smol"]
        .iter()
        .map(|a| a.node.as_str())
        .collect();
    assert_eq!(on.len(), 3);
    assert_eq!(plan.placed, 3);
    assert!(plan.refused.is_empty());
}

#[test]
fn more_replicas_than_nodes_stack_evenly() {
    let nodes = nodes(2, 8 * GIB, 8);
    let demands = vec![demand(
        "smol",
        5,
        footprint("smol.gguf", 100 * MIB, 50 * MIB, 1),
    )];
    let plan = place(&nodes, &demands, &Assignments::new());
    let on_first = plan.assignments["smol"]
        .iter()
        .filter(|a| a.node == "node-0000")
        .count();
    assert!(on_first == 2 || on_first == 3, "{plan:?}");
    // Shared weights are counted once per node.
    let footprints = BTreeMap::from([("smol".to_owned(), demands[0].footprint.clone())]);
    let use_ = usage(&plan.assignments, &footprints);
    let (bytes, _) = use_["node-0000"];
    assert_eq!(bytes, 100 * MIB + on_first as u64 * 50 * MIB);
}

#[test]
fn what_fits_nowhere_is_refused_with_the_numbers() {
    let nodes = nodes(2, GIB, 2);
    let demands = vec![demand(
        "big",
        1,
        footprint("big.gguf", 2 * GIB, 10 * MIB, 1),
    )];
    let plan = place(&nodes, &demands, &Assignments::new());
    assert!(plan.assignments.is_empty());
    let refusal = &plan.refused[0];
    assert_eq!(refusal.index, 0);
    assert_eq!(refusal.no_room.need_bytes, 2 * GIB + 10 * MIB);
    assert_eq!(refusal.no_room.free_bytes, GIB);
    let message = refusal.no_room.to_string();
    assert!(
        message.contains("2058 MiB") && message.contains("1024 MiB"),
        "{message}"
    );
    // No node at all: still the numbers of what is needed.
    let plan = place(&[], &demands, &Assignments::new());
    assert_eq!(plan.refused[0].no_room.free_bytes, 0);
}

#[test]
fn threads_bound_placement_too() {
    let nodes = nodes(2, 64 * GIB, 2);
    let demands = vec![demand("t", 3, footprint("t.gguf", MIB, MIB, 2))];
    let plan = place(&nodes, &demands, &Assignments::new());
    assert_eq!(plan.placed, 2);
    assert_eq!(plan.refused.len(), 1);
    assert_eq!(plan.refused[0].no_room.free_threads, 0);
}

#[test]
fn a_lost_nodes_replicas_are_re_placed_and_the_rest_stay() {
    let all = nodes(4, 8 * GIB, 4);
    let demands = vec![
        demand("a", 3, footprint("a.gguf", 100 * MIB, 50 * MIB, 1)),
        demand("b", 2, footprint("b.gguf", 200 * MIB, 50 * MIB, 1)),
    ];
    let first = place(&all, &demands, &Assignments::new());
    let lost = first.assignments["a"][0].node.clone();
    let survivors: Vec<NodeCapacity> = all.iter().filter(|n| n.id != lost).cloned().collect();
    let second = place(&survivors, &demands, &first.assignments);
    assert_no_overcommit(&survivors, &demands, &second);
    assert_indexes_unique(&demands, &second);
    for d in &demands {
        assert_eq!(second.assignments[&d.deployment].len(), d.replicas);
        for a in &first.assignments[&d.deployment] {
            if a.node != lost {
                assert!(second.assignments[&d.deployment].contains(a), "{a:?} moved");
            }
        }
    }
    // Still spread: three replicas of `a` on three of the three survivors.
    let on: BTreeSet<&str> = second.assignments["a"]
        .iter()
        .map(|x| x.node.as_str())
        .collect();
    assert_eq!(on.len(), 3);
    // The node comes back: nothing moves to it (its agent stops its stale replicas).
    let third = place(&all, &demands, &second.assignments);
    assert_eq!(third.assignments, second.assignments);
    assert_eq!(third.placed, 0);
}

#[test]
fn scaling_down_drops_the_highest_indexes() {
    let nodes = nodes(3, 8 * GIB, 4);
    let f = footprint("a.gguf", 100 * MIB, 50 * MIB, 1);
    let first = place(&nodes, &[demand("a", 3, f.clone())], &Assignments::new());
    let second = place(&nodes, &[demand("a", 1, f)], &first.assignments);
    assert_eq!(
        second.assignments["a"],
        vec![first.assignments["a"][0].clone()]
    );
    // A deployment that is gone is no longer placed.
    let third = place(&nodes, &[], &second.assignments);
    assert!(third.assignments.is_empty());
}

/// CPU time of this thread (Linux), else wall time.
fn cpu_now() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
            },
            Duration::from_nanos,
        )
}

/// 1,000 nodes of mixed sizes, 10,000 replicas of 2,500 deployments over 50 model files: no
/// over-commit, spread, every replica of 50 lost nodes re-placed while the others stay, then
/// the nodes come back and nothing moves. Prints each round's CPU time (a bench figure; the
/// goal is under 100 ms in a release build).
#[test]
fn simulation_of_a_thousand_nodes_and_ten_thousand_replicas() {
    let nodes: Vec<NodeCapacity> = (0..1000)
        .map(|i| NodeCapacity {
            id: format!("node-{i:04}"),
            budget: NodeBudget {
                memory_bytes: [32, 64, 128][i % 3] * GIB,
                threads: [16, 32, 64][i % 3],
            },
        })
        .collect();
    let demands: Vec<Demand> = (0..2500)
        .map(|d| {
            let model = d % 50;
            demand(
                &format!("dep-{d:04}"),
                4,
                footprint(
                    &format!("model-{model}.gguf"),
                    (1 + model as u64 % 8) * GIB,
                    (256 + 64 * (d as u64 % 16)) * MIB,
                    1 + d % 4,
                ),
            )
        })
        .collect();
    let total: usize = demands.iter().map(|d| d.replicas).sum();
    assert_eq!(total, 10_000);

    let t = cpu_now();
    let first = place(&nodes, &demands, &Assignments::new());
    let initial = cpu_now().saturating_sub(t);
    assert!(first.refused.is_empty(), "{:?}", first.refused.first());
    assert_eq!(first.placed, total);
    assert_no_overcommit(&nodes, &demands, &first);
    assert_indexes_unique(&demands, &first);
    for d in &demands {
        let on: BTreeSet<&str> = first.assignments[&d.deployment]
            .iter()
            .map(|a| a.node.as_str())
            .collect();
        assert_eq!(on.len(), d.replicas, "{} not spread", d.deployment);
    }

    // 50 nodes die.
    let dead: BTreeSet<String> = (0..50).map(|i| format!("node-{:04}", i * 20)).collect();
    let survivors: Vec<NodeCapacity> = nodes
        .iter()
        .filter(|n| !dead.contains(&n.id))
        .cloned()
        .collect();
    let lost = first
        .assignments
        .values()
        .flatten()
        .filter(|a| dead.contains(&a.node))
        .count();
    assert!(lost > 0);
    let t = cpu_now();
    let second = place(&survivors, &demands, &first.assignments);
    let replace = cpu_now().saturating_sub(t);
    assert!(second.refused.is_empty());
    assert_eq!(
        second.placed, lost,
        "exactly the lost replicas are placed again"
    );
    assert_eq!(second.kept, total - lost);
    assert_no_overcommit(&survivors, &demands, &second);
    assert_indexes_unique(&demands, &second);
    for d in &demands {
        let list = &second.assignments[&d.deployment];
        assert_eq!(list.len(), d.replicas);
        let on: BTreeSet<&str> = list.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(
            on.len(),
            d.replicas,
            "{} not spread after re-placement",
            d.deployment
        );
    }

    // They come back: a steady round moves nothing.
    let t = cpu_now();
    let third = place(&nodes, &demands, &second.assignments);
    let steady = cpu_now().saturating_sub(t);
    assert_eq!(third.assignments, second.assignments);
    assert_eq!(third.placed, 0);

    println!(
        "placement simulation, 1000 nodes / 10000 replicas: initial round {:.1} ms CPU, \
         re-placement of {lost} replicas of 50 lost nodes {:.1} ms CPU, steady round {:.1} ms CPU",
        initial.as_secs_f64() * 1e3,
        replace.as_secs_f64() * 1e3,
        steady.as_secs_f64() * 1e3
    );
}
