//! `GET /admin/v1/cluster`: the members (nodes and gateways with their leases, capacity and
//! the replicas they run), the placements and the placement leader.

use control::cluster::gateway::ClusterSnapshot;
use control::cluster::ReplicaLoad;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ClusterJson {
    pub object: &'static str,
    /// The member id of the process that answered.
    pub me: String,
    /// The placement leader's member id (null while none is elected).
    pub leader: Option<String>,
    /// The coordination service's revision of the last change seen.
    pub revision: i64,
    pub nodes: Vec<MemberJson>,
    pub placements: Vec<PlacementJson>,
}

#[derive(Debug, Serialize)]
pub struct MemberJson {
    pub id: String,
    pub role: &'static str,
    pub address: String,
    /// The lease holding its record (0 in a single process) and its time to live.
    pub lease: String,
    pub ttl_seconds: u64,
    pub memory_bytes: u64,
    pub threads: usize,
    /// What the replicas placed on it take of those budgets.
    pub memory_used_bytes: u64,
    pub threads_used: usize,
    /// Replicas placed on it.
    pub placed_replicas: usize,
    /// What it reports running, per deployment.
    pub replicas: Vec<ReplicaLoad>,
}

#[derive(Debug, Serialize)]
pub struct PlacedJson {
    pub index: u32,
    pub node: String,
}

#[derive(Debug, Serialize)]
pub struct PlacementJson {
    pub deployment: String,
    pub replicas: Vec<PlacedJson>,
}

impl From<ClusterSnapshot> for ClusterJson {
    fn from(s: ClusterSnapshot) -> Self {
        let nodes = s
            .members
            .iter()
            .map(|m| MemberJson {
                id: m.id.clone(),
                role: m.role.as_str(),
                address: m.address.clone(),
                lease: format!("{:x}", m.lease),
                ttl_seconds: m.ttl_secs,
                memory_bytes: m.memory_bytes,
                threads: m.threads,
                memory_used_bytes: s.used_by(&m.id).memory_bytes,
                threads_used: s.used_by(&m.id).threads,
                placed_replicas: s.placed_on(&m.id),
                replicas: m.replicas.clone(),
            })
            .collect();
        let placements = s
            .placement
            .assignments
            .iter()
            .map(|(name, list)| PlacementJson {
                deployment: name.clone(),
                replicas: list
                    .iter()
                    .map(|a| PlacedJson {
                        index: a.index,
                        node: a.node.clone(),
                    })
                    .collect(),
            })
            .collect();
        Self {
            object: "cluster",
            me: s.me,
            leader: s.placement.leader,
            revision: s.placement.revision,
            nodes,
            placements,
        }
    }
}
