//! The control plane of one node: its deployments by served name, the node they share, the
//! launcher that starts replicas and the store that keeps specs across restarts. This is what
//! the gateway's admin routes and the binary call.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::cluster::gateway::{ClusterGateway, ClusterSnapshot, NodeUsage};
use crate::cluster::local::LocalCluster;
use crate::cluster::{Discovery, Member, Placement, Role};
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
    /// Set on a gateway of a cluster: deployments are the cluster's, served through it.
    cluster: Option<Arc<ClusterGateway>>,
    /// A single process describes itself as a one-node cluster through the in-process seams.
    single: LocalCluster,
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
                cluster: None,
                single: LocalCluster::new(),
            }),
        }
    }

    /// A gateway's plane in a cluster: deployments are created in the shared store, placed by
    /// the leader and served through `cluster` (nothing runs in this plane).
    pub fn clustered(
        cluster: Arc<ClusterGateway>,
        launcher: Arc<dyn ReplicaLauncher>,
        store: Arc<dyn DeploymentStore>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                node: Arc::new(Node::new(NodeBudget {
                    memory_bytes: 0,
                    threads: 0,
                })),
                launcher,
                store,
                deployments: RwLock::new(BTreeMap::new()),
                cluster: Some(cluster),
                single: LocalCluster::new(),
            }),
        }
    }

    /// The cluster this plane serves through, on a gateway of one.
    pub fn cluster(&self) -> Option<&Arc<ClusterGateway>> {
        self.inner.cluster.as_ref()
    }

    /// Nodes, leases, capacity, replicas and the leader: the cluster's on a gateway of one, or
    /// this process as a one-node cluster of its own (in process: no lease, its own leader).
    pub async fn cluster_snapshot(&self) -> ClusterSnapshot {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.snapshot();
        }
        let single = &self.inner.single;
        let node = self.node();
        let me = Member {
            id: "local".into(),
            role: Role::Both,
            address: String::new(),
            memory_bytes: node.memory_bytes,
            threads: node.threads,
            replicas: crate::cluster::agent::loads(self).await,
            lease: 0,
            ttl_secs: 0,
        };
        let mut assignments = crate::cluster::Assignments::new();
        for load in &me.replicas {
            let list = (0..load.ready + load.loading)
                .map(|i| crate::cluster::Assignment {
                    deployment: load.deployment.clone(),
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    node: me.id.clone(),
                })
                .collect();
            assignments.insert(load.deployment.clone(), list);
        }
        // In process nothing fails: registering, campaigning and publishing are immediate.
        let _ = Discovery::register(single, me).await;
        if let Ok(lead) = Placement::campaign(single, "local").await {
            let _ = single.publish(&lead, &assignments).await;
            single.resign(&lead).await;
        }
        let placement = crate::cluster::PlacementView {
            leader: Some("local".into()),
            ..single.view().borrow().clone()
        };
        let used = [(
            "local".to_owned(),
            NodeUsage {
                memory_bytes: node.memory_used_bytes,
                threads: node.threads_used,
            },
        )]
        .into();
        ClusterSnapshot {
            me: "local".into(),
            members: single.members().borrow().clone(),
            placement,
            used,
        }
    }

    /// The backend serving `name`: the deployment here, or the cluster's route to it.
    pub fn backend(&self, name: &str) -> Option<Arc<dyn backend::Backend>> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.backend(name);
        }
        self.get(name)
            .map(|d| Arc::new(d) as Arc<dyn backend::Backend>)
    }

    /// What `/v1/models` lists of the deployments.
    pub fn infos(&self) -> Vec<backend::ModelInfo> {
        use backend::Backend as _;
        if let Some(cluster) = &self.inner.cluster {
            return cluster.infos();
        }
        self.names()
            .iter()
            .filter_map(|n| self.get(n))
            .map(|d| d.info())
            .collect()
    }

    /// The spec `name` runs with here.
    pub fn spec(&self, name: &str) -> Option<DeploymentSpec> {
        read(&self.inner.deployments)
            .get(name)
            .map(|(s, _)| s.clone())
    }

    /// Run `name` with this whole spec (a node agent pinning what was placed on it).
    pub async fn replace(&self, spec: DeploymentSpec) -> Result<DeploymentView> {
        let name = spec.name.clone();
        let old = self
            .spec(&name)
            .ok_or_else(|| Error::NotFound(name.clone()))?;
        let patch = DeploymentPatch {
            model: (old.model != spec.model).then(|| spec.model.clone()),
            min_replicas: Some(spec.min_replicas),
            max_replicas: Some(spec.max_replicas),
            slots_per_replica: Some(spec.slots_per_replica),
            threads_per_replica: Some(spec.threads_per_replica),
            context_length: spec.context_length,
            idle_seconds: Some(spec.idle_seconds),
            queue: Some(spec.queue.clone()),
            tenant_weights: Some(spec.tenant_weights.clone()),
        };
        self.update(&name, &patch).await
    }

    /// Start every deployment the store holds (after a restart). Returns the names started;
    /// one that cannot start (its model is gone, it no longer fits) is logged and skipped.
    pub async fn restore(&self) -> Result<Vec<String>> {
        if self.inner.cluster.is_some() {
            return Ok(Vec::new());
        }
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
        if let Some(cluster) = &self.inner.cluster {
            return cluster.create(spec).await;
        }
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
        if let Some(cluster) = &self.inner.cluster {
            return cluster.names();
        }
        read(&self.inner.deployments).keys().cloned().collect()
    }

    pub fn node(&self) -> NodeView {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.node();
        }
        self.inner.node.view()
    }

    pub async fn describe(&self, name: &str) -> Result<DeploymentView> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.describe(name).await;
        }
        self.require(name)?.describe().await
    }

    pub async fn list(&self) -> Vec<DeploymentView> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.list().await;
        }
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
        if let Some(cluster) = &self.inner.cluster {
            return cluster.events(name);
        }
        self.require(name)?.events().await
    }

    /// Apply a patch. New bounds take effect at the next tick; a new model (or replica shape)
    /// rolls the replicas over without dropping requests.
    pub async fn update(&self, name: &str, patch: &DeploymentPatch) -> Result<DeploymentView> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.update(name, patch).await;
        }
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
        if let Some(cluster) = &self.inner.cluster {
            return cluster.delete(name).await;
        }
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
