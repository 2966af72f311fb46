//! `flywheel serve --cluster etcd://…`: join the cluster and take the roles asked for.
//! - every process registers itself (address, role, budgets) under a lease on etcd;
//! - a gateway (`gateway`, `both`) serves the API through a clustered control plane (specs in
//!   PostgreSQL, requests routed to ready replicas on any node) and is a candidate for
//!   placement leader;
//! - a node (`node`, `both`) runs the replicas placed on it in a local plane, reports their
//!   load, and serves the internal generate API to gateways (cluster secret required).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cluster::{ClusterSecret, EtcdCluster, EtcdOptions, HttpConnector};
use control::cluster::gateway::ClusterGateway;
use control::cluster::leader::{LeaderParts, Sizer};
use control::cluster::{agent, leader, Discovery, Member};
use control::{ControlPlane, EngineLauncher, MemoryStore, ReplicaLauncher};

use crate::config::{ClusterConfig, ServeConfig};
use crate::deployments::DbDeploymentStore;

/// What a cluster process runs.
pub struct Clustered {
    /// The API's plane (gateways).
    pub plane: Option<ControlPlane>,
    /// The internal API (nodes).
    pub internal: Option<axum::Router>,
    /// What gateways send to nodes; it also opens a lone node's `/metrics`.
    pub secret: ClusterSecret,
    local: Option<ControlPlane>,
    etcd: Arc<EtcdCluster>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn start(
    config: &ServeConfig,
    c: &ClusterConfig,
    hub: &hub::Hub,
    store: Arc<dyn store::Store>,
) -> Result<Clustered> {
    let secret = ClusterSecret::load(
        std::env::var("FLYWHEEL_CLUSTER_SECRET").ok().as_deref(),
        c.secret_file.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = match &c.etcd_user {
        None => None,
        Some(user) => Some((
            user.clone(),
            std::env::var("FLYWHEEL_ETCD_PASSWORD")
                .context("--etcd-user needs its password in FLYWHEEL_ETCD_PASSWORD")?,
        )),
    };
    let etcd = EtcdCluster::connect(EtcdOptions {
        endpoints: c.endpoints.clone(),
        prefix: c.prefix.clone(),
        ttl_secs: i64::from(c.lease_seconds),
        user,
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot join the cluster: {e}. Check --cluster (etcd://HOST:PORT) and that etcd is running there"
        )
    })?;
    tracing::info!(endpoints = ?c.endpoints, id = %c.id, role = c.role.as_str(), "connected to etcd");

    let specs: Arc<dyn control::DeploymentStore> = Arc::new(DbDeploymentStore::new(store));
    let launcher: Arc<dyn ReplicaLauncher> = Arc::new(EngineLauncher::with_resolver(
        crate::deployments::resolver(hub.clone()),
    ));
    let budget = crate::deployments::budget(config);
    let runs_replicas = c.role.runs_replicas();
    let me = Member {
        id: c.id.clone(),
        role: c.role,
        address: c.advertise.clone(),
        memory_bytes: if runs_replicas {
            budget.memory_bytes
        } else {
            0
        },
        threads: if runs_replicas { budget.threads } else { 0 },
        replicas: Vec::new(),
        lease: 0,
        ttl_secs: 0,
    };
    etcd.register(me.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot register in the cluster: {e}"))?;

    let mut tasks = Vec::new();
    let (mut plane, mut internal, mut local) = (None, None, None);
    if runs_replicas {
        tracing::info!(
            memory_mib = budget.memory_bytes >> 20,
            threads = budget.threads,
            "node budget for replicas placed here"
        );
        let node_plane =
            ControlPlane::new(budget, launcher.clone(), Arc::new(MemoryStore::default()));
        tasks.push(agent::spawn(agent::AgentParts {
            me,
            discovery: etcd.clone(),
            placement: etcd.clone(),
            store: specs.clone(),
            local: node_plane.clone(),
            report_every: Duration::from_secs(1),
        }));
        internal = Some(cluster::internal::router(
            secret.clone(),
            node_plane.clone(),
        ));
        local = Some(node_plane);
    }
    if c.role.serves_api() {
        let sizer = Arc::new(Sizer::new(launcher.clone()));
        let connector = HttpConnector::new(secret.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let gateway = ClusterGateway::new(
            c.id.clone(),
            etcd.clone(),
            etcd.clone(),
            specs.clone(),
            sizer.clone(),
            Arc::new(connector),
        );
        tasks.push(gateway.start_refresh(Duration::from_secs(1)).await);
        tasks.push(leader::spawn(LeaderParts {
            id: c.id.clone(),
            discovery: etcd.clone(),
            placement: etcd.clone(),
            store: specs.clone(),
            sizer,
            tick: Duration::from_secs(1),
        }));
        plane = Some(ControlPlane::clustered(gateway, launcher, specs));
    }
    Ok(Clustered {
        plane,
        internal,
        secret,
        local,
        etcd,
        tasks,
    })
}

impl Clustered {
    /// Stop leading and placing, end the replicas here (after `grace`), and leave the cluster
    /// (the lease is revoked: others see this process gone at once).
    pub async fn stop(self, grace: Duration) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(local) = &self.local {
            local.shutdown_within(grace).await;
        }
        self.etcd.leave().await;
    }
}
