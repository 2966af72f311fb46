//! The node agent: runs exactly the replicas placed on this node, as deployments of a local
//! [`ControlPlane`] (each with its own fair queue) whose replica count is pinned to what the
//! leader placed here, and reports their load under its membership record every second.
//! Deployments no longer placed here (deleted, or re-placed while this node was away) are
//! drained and stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Discovery, Member, Placement, ReplicaLoad};
use crate::deployment::ReplicaState;
use crate::plane::ControlPlane;
use crate::spec::{DeploymentSpec, DeploymentStore};

/// What the agent needs.
pub struct AgentParts {
    /// This node's record (its load is filled in by the agent).
    pub me: Member,
    pub discovery: Arc<dyn Discovery>,
    pub placement: Arc<dyn Placement>,
    /// The deployment specs (PostgreSQL).
    pub store: Arc<dyn DeploymentStore>,
    /// The node's own plane: what runs here (its store keeps nothing: specs live in `store`).
    pub local: ControlPlane,
    /// How often the load is reported.
    pub report_every: Duration,
}

/// Reconcile on every placement change and report every `report_every`, until aborted.
pub fn spawn(parts: AgentParts) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let parts = Arc::new(parts);
        let stopping: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let mut view = parts.placement.view();
        loop {
            reconcile(&parts, &stopping).await;
            report(&parts).await;
            tokio::select! {
                _ = view.changed() => {}
                () = tokio::time::sleep(parts.report_every) => {}
            }
        }
    })
}

/// The spec this node runs for `spec` with `n` replicas placed here: exactly `n`, always.
fn local_spec(spec: &DeploymentSpec, n: usize) -> DeploymentSpec {
    DeploymentSpec {
        min_replicas: n,
        max_replicas: n,
        pinned: false,
        ..spec.clone()
    }
}

async fn reconcile(parts: &Arc<AgentParts>, stopping: &Arc<Mutex<BTreeSet<String>>>) {
    let view = parts.placement.view().borrow().clone();
    let mine: BTreeMap<String, usize> = view.on_node(&parts.me.id);
    let running: BTreeSet<String> = parts.local.names().into_iter().collect();
    // Stale: running here but not placed here.
    for name in running.iter().filter(|n| !mine.contains_key(*n)) {
        if !stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone())
        {
            continue;
        }
        tracing::info!(deployment = %name, "not placed on this node (any more): stopping its replicas");
        let (local, name, stopping) = (parts.local.clone(), name.clone(), stopping.clone());
        tokio::spawn(async move {
            if let Err(e) = local.delete(&name).await {
                tracing::warn!(deployment = %name, error = %e, "cannot stop a stale deployment");
            }
            stopping
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        });
    }
    if mine.is_empty() {
        return;
    }
    let specs: BTreeMap<String, DeploymentSpec> = match parts.store.list().await {
        Ok(specs) => specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the deployment specs; keeping what runs");
            return;
        }
    };
    for (name, &n) in &mine {
        let Some(spec) = specs.get(name) else {
            continue;
        };
        let want = local_spec(spec, n);
        let result = match parts.local.spec(name) {
            None if running.contains(name) => continue, // still stopping
            None => parts.local.create(want).await.map(|_| ()),
            Some(have) if have == want => continue,
            Some(_) => parts.local.replace(want).await.map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(deployment = %name, replicas = n, error = %e, "cannot run the replicas placed here");
        }
    }
}

/// This node's load, per deployment it runs.
pub async fn loads(local: &ControlPlane) -> Vec<ReplicaLoad> {
    local
        .list()
        .await
        .into_iter()
        .map(|view| {
            let ready: Vec<_> = view
                .replicas
                .iter()
                .filter(|r| r.state == ReplicaState::Ready)
                .collect();
            ReplicaLoad {
                deployment: view.spec.name.clone(),
                ready: ready.len(),
                loading: view
                    .replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::Loading)
                    .count(),
                slots: ready.iter().map(|r| r.slots).sum(),
                queued: view.queue_length,
                running: view.in_flight,
            }
        })
        .collect()
}

async fn report(parts: &AgentParts) {
    let me = Member {
        replicas: loads(&parts.local).await,
        ..parts.me.clone()
    };
    if let Err(e) = parts.discovery.update(me).await {
        tracing::warn!(error = %e, "cannot report this node's load");
    }
}
