//! The control plane of one node: its deployments by served name, the node they share, the
//! launcher that starts replicas and the store that keeps specs across restarts. This is what
//! the gateway's admin routes and the binary call.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::deployment::{Deployment, DeploymentView};
use crate::events::ScaleEvent;
use crate::footprint::Footprint;
use crate::launcher::{ReplicaLauncher, ReplicaSpec};
use crate::node::{Node, NodeView};
use crate::placement::NodeBudget;
use crate::spec::{DeploymentPatch, DeploymentSpec, DeploymentStore};
use crate::{Error, Result};

#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<Node>,
    launcher: Arc<dyn ReplicaLauncher>,
    store: Arc<dyn DeploymentStore>,
    deployments: RwLock<BTreeMap<String, (DeploymentSpec, Deployment)>>,
}

impl ControlPlane {
    pub fn new(
        budget: NodeBudget,
        launcher: Arc<dyn ReplicaLauncher>,
        store: Arc<dyn DeploymentStore>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                node: Arc::new(Node::new(budget)),
                launcher,
                store,
                deployments: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    /// Start every deployment the store holds (after a restart). Returns the names started;
    /// one that cannot start (its model is gone, it no longer fits) is logged and skipped.
    pub async fn restore(&self) -> Result<Vec<String>> {
        let mut started = Vec::new();
        for spec in self.inner.store.list().await? {
            let name = spec.name.clone();
            match self.launch(spec).await {
                Ok(_) => started.push(name),
                Err(e) => {
                    tracing::warn!(deployment = %name, error = %e, "stored deployment not started")
                }
            }
        }
        Ok(started)
    }

    /// Create a deployment: validate, size one replica from the model's header, check it fits
    /// the node, persist (unless pinned), start. Replicas start as the autoscaler decides
    /// (`min_replicas` at once); a placement refused later is an event with the numbers.
    pub async fn create(&self, spec: DeploymentSpec) -> Result<DeploymentView> {
        spec.validate()?;
        if self.get(&spec.name).is_some() {
            return Err(Error::AlreadyExists(spec.name));
        }
        let pinned = spec.pinned;
        let deployment = self.launch(spec.clone()).await?;
        if !pinned {
            if let Err(e) = self.inner.store.put(&spec).await {
                self.remove(&spec.name);
                deployment.shutdown().await;
                return Err(e);
            }
        }
        deployment.describe().await
    }

    async fn launch(&self, spec: DeploymentSpec) -> Result<Deployment> {
        spec.validate()?;
        let footprint = self.size(&spec, 1).await?;
        self.inner.node.fits_empty_node(&spec.name, &footprint)?;
        let mut map = write(&self.inner.deployments);
        if map.contains_key(&spec.name) {
            return Err(Error::AlreadyExists(spec.name));
        }
        // Spawned under the lock so two creations of one name cannot both start.
        let deployment = Deployment::spawn(
            spec.clone(),
            footprint,
            self.inner.node.clone(),
            self.inner.launcher.clone(),
        );
        map.insert(spec.name.clone(), (spec, deployment.clone()));
        Ok(deployment)
    }

    async fn size(&self, spec: &DeploymentSpec, generation: u64) -> Result<Footprint> {
        let replica = ReplicaSpec {
            deployment: spec.name.clone(),
            model: spec.model.clone(),
            generation,
            slots: spec.slots_per_replica,
            threads: spec.threads_per_replica,
            slot_context: spec.context_length,
            step_tokens: spec.step_tokens,
        };
        self.inner.launcher.footprint(&replica).await
    }

    /// The deployment serving `name`: a [`backend::Backend`] for the gateway.
    pub fn get(&self, name: &str) -> Option<Deployment> {
        read(&self.inner.deployments)
            .get(name)
            .map(|(_, d)| d.clone())
    }

    pub fn names(&self) -> Vec<String> {
        read(&self.inner.deployments).keys().cloned().collect()
    }

    pub fn node(&self) -> NodeView {
        self.inner.node.view()
    }

    pub async fn describe(&self, name: &str) -> Result<DeploymentView> {
        self.require(name)?.describe().await
    }

    pub async fn list(&self) -> Vec<DeploymentView> {
        let all: Vec<Deployment> = read(&self.inner.deployments)
            .values()
            .map(|(_, d)| d.clone())
            .collect();
        let mut views = Vec::with_capacity(all.len());
        for d in all {
            if let Ok(v) = d.describe().await {
                views.push(v);
            }
        }
        views
    }

    pub async fn events(&self, name: &str) -> Result<Vec<ScaleEvent>> {
        self.require(name)?.events().await
    }

    /// Apply a patch. New bounds take effect at the next tick; a new model (or replica shape)
    /// rolls the replicas over without dropping requests.
    pub async fn update(&self, name: &str, patch: &DeploymentPatch) -> Result<DeploymentView> {
        let (old, deployment) = read(&self.inner.deployments)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let spec = patch.apply(&old);
        spec.validate()?;
        let footprint = self.size(&spec, 0).await?;
        self.inner.node.fits_empty_node(&spec.name, &footprint)?;
        if !spec.pinned {
            self.inner.store.put(&spec).await?;
        }
        deployment.update(spec.clone(), footprint).await?;
        if let Some(entry) = write(&self.inner.deployments).get_mut(name) {
            entry.0 = spec;
        }
        deployment.describe().await
    }

    /// Stop taking requests for `name`, let queued and running ones finish, unload, forget.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let deployment = self.require(name)?;
        let pinned = read(&self.inner.deployments)
            .get(name)
            .is_some_and(|(s, _)| s.pinned);
        if !pinned {
            self.inner.store.delete(name).await?;
        }
        self.remove(name);
        deployment.shutdown().await;
        Ok(())
    }

    /// Drain every deployment (SIGTERM): let queued and running requests finish, then unload.
    /// Specs stay in the store.
    pub async fn shutdown(&self) {
        self.drain(None).await;
    }

    /// Like [`shutdown`](Self::shutdown), but requests still queued or running after `grace`
    /// are ended (their streams end with `ShuttingDown`). Returns once every replica has
    /// stopped: no engine thread runs any more.
    pub async fn shutdown_within(&self, grace: std::time::Duration) {
        self.drain(Some(grace)).await;
    }

    async fn drain(&self, grace: Option<std::time::Duration>) {
        let all: Vec<Deployment> = std::mem::take(&mut *write(&self.inner.deployments))
            .into_values()
            .map(|(_, d)| d)
            .collect();
        let mut drains = tokio::task::JoinSet::new();
        for d in all {
            drains.spawn(async move {
                match grace {
                    None => d.shutdown().await,
                    Some(grace) => {
                        if tokio::time::timeout(grace, d.shutdown()).await.is_err() {
                            tracing::warn!(
                                deployment = d.name(),
                                "requests still running after the drain; ending them"
                            );
                            d.stop().await;
                        }
                    }
                }
            });
        }
        while drains.join_next().await.is_some() {}
    }

    fn require(&self, name: &str) -> Result<Deployment> {
        self.get(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    fn remove(&self, name: &str) {
        write(&self.inner.deployments).remove(name);
    }
}

type Map = BTreeMap<String, (DeploymentSpec, Deployment)>;

fn read(lock: &RwLock<Map>) -> std::sync::RwLockReadGuard<'_, Map> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(lock: &RwLock<Map>) -> std::sync::RwLockWriteGuard<'_, Map> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
