//! A node's budgets and the replicas placed on it. The placer never oversubscribes: a replica
//! that does not fit is refused with the numbers, or the least recently used idle replicas of
//! *other* deployments whose unloading would make room are named.
//!
//! Pure state (`now` is passed in); the control plane keeps one per node behind a mutex.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::footprint::{mib, Footprint};

/// What a node offers replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeBudget {
    pub memory_bytes: u64,
    pub threads: usize,
}

impl NodeBudget {
    /// Defaults from this machine: total memory minus a headroom (the larger of 1 GiB and 10%)
    /// for the process itself and the OS, and every available CPU thread.
    pub fn from_machine() -> Self {
        let total = total_memory_bytes().unwrap_or(4 << 30);
        let headroom = (total / 10).max(1 << 30);
        Self {
            memory_bytes: total.saturating_sub(headroom),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// `MemTotal` from `/proc/meminfo` (Linux); `None` elsewhere.
fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// One replica on the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub deployment: String,
    pub replica: u64,
}

impl std::fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replica {} of '{}'", self.replica, self.deployment)
    }
}

/// A placement that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct NoRoom {
    pub deployment: String,
    pub need_bytes: u64,
    pub need_threads: usize,
    pub free_bytes: u64,
    pub free_threads: usize,
    pub budget: NodeBudget,
    /// Idle replicas of other deployments (least recently used first) whose unloading makes
    /// room; empty when even that would not.
    pub evict: Vec<ReplicaKey>,
}

impl NoRoom {
    fn message(&self) -> String {
        let head = format!(
            "a replica of '{}' needs {} MiB and {} threads; the node has {} MiB of {} MiB and {} of {} threads free",
            self.deployment,
            mib(self.need_bytes),
            self.need_threads,
            mib(self.free_bytes),
            mib(self.budget.memory_bytes),
            self.free_threads,
            self.budget.threads
        );
        if self.evict.is_empty() {
            format!("{head}. Lower slots_per_replica, context_length or threads_per_replica, scale other deployments down, or raise the node budget.")
        } else {
            let names: Vec<String> = self.evict.iter().map(ToString::to_string).collect();
            format!("{head}; unloading idle {} makes room.", names.join(", "))
        }
    }
}

#[derive(Debug, Clone)]
struct Placed {
    footprint: Footprint,
    /// Since when the replica has had nothing to do and may be unloaded for another
    /// deployment (`None`: busy, loading, or its deployment's minimum).
    idle_since: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Placement {
    budget: NodeBudget,
    replicas: BTreeMap<ReplicaKey, Placed>,
    /// Resident weights: bytes and how many replicas use them.
    weights: HashMap<String, (u64, usize)>,
}

impl Placement {
    pub fn new(budget: NodeBudget) -> Self {
        Self {
            budget,
            replicas: BTreeMap::new(),
            weights: HashMap::new(),
        }
    }

    pub fn budget(&self) -> NodeBudget {
        self.budget
    }

    pub fn used_bytes(&self) -> u64 {
        let private: u64 = self
            .replicas
            .values()
            .map(|p| p.footprint.private_bytes)
            .sum();
        private + self.weights.values().map(|(b, _)| *b).sum::<u64>()
    }

    pub fn used_threads(&self) -> usize {
        self.replicas.values().map(|p| p.footprint.threads).sum()
    }

    pub fn free_bytes(&self) -> u64 {
        self.budget.memory_bytes.saturating_sub(self.used_bytes())
    }

    pub fn free_threads(&self) -> usize {
        self.budget.threads.saturating_sub(self.used_threads())
    }

    /// Memory this footprint adds given what is resident.
    fn added_bytes(&self, f: &Footprint) -> u64 {
        let weights = if self.weights.contains_key(&f.weights_key) {
            0
        } else {
            f.weights_bytes
        };
        weights.saturating_add(f.private_bytes)
    }

    /// Whether a replica of this footprint could fit on an empty node.
    pub fn fits_empty_node(&self, deployment: &str, f: &Footprint) -> Result<(), NoRoom> {
        if f.total_bytes() <= self.budget.memory_bytes && f.threads <= self.budget.threads {
            return Ok(());
        }
        Err(NoRoom {
            deployment: deployment.to_owned(),
            need_bytes: f.total_bytes(),
            need_threads: f.threads,
            free_bytes: self.budget.memory_bytes,
            free_threads: self.budget.threads,
            budget: self.budget,
            evict: Vec::new(),
        })
    }

    /// Threads `deployment` could get: free ones plus those of idle replicas of others.
    pub fn threads_available_for(&self, deployment: &str) -> usize {
        let reclaimable: usize = self
            .replicas
            .iter()
            .filter(|(k, p)| k.deployment != deployment && p.idle_since.is_some())
            .map(|(_, p)| p.footprint.threads)
            .sum();
        self.free_threads() + reclaimable
    }

    /// Reserve room for a replica, or say what is missing and what could be unloaded.
    pub fn reserve(&mut self, key: ReplicaKey, f: Footprint) -> Result<(), NoRoom> {
        let need_bytes = self.added_bytes(&f);
        if need_bytes <= self.free_bytes() && f.threads <= self.free_threads() {
            let entry = self
                .weights
                .entry(f.weights_key.clone())
                .or_insert((f.weights_bytes, 0));
            entry.1 += 1;
            self.replicas.insert(
                key,
                Placed {
                    footprint: f,
                    idle_since: None,
                },
            );
            return Ok(());
        }
        Err(NoRoom {
            evict: self.victims(&key.deployment, &f),
            deployment: key.deployment,
            need_bytes,
            need_threads: f.threads,
            free_bytes: self.free_bytes(),
            free_threads: self.free_threads(),
            budget: self.budget,
        })
    }

    /// Least recently used idle replicas of other deployments whose removal makes `f` fit.
    fn victims(&self, deployment: &str, f: &Footprint) -> Vec<ReplicaKey> {
        let mut idle: Vec<(&ReplicaKey, &Placed, Instant)> = self
            .replicas
            .iter()
            .filter(|(k, _)| k.deployment != deployment)
            .filter_map(|(k, p)| p.idle_since.map(|t| (k, p, t)))
            .collect();
        idle.sort_by_key(|(k, _, t)| (*t, (*k).clone()));
        let mut trial = self.clone();
        let mut chosen = Vec::new();
        for (k, _, _) in idle {
            trial.release(k);
            chosen.push(k.clone());
            if trial.added_bytes(f) <= trial.free_bytes() && f.threads <= trial.free_threads() {
                return chosen;
            }
        }
        Vec::new()
    }

    /// Mark a placed replica idle since `since` (unloadable for others) or busy (`None`).
    pub fn set_idle(&mut self, key: &ReplicaKey, since: Option<Instant>) {
        if let Some(p) = self.replicas.get_mut(key) {
            p.idle_since = since;
        }
    }

    /// Give a replica's room back.
    pub fn release(&mut self, key: &ReplicaKey) {
        let Some(p) = self.replicas.remove(key) else {
            return;
        };
        if let Some(entry) = self.weights.get_mut(&p.footprint.weights_key) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                self.weights.remove(&p.footprint.weights_key);
            }
        }
    }

    pub fn contains(&self, key: &ReplicaKey) -> bool {
        self.replicas.contains_key(key)
    }
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
