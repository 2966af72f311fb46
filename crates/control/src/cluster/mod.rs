//! Many processes, one control plane: the seams through which processes find each other
//! ([`Discovery`]: membership under leases) and agree on where replicas run ([`Placement`]:
//! one elected leader writes deployment → replica → node, everyone watches), the pure
//! placement [`policy`], and the three roles built on them: the placement [`leader`], the node
//! [`agent`] that runs what is placed on it, and the gateway's [`route`] to ready replicas on
//! any node. Knows no HTTP and no etcd: the `cluster` crate implements the seams on etcd and
//! the internal generate protocol; [`local`] implements them in process, for a single
//! `flywheel serve` and for tests.

pub mod agent;
pub mod gateway;
pub mod leader;
pub mod local;
mod migrate;
pub mod policy;
pub mod route;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What a process does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The API, tenancy and routing; runs no replica.
    Gateway,
    /// A node agent: runs the replicas placed on it.
    Node,
    /// Both.
    Both,
}

impl Role {
    /// Whether replicas may be placed on a process of this role.
    pub fn runs_replicas(self) -> bool {
        matches!(self, Role::Node | Role::Both)
    }

    /// Whether this role serves the public API (and may lead placement).
    pub fn serves_api(self) -> bool {
        matches!(self, Role::Gateway | Role::Both)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Node => "node",
            Role::Both => "both",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gateway" => Ok(Role::Gateway),
            "node" => Ok(Role::Node),
            "both" => Ok(Role::Both),
            other => Err(format!(
                "'{other}' is not a role: use gateway, node or both"
            )),
        }
    }
}

/// The load of one deployment's replicas on one node, as that node reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLoad {
    pub deployment: String,
    /// Replicas taking requests.
    pub ready: usize,
    /// Replicas still loading their model.
    pub loading: usize,
    /// Slots of the ready replicas together.
    pub slots: usize,
    /// Requests waiting in the node's queue for this deployment.
    pub queued: usize,
    /// Requests running on its replicas.
    pub running: usize,
}

/// One live process, as it registered itself (and keeps updating its load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable across restarts of the same process (so a node that comes back is known).
    pub id: String,
    pub role: Role,
    /// Where others reach it: `http://HOST:PORT`.
    pub address: String,
    /// The node's budgets for replicas (zero for a gateway).
    pub memory_bytes: u64,
    pub threads: usize,
    /// What it runs now.
    #[serde(default)]
    pub replicas: Vec<ReplicaLoad>,
    /// The lease holding its record (etcd's lease id; 0 in process) and its time to live.
    #[serde(default)]
    pub lease: i64,
    #[serde(default)]
    pub ttl_secs: u64,
}

impl Member {
    pub fn load_of(&self, deployment: &str) -> Option<&ReplicaLoad> {
        self.replicas.iter().find(|r| r.deployment == deployment)
    }
}

/// One replica of a deployment placed on a node. `index` counts a deployment's replicas from
/// 0; the leader re-places an index, never duplicates one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Assignment {
    pub deployment: String,
    pub index: u32,
    pub node: String,
}

/// Every deployment's placed replicas (by deployment, index order).
pub type Assignments = BTreeMap<String, Vec<Assignment>>;

/// What every process sees of placement: the assignments and who leads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementView {
    pub assignments: Assignments,
    /// The current leader's member id, if one is elected.
    pub leader: Option<String>,
    /// The revision of the last write seen (etcd's; a counter in process).
    pub revision: i64,
}

impl PlacementView {
    /// How many replicas of `deployment` are placed on `node`.
    pub fn count_on(&self, deployment: &str, node: &str) -> usize {
        self.assignments
            .get(deployment)
            .map_or(0, |a| a.iter().filter(|x| x.node == node).count())
    }

    /// Deployment → replicas placed on `node`.
    pub fn on_node(&self, node: &str) -> BTreeMap<String, usize> {
        let mut mine = BTreeMap::new();
        for a in self.assignments.values().flatten() {
            if a.node == node {
                *mine.entry(a.deployment.clone()).or_insert(0) += 1;
            }
        }
        mine
    }
}

/// Proof of leadership: the writes made with it are refused once another leader was elected
/// (the fence is the leader key's creation revision on etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub id: String,
    pub fence: i64,
}

/// Errors of the coordination engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// It cannot be reached or refused the call.
    #[error("the cluster's coordination service failed: {0}")]
    Unavailable(String),
    /// This process is no longer the placement leader: its write was refused.
    #[error("placement leadership was lost (another leader was elected); the write was refused")]
    Fenced,
}

pub type ClusterResult<T> = Result<T, ClusterError>;

/// Membership: each process registers itself under a lease it keeps renewing; one that stops
/// renewing disappears when the lease expires. Everyone watches the members.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync {
    /// Register (or re-register) this process's record under a fresh lease, renewed in the
    /// background for as long as this value lives.
    async fn register(&self, me: Member) -> ClusterResult<()>;
    /// Replace this process's record (its load) under the same lease.
    async fn update(&self, me: Member) -> ClusterResult<()>;
    /// The live members, kept current by a watch; the last known view while the service is
    /// unreachable.
    fn members(&self) -> watch::Receiver<Vec<Member>>;
    /// Give the lease back (a clean stop): the record disappears at once.
    async fn leave(&self);
}

/// Placement: one elected leader writes the assignments; everyone watches them.
#[async_trait::async_trait]
pub trait Placement: Send + Sync {
    /// Wait until this process (`id`) is the placement leader.
    async fn campaign(&self, id: &str) -> ClusterResult<Leadership>;
    /// Make `assignments` the placement of every deployment (deployments absent from it are
    /// removed). Refused with [`ClusterError::Fenced`] once `lead` is no longer the leader.
    async fn publish(&self, lead: &Leadership, assignments: &Assignments) -> ClusterResult<()>;
    /// The assignments and the leader, kept current by a watch.
    fn view(&self) -> watch::Receiver<PlacementView>;
    /// Stop leading (a clean stop); another candidate takes over.
    async fn resign(&self, lead: &Leadership);
}
