//! One node shared by every deployment on it: its [`Placement`] behind a mutex (short,
//! synchronous critical sections), the way to ask another deployment to give a replica up when
//! a placement needs its room, and a signal when room comes back (a start waiting for it goes
//! on at once instead of at its next tick).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

use crate::footprint::Footprint;
use crate::placement::{NoRoom, NodeBudget, Placement, ReplicaKey, Standing};
use crate::spec::lock;

/// The node's budgets and what is used, for the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub threads: usize,
    pub threads_used: usize,
}

/// A request to a deployment to give one of its replicas up to make room for another: an idle
/// one is unloaded, a spare one drained.
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
    freed: Notify,
}

impl Node {
    pub fn new(budget: NodeBudget) -> Self {
        Self {
            placement: Mutex::new(Placement::new(budget)),
            deployments: Mutex::new(HashMap::new()),
            freed: Notify::new(),
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

    /// Reserve room (`starving`: for a deployment with no replica and requests waiting);
    /// when replicas of other deployments would make room, ask their deployments to give them
    /// up (the caller tries again when [`Node::room_freed`] fires, or at a later tick).
    pub(crate) fn reserve(
        &self,
        key: ReplicaKey,
        f: Footprint,
        starving: bool,
    ) -> Result<(), NoRoom> {
        let result = {
            let mut placement = lock(&self.placement);
            let result = if starving {
                placement.reserve_starving(key, f)
            } else {
                placement.reserve(key, f)
            };
            if let Err(no_room) = &result {
                // Asked to leave: not named again while it goes.
                for victim in &no_room.evict {
                    placement.set_standing(victim, Standing::Leaving);
                }
            }
            result
        };
        if let Err(no_room) = &result {
            let deployments = lock(&self.deployments);
            for victim in &no_room.evict {
                if let Some(evict) = deployments.get(&victim.deployment) {
                    evict(Eviction {
                        replica: victim.replica,
                        reason: format!("given up to make room for '{}'", no_room.deployment),
                    });
                }
            }
        }
        result
    }

    pub(crate) fn release(&self, key: &ReplicaKey) {
        lock(&self.placement).release(key);
        self.freed.notify_waiters();
    }

    /// Fires when a replica's room is given back.
    pub(crate) async fn room_freed(&self) {
        self.freed.notified().await;
    }

    pub(crate) fn set_standing(&self, key: &ReplicaKey, standing: Standing) {
        lock(&self.placement).set_standing(key, standing);
    }

    pub(crate) fn threads_available_for(&self, deployment: &str, starving: bool) -> usize {
        lock(&self.placement).threads_available_for(deployment, starving)
    }
}
