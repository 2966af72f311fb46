//! A node's budgets and the replicas placed on it. The placer never oversubscribes: a replica
//! that does not fit is refused with the numbers, or the least recently used idle replicas of
//! *other* deployments whose unloading would make room are named. A deployment that has no
//! replica while requests wait for it (it is *starving*) may also name replicas other
//! deployments can spare (one of several, or one holding only batch work), to be drained:
//! every deployment with interactive demand gets a replica before another keeps a second. Room
//! that replicas already leaving will give back is waited for, never evicted for twice.
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
    /// Replicas of other deployments (idle ones least recently used first, then spare ones
    /// for a starving deployment) whose unloading makes room; empty when even that would not,
    /// or when replicas already leaving will make it ([`NoRoom::awaiting`]).
    pub evict: Vec<ReplicaKey>,
    /// The room comes back once the replicas leaving (draining or just asked to) are gone:
    /// try again then.
    pub awaiting: bool,
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
        if self.awaiting {
            format!("{head}; replicas leaving make room.")
        } else if self.evict.is_empty() {
            format!("{head}. Lower slots_per_replica, context_length or threads_per_replica, scale other deployments down, or raise the node budget.")
        } else {
            let names: Vec<String> = self.evict.iter().map(ToString::to_string).collect();
            format!("{head}; unloading {} makes room.", names.join(", "))
        }
    }

    /// Whether room is coming without anything failing: replicas were asked to leave, or
    /// are leaving.
    pub fn is_pending(&self) -> bool {
        self.awaiting || !self.evict.is_empty()
    }
}

/// What a placed replica's deployment says of it, for room another deployment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Serving, loading, or its deployment's minimum: it stays.
    Busy,
    /// Nothing to do since then: another deployment may have it unloaded (least recently
    /// used first).
    Idle(Instant),
    /// Working, but its deployment can spare it (another of its replicas serves, or it holds
    /// only batch work): a starving deployment may have it drained.
    Spare,
    /// Draining, or asked to leave: its room comes back soon.
    Leaving,
}

#[derive(Debug, Clone)]
struct Placed {
    footprint: Footprint,
    standing: Standing,
}

impl Placed {
    /// Whether its room may go to another deployment (`starving`: one with nothing).
    fn yields(&self, starving: bool) -> bool {
        match self.standing {
            Standing::Idle(_) | Standing::Leaving => true,
            Standing::Spare => starving,
            Standing::Busy => false,
        }
    }
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
            awaiting: false,
        })
    }

    /// Threads `deployment` could get: free ones plus those of idle or leaving replicas of
    /// others (and of spare ones when it is `starving`).
    pub fn threads_available_for(&self, deployment: &str, starving: bool) -> usize {
        let reclaimable: usize = self
            .replicas
            .iter()
            .filter(|(k, p)| k.deployment != deployment && p.yields(starving))
            .map(|(_, p)| p.footprint.threads)
            .sum();
        self.free_threads() + reclaimable
    }

    /// Reserve room for a replica, or say what is missing and what could be unloaded.
    pub fn reserve(&mut self, key: ReplicaKey, f: Footprint) -> Result<(), NoRoom> {
        self.reserve_as(key, f, false)
    }

    /// [`Placement::reserve`] for a deployment with no replica and requests waiting: spare
    /// replicas of others may be named too.
    pub fn reserve_starving(&mut self, key: ReplicaKey, f: Footprint) -> Result<(), NoRoom> {
        self.reserve_as(key, f, true)
    }

    fn reserve_as(&mut self, key: ReplicaKey, f: Footprint, starving: bool) -> Result<(), NoRoom> {
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
                    standing: Standing::Busy,
                },
            );
            return Ok(());
        }
        let (evict, awaiting) = self.victims(&key.deployment, &f, starving);
        Err(NoRoom {
            evict,
            awaiting,
            deployment: key.deployment,
            need_bytes,
            need_threads: f.threads,
            free_bytes: self.free_bytes(),
            free_threads: self.free_threads(),
            budget: self.budget,
        })
    }

    /// Replicas whose removal makes `f` fit, after what is leaving anyway: idle ones of other
    /// deployments, least recently used first, then (for a starving deployment) spare ones;
    /// and whether what is leaving is enough by itself (nothing is named then).
    fn victims(&self, deployment: &str, f: &Footprint, starving: bool) -> (Vec<ReplicaKey>, bool) {
        let mut trial = self.clone();
        let leaving: Vec<&ReplicaKey> = self
            .replicas
            .iter()
            .filter(|(_, p)| p.standing == Standing::Leaving)
            .map(|(k, _)| k)
            .collect();
        for k in &leaving {
            trial.release(k);
        }
        if trial.fits(f) {
            return (Vec::new(), !leaving.is_empty());
        }
        let mut idle: Vec<(&ReplicaKey, Instant)> = Vec::new();
        let mut spare: Vec<&ReplicaKey> = Vec::new();
        for (k, p) in self
            .replicas
            .iter()
            .filter(|(k, _)| k.deployment != deployment)
        {
            match p.standing {
                Standing::Idle(since) => idle.push((k, since)),
                Standing::Spare if starving => spare.push(k),
                _ => {}
            }
        }
        idle.sort_by_key(|(k, t)| (*t, (*k).clone()));
        let candidates = idle.into_iter().map(|(k, _)| k).chain(spare);
        let mut chosen = Vec::new();
        for k in candidates {
            trial.release(k);
            chosen.push(k.clone());
            if trial.fits(f) {
                return (chosen, false);
            }
        }
        (Vec::new(), false)
    }

    fn fits(&self, f: &Footprint) -> bool {
        self.added_bytes(f) <= self.free_bytes() && f.threads <= self.free_threads()
    }

    /// Mark a placed replica idle since `since` (unloadable for others) or busy (`None`).
    pub fn set_idle(&mut self, key: &ReplicaKey, since: Option<Instant>) {
        self.set_standing(key, since.map_or(Standing::Busy, Standing::Idle));
    }

    /// What a placed replica's deployment now says of it.
    pub fn set_standing(&mut self, key: &ReplicaKey, standing: Standing) {
        if let Some(p) = self.replicas.get_mut(key) {
            p.standing = standing;
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
