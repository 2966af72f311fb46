//! The placement leader: every process that serves the API is a candidate; the one elected
//! reads the deployment specs (PostgreSQL), the live nodes (the members) and the current
//! assignments, runs the [`policy`](super::policy) and writes the result, fenced by its
//! leadership. A write refused as fenced sends it back to campaigning; a coordination service
//! that cannot be reached pauses placement (what runs keeps running).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::policy::{self, Demand, NodeCapacity, Plan};
use super::{ClusterError, Discovery, Leadership, Member, Placement};
use crate::footprint::Footprint;
use crate::launcher::{ReplicaLauncher, ReplicaSpec};
use crate::placement::NodeBudget;
use crate::spec::{DeploymentSpec, DeploymentStore};
use crate::Result;

/// Replicas a deployment runs in a cluster: its minimum, at least one. (Cluster-wide
/// autoscaling between `min_replicas` and `max_replicas` is not built yet.)
pub fn desired_replicas(spec: &DeploymentSpec) -> usize {
    spec.min_replicas.max(1)
}

/// Footprints by replica shape, sized once from the model's header through a launcher.
pub struct Sizer {
    launcher: Arc<dyn ReplicaLauncher>,
    cache: Mutex<HashMap<ReplicaSpec, Footprint>>,
}

impl Sizer {
    pub fn new(launcher: Arc<dyn ReplicaLauncher>) -> Self {
        Self {
            launcher,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn footprint(&self, spec: &DeploymentSpec) -> Result<Footprint> {
        let replica = ReplicaSpec {
            deployment: spec.name.clone(),
            model: spec.model.clone(),
            generation: 0,
            slots: spec.slots_per_replica,
            threads: spec.threads_per_replica,
            slot_context: spec.context_length,
            step_tokens: spec.step_tokens,
        };
        if let Some(f) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&replica)
        {
            return Ok(f.clone());
        }
        let f = self.launcher.footprint(&replica).await?;
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(replica, f.clone());
        Ok(f)
    }
}

/// The nodes replicas may be placed on, from the members.
pub fn capacities(members: &[Member]) -> Vec<NodeCapacity> {
    members
        .iter()
        .filter(|m| m.role.runs_replicas())
        .map(|m| NodeCapacity {
            id: m.id.clone(),
            budget: NodeBudget {
                memory_bytes: m.memory_bytes,
                threads: m.threads,
            },
        })
        .collect()
}

/// Demands of these specs (those that cannot be sized are left out, and logged).
pub async fn demands(specs: &[DeploymentSpec], sizer: &Sizer) -> Vec<Demand> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        match sizer.footprint(spec).await {
            Ok(footprint) => out.push(Demand {
                deployment: spec.name.clone(),
                replicas: desired_replicas(spec),
                footprint,
            }),
            Err(e) => {
                tracing::warn!(deployment = %spec.name, error = %e, "cannot size; not placed")
            }
        }
    }
    out
}

/// What the leader needs.
pub struct LeaderParts {
    /// This process's member id (the candidate's value in the election).
    pub id: String,
    pub discovery: Arc<dyn Discovery>,
    pub placement: Arc<dyn Placement>,
    pub store: Arc<dyn DeploymentStore>,
    pub sizer: Arc<Sizer>,
    /// How often the leader looks again without a membership change (spec changes are read
    /// from the store then).
    pub tick: Duration,
}

/// Campaign, then lead until fenced, forever (until the task is aborted).
pub fn spawn(parts: LeaderParts) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let lead = match parts.placement.campaign(&parts.id).await {
                Ok(lead) => lead,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot campaign for placement leadership; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tracing::info!(id = %parts.id, fence = lead.fence, "elected placement leader");
            lead_until_fenced(&parts, &lead).await;
        }
    })
}

async fn lead_until_fenced(parts: &LeaderParts, lead: &Leadership) {
    let mut members = parts.discovery.members();
    let mut refused = BTreeSet::new();
    loop {
        match round(parts, lead, &mut refused).await {
            Ok(()) => {}
            Err(ClusterError::Fenced) => {
                tracing::warn!(id = %parts.id, "placement leadership lost; campaigning again");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "placement paused: cannot write assignments"),
        }
        tokio::select! {
            _ = members.changed() => {}
            () = tokio::time::sleep(parts.tick) => {}
        }
    }
}

/// One round: place, and write if anything changed. `refused` remembers what was refused so
/// each refusal is logged once.
async fn round(
    parts: &LeaderParts,
    lead: &Leadership,
    refused: &mut BTreeSet<(String, u32)>,
) -> Result<(), ClusterError> {
    let specs = match parts.store.list().await {
        Ok(specs) => specs,
        Err(e) => {
            tracing::warn!(error = %e, "placement paused: cannot read the deployment specs");
            return Ok(());
        }
    };
    let members = parts.discovery.members().borrow().clone();
    let view = parts.placement.view().borrow().clone();
    let nodes = capacities(&members);
    let demands = demands(&specs, &parts.sizer).await;
    let started = std::time::Instant::now();
    let plan: Plan = policy::place(&nodes, &demands, &view.assignments);
    let now: BTreeSet<(String, u32)> = plan
        .refused
        .iter()
        .map(|r| (r.deployment.clone(), r.index))
        .collect();
    for r in &plan.refused {
        if !refused.contains(&(r.deployment.clone(), r.index)) {
            tracing::warn!(deployment = %r.deployment, replica = r.index, "{}", r.no_room);
        }
    }
    *refused = now;
    if plan.assignments != view.assignments {
        parts.placement.publish(lead, &plan.assignments).await?;
        tracing::info!(
            kept = plan.kept,
            placed = plan.placed,
            refused = plan.refused.len(),
            nodes = nodes.len(),
            micros = started.elapsed().as_micros() as u64,
            "placements written"
        );
    }
    Ok(())
}
