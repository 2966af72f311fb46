//! The control plane in the binary: deployment specs persisted in the database
//! ([`DbDeploymentStore`], the adapter from `control`'s seam to `store`), replicas started as
//! in-process engines resolving `hub:` SPECs through the hub, `--model`s as pinned deployments,
//! and the stored deployments restored at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use control::{
    ControlPlane, DeploymentSpec, DeploymentStore, EngineLauncher, EventKind, NodeBudget,
    QueueSpec, ReplicaState,
};

use crate::config::{ModelSpec, ServeConfig};

mod stored;

/// How long start-up waits for a `--model` to load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Deployment specs in the database (the same one as tenancy), in their stored form
/// ([`stored`]).
pub struct DbDeploymentStore {
    store: Arc<dyn store::Store>,
}

impl DbDeploymentStore {
    pub fn new(store: Arc<dyn store::Store>) -> Self {
        Self { store }
    }
}

fn store_err(e: impl std::fmt::Display) -> control::Error {
    control::Error::Store(e.to_string())
}

#[async_trait::async_trait]
impl DeploymentStore for DbDeploymentStore {
    async fn list(&self) -> control::Result<Vec<DeploymentSpec>> {
        let records = self.store.deployments().await.map_err(store_err)?;
        let mut specs = Vec::with_capacity(records.len());
        for record in records {
            match stored::decode(&record.spec) {
                Ok(spec) => specs.push(spec),
                Err(e) => tracing::warn!(
                    deployment = %record.name,
                    error = %e,
                    "stored deployment spec is unreadable; skipped (DELETE and re-create it)"
                ),
            }
        }
        Ok(specs)
    }

    async fn put(&self, spec: &DeploymentSpec) -> control::Result<()> {
        self.store
            .put_deployment(&spec.name, &stored::encode(spec), chrono::Utc::now())
            .await
            .map_err(store_err)
    }

    async fn delete(&self, name: &str) -> control::Result<()> {
        self.store.delete_deployment(name).await.map_err(store_err)
    }
}

/// The model SPEC a `--model` deploys (without its `=NAME`).
fn model_of(spec: &ModelSpec) -> String {
    match &spec.hub {
        Some(r) => {
            let file = r.file.as_ref().map_or(String::new(), |f| format!("#{f}"));
            format!("hub:{}@{}{file}", r.repo, r.revision)
        }
        None => spec.path.display().to_string(),
    }
}

/// A `hub:` SPEC → the blob holding its GGUF; anything else is a path. Called by the launcher
/// from async code on the multi-threaded runtime, hence `block_in_place`.
pub(crate) fn resolver(
    hub: hub::Hub,
) -> impl Fn(&str) -> Result<PathBuf, String> + Send + Sync + 'static {
    move |model: &str| {
        if !model.starts_with("hub:") {
            return Ok(PathBuf::from(model));
        }
        let (r, _) = crate::hub_config::parse_hub_spec(model).map_err(|e| e.to_string())?;
        let hub = hub.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(crate::hub_config::resolve_model(&hub, &r))
                .map_err(|e| format!("{e:#}"))
        })
    }
}

/// The spec of a `--model`: pinned (one replica, never scaled to zero, not persisted), with the
/// engine flags as its replica shape.
fn pinned_spec(spec: &ModelSpec, config: &ServeConfig) -> DeploymentSpec {
    let e = &config.engine;
    DeploymentSpec {
        min_replicas: 1,
        max_replicas: 1,
        slots_per_replica: e.slots,
        threads_per_replica: e.threads,
        context_length: e.slot_context,
        step_tokens: Some(e.step_tokens),
        queue: QueueSpec {
            max_length: e.max_queue,
            max_wait_seconds: config.max_queue_wait_seconds,
            ..QueueSpec::default()
        },
        pinned: true,
        ..DeploymentSpec::new(spec.name.clone(), model_of(spec))
    }
}

/// The node's budgets: flags, else the machine; the default thread budget grows to hold every
/// `--model` (they were always served together).
pub(crate) fn budget(config: &ServeConfig) -> NodeBudget {
    let machine = NodeBudget::from_machine();
    let pinned_threads = config.engine.threads * config.models.len();
    NodeBudget {
        memory_bytes: config
            .node_memory_mib
            .map_or(machine.memory_bytes, |m| m.saturating_mul(1 << 20)),
        threads: config
            .node_threads
            .unwrap_or_else(|| machine.threads.max(pinned_threads)),
    }
}

/// Builds the plane, deploys every `--model` (waiting until each is loaded) and restores the
/// stored deployments.
pub async fn start(
    config: &ServeConfig,
    hub: &hub::Hub,
    store: Arc<dyn store::Store>,
) -> Result<ControlPlane> {
    let budget = budget(config);
    tracing::info!(
        memory_mib = budget.memory_bytes >> 20,
        threads = budget.threads,
        "node budget for replicas"
    );
    let plane = ControlPlane::new(
        budget,
        Arc::new(EngineLauncher::with_resolver(resolver(hub.clone()))),
        Arc::new(DbDeploymentStore::new(store)),
    );
    for model in &config.models {
        let spec = pinned_spec(model, config);
        tracing::info!(model = %spec.name, spec = %spec.model, "loading model");
        if let Err(e) = plane.create(spec).await {
            plane.shutdown().await;
            bail!("cannot serve model '{}': {e}", model.name);
        }
    }
    for model in &config.models {
        if let Err(e) = wait_ready(&plane, &model.name).await {
            plane.shutdown().await;
            return Err(e);
        }
    }
    match plane.restore().await {
        Ok(names) if !names.is_empty() => {
            tracing::info!(deployments = ?names, "restored stored deployments")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the stored deployments; none restored"),
    }
    Ok(plane)
}

/// Waits until `name` has a ready replica; a failed start is an error with its reason.
async fn wait_ready(plane: &ControlPlane, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let view = plane.describe(name).await?;
        if view.replicas.iter().any(|r| r.state == ReplicaState::Ready) {
            tracing::info!(model = %name, secs = started.elapsed().as_secs_f64(), "model ready");
            return Ok(());
        }
        if let Some(failed) = plane
            .events(name)
            .await?
            .into_iter()
            .find(|e| e.kind == EventKind::ReplicaFailed)
        {
            bail!("cannot serve model '{name}': {}", failed.reason);
        }
        if started.elapsed() > LOAD_TIMEOUT {
            bail!(
                "model '{name}' did not load within {}s",
                LOAD_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
