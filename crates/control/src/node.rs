//! One node shared by every deployment on it: its [`Placement`] behind a mutex (short,
//! synchronous critical sections) and the way to ask another deployment to unload an idle
//! replica when a placement needs its room.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::footprint::Footprint;
use crate::placement::{NoRoom, NodeBudget, Placement, ReplicaKey};
use crate::spec::lock;

/// The node's budgets and what is used, for the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub threads: usize,
    pub threads_used: usize,
}

/// A request to a deployment to unload one of its idle replicas to make room for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eviction {
    pub replica: u64,
    pub reason: String,
}

/// How the node asks a deployment to unload a replica: the deployment registers it, so the
/// node knows nothing of how deployments take commands.
pub(crate) type Evict = Box<dyn Fn(Eviction) + Send + Sync>;

pub struct Node {
    placement: Mutex<Placement>,
    deployments: Mutex<HashMap<String, Evict>>,
}

impl Node {
    pub fn new(budget: NodeBudget) -> Self {
        Self {
            placement: Mutex::new(Placement::new(budget)),
            deployments: Mutex::new(HashMap::new()),
        }
    }

    pub fn view(&self) -> NodeView {
        let p = lock(&self.placement);
        NodeView {
            memory_bytes: p.budget().memory_bytes,
            memory_used_bytes: p.used_bytes(),
            threads: p.budget().threads,
            threads_used: p.used_threads(),
        }
    }

    /// Whether one replica could fit on this node when empty.
    pub fn fits_empty_node(&self, deployment: &str, f: &Footprint) -> Result<(), NoRoom> {
        lock(&self.placement).fits_empty_node(deployment, f)
    }

    pub(crate) fn register(&self, name: &str, evict: Evict) {
        lock(&self.deployments).insert(name.to_owned(), evict);
    }

    pub(crate) fn unregister(&self, name: &str) {
        lock(&self.deployments).remove(name);
    }

    /// Reserve room; when idle replicas of other deployments would make room, ask their
    /// deployments to unload them (the caller retries on a later tick).
    pub(crate) fn reserve(&self, key: ReplicaKey, f: Footprint) -> Result<(), NoRoom> {
        let result = lock(&self.placement).reserve(key, f);
        if let Err(no_room) = &result {
            let deployments = lock(&self.deployments);
            for victim in &no_room.evict {
                if let Some(evict) = deployments.get(&victim.deployment) {
                    evict(Eviction {
                        replica: victim.replica,
                        reason: format!("unloaded to make room for '{}'", no_room.deployment),
                    });
                }
            }
        }
        result
    }

    pub(crate) fn release(&self, key: &ReplicaKey) {
        lock(&self.placement).release(key);
    }

    pub(crate) fn set_idle(&self, key: &ReplicaKey, since: Option<Instant>) {
        lock(&self.placement).set_idle(key, since);
    }

    pub(crate) fn threads_available_for(&self, deployment: &str) -> usize {
        lock(&self.placement).threads_available_for(deployment)
    }
}
