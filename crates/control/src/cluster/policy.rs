//! The placement policy, pure: live nodes with their budgets, what each deployment wants, and
//! the current assignments in; the new assignments and the refusals (with the numbers) out.
//! No I/O and no clock: the leader calls it on every change, a test calls it with 1,000 nodes.
//!
//! Rules, in order:
//! 1. An assignment is kept while its node is alive and its index is still wanted, so a
//!    replica never moves without a reason (a node that comes back gets nothing back: its
//!    replicas were re-placed, and its agent stops the stale ones).
//! 2. Every missing index (new, scaled up, or lost with its node) goes to the node with the
//!    fewest replicas of that deployment (spread), then the most free memory, among the nodes
//!    whose free memory and threads hold it (weights already resident there are not counted
//!    twice). Never over-committed.
//! 3. An index that fits on no node is refused with the numbers of the roomiest node.

use std::collections::{BTreeMap, HashMap};

use super::{Assignment, Assignments};
use crate::footprint::Footprint;
use crate::placement::{NoRoom, NodeBudget};

/// A live node and its budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    pub id: String,
    pub budget: NodeBudget,
}

/// What a deployment wants: `replicas` of this footprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub deployment: String,
    pub replicas: usize,
    pub footprint: Footprint,
}

/// A replica index no node can hold now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub deployment: String,
    pub index: u32,
    pub no_room: NoRoom,
}

/// The outcome of one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub assignments: Assignments,
    pub refused: Vec<Refusal>,
    /// Indexes kept where they were.
    pub kept: usize,
    /// Indexes placed this round (new ones and those of lost nodes).
    pub placed: usize,
}

/// Room used on one node during a round.
#[derive(Debug, Clone, Default)]
struct Used {
    bytes: u64,
    threads: usize,
    /// Resident weights (interned keys, see [`Weights`]); a node holds few.
    weights: Vec<u32>,
}

/// Weights keys interned for the round, so a fit check compares integers.
#[derive(Default)]
struct Weights(HashMap<String, u32>);

impl Weights {
    fn id(&mut self, key: &str) -> u32 {
        let next = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        *self.0.entry(key.to_owned()).or_insert(next)
    }
}

/// A footprint with its weights interned.
struct Need<'a> {
    f: &'a Footprint,
    weights: u32,
}

impl Used {
    fn added_bytes(&self, need: &Need) -> u64 {
        let weights = if self.weights.contains(&need.weights) {
            0
        } else {
            need.f.weights_bytes
        };
        weights.saturating_add(need.f.private_bytes)
    }

    fn free_bytes(&self, budget: &NodeBudget) -> u64 {
        budget.memory_bytes.saturating_sub(self.bytes)
    }

    fn free_threads(&self, budget: &NodeBudget) -> usize {
        budget.threads.saturating_sub(self.threads)
    }

    fn fits(&self, budget: &NodeBudget, need: &Need) -> bool {
        need.f.threads <= self.free_threads(budget)
            && self.added_bytes(need) <= self.free_bytes(budget)
    }

    fn take(&mut self, need: &Need) {
        self.bytes = self.bytes.saturating_add(self.added_bytes(need));
        self.threads += need.f.threads;
        if !self.weights.contains(&need.weights) {
            self.weights.push(need.weights);
        }
    }
}

/// One placement round.
pub fn place(nodes: &[NodeCapacity], demands: &[Demand], current: &Assignments) -> Plan {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut interned = Weights::default();
    let needs: Vec<Need> = demands
        .iter()
        .map(|d| Need {
            f: &d.footprint,
            weights: interned.id(&d.footprint.weights_key),
        })
        .collect();
    let mut used = vec![Used::default(); nodes.len()];
    let mut plan = Plan::default();
    // Per deployment: the nodes holding its replicas (a node once per replica).
    let mut spread: Vec<Vec<usize>> = vec![Vec::new(); demands.len()];
    let mut missing: Vec<Vec<u32>> = vec![Vec::new(); demands.len()];

    // 1. Keep what still stands.
    for (d, demand) in demands.iter().enumerate() {
        let mut have = vec![false; demand.replicas];
        let mut kept = Vec::new();
        for a in current.get(&demand.deployment).into_iter().flatten() {
            let Some(&n) = index.get(a.node.as_str()) else {
                continue;
            };
            let i = a.index as usize;
            if i >= demand.replicas || have[i] || !used[n].fits(&nodes[n].budget, &needs[d]) {
                continue;
            }
            used[n].take(&needs[d]);
            spread[d].push(n);
            have[i] = true;
            kept.push(a.clone());
        }
        plan.kept += kept.len();
        if !kept.is_empty() {
            plan.assignments.insert(demand.deployment.clone(), kept);
        }
        missing[d] = (0..demand.replicas)
            .filter(|&i| !have[i])
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
    }

    // 2. Place what is missing. `count[n]`: replicas of the deployment at hand on node n
    // (filled from `spread` per deployment and cleared after, so a round is O(missing × nodes)).
    let mut count = vec![0u32; nodes.len()];
    for (d, demand) in demands.iter().enumerate() {
        if missing[d].is_empty() {
            continue;
        }
        for &n in &spread[d] {
            count[n] += 1;
        }
        for &i in &missing[d] {
            let need = &needs[d];
            let best = (0..nodes.len())
                .filter(|&n| used[n].fits(&nodes[n].budget, need))
                .min_by_key(|&n| {
                    (
                        count[n],
                        std::cmp::Reverse(used[n].free_bytes(&nodes[n].budget)),
                        n,
                    )
                });
            match best {
                Some(n) => {
                    used[n].take(need);
                    count[n] += 1;
                    spread[d].push(n);
                    plan.placed += 1;
                    plan.assignments
                        .entry(demand.deployment.clone())
                        .or_default()
                        .push(Assignment {
                            deployment: demand.deployment.clone(),
                            index: i,
                            node: nodes[n].id.clone(),
                        });
                }
                None => plan.refused.push(Refusal {
                    deployment: demand.deployment.clone(),
                    index: i,
                    no_room: no_room(nodes, &used, need, &demand.deployment),
                }),
            }
        }
        for &n in &spread[d] {
            count[n] = 0;
        }
    }
    for list in plan.assignments.values_mut() {
        list.sort_by_key(|a| a.index);
    }
    plan
}

/// Why `demand` fits nowhere: the numbers of the node with the most free memory (or of no
/// node at all).
fn no_room(nodes: &[NodeCapacity], used: &[Used], need: &Need, deployment: &str) -> NoRoom {
    let f = need.f;
    let roomiest = (0..nodes.len()).max_by_key(|&n| used[n].free_bytes(&nodes[n].budget));
    match roomiest {
        Some(n) => NoRoom {
            deployment: deployment.to_owned(),
            need_bytes: used[n].added_bytes(need),
            need_threads: f.threads,
            free_bytes: used[n].free_bytes(&nodes[n].budget),
            free_threads: used[n].free_threads(&nodes[n].budget),
            budget: nodes[n].budget,
            evict: Vec::new(),
            awaiting: false,
        },
        None => NoRoom {
            deployment: deployment.to_owned(),
            need_bytes: f.total_bytes(),
            need_threads: f.threads,
            free_bytes: 0,
            free_threads: 0,
            budget: NodeBudget {
                memory_bytes: 0,
                threads: 0,
            },
            evict: Vec::new(),
            awaiting: false,
        },
    }
}

/// Per node id: memory and threads the assignments use (for checks and the admin view).
pub fn usage(
    assignments: &Assignments,
    footprints: &BTreeMap<String, Footprint>,
) -> BTreeMap<String, (u64, usize)> {
    let mut interned = Weights::default();
    let mut per_node: BTreeMap<String, Used> = BTreeMap::new();
    for a in assignments.values().flatten() {
        if let Some(f) = footprints.get(&a.deployment) {
            let need = Need {
                f,
                weights: interned.id(&f.weights_key),
            };
            per_node.entry(a.node.clone()).or_default().take(&need);
        }
    }
    per_node
        .into_iter()
        .map(|(id, u)| (id, (u.bytes, u.threads)))
        .collect()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
