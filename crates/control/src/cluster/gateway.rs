//! A gateway's control plane in a cluster: deployment specs are written to the shared store
//! (PostgreSQL) and read back every second (another gateway may have changed them), refused
//! at once with the numbers when their replicas fit on no live node, and served through a
//! [`ClusterDeployment`] routing to ready replicas on any node. Which node runs what is the
//! leader's to decide; this side only reads placements and members.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use backend::{Backend, ModelInfo};
use tokio::sync::watch;

use super::leader::{capacities, demands, desired_replicas, Sizer};
use super::policy::{self, Demand};
use super::route::{ClusterDeployment, Connector, InFlight};
use super::{Discovery, Member, Placement, PlacementView};
use crate::deployment::{DeploymentView, ReplicaState, ReplicaView};
use crate::events::{EventKind, EventLog, ScaleEvent};
use crate::footprint::Footprint;
use crate::node::NodeView;
use crate::spec::{DeploymentPatch, DeploymentSpec, DeploymentStore};
use crate::{Error, Result};

/// Everything `GET /admin/v1/cluster` shows.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    /// This process's member id.
    pub me: String,
    pub members: Vec<Member>,
    pub placement: PlacementView,
    /// Memory and threads the placed replicas take of each node's budget, by member id (a
    /// node with nothing placed is absent).
    pub used: BTreeMap<String, NodeUsage>,
}

/// What the replicas placed on one node take of its budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub memory_bytes: u64,
    pub threads: usize,
}

impl ClusterSnapshot {
    /// What the replicas placed on `node` take.
    pub fn used_by(&self, node: &str) -> NodeUsage {
        self.used.get(node).copied().unwrap_or_default()
    }

    /// How many replicas are placed on `node`.
    pub fn placed_on(&self, node: &str) -> usize {
        self.placement
            .assignments
            .values()
            .flatten()
            .filter(|a| a.node == node)
            .count()
    }
}

pub struct ClusterGateway {
    me: String,
    discovery: Arc<dyn Discovery>,
    placement: Arc<dyn Placement>,
    store: Arc<dyn DeploymentStore>,
    sizer: Arc<Sizer>,
    connector: Arc<dyn Connector>,
    specs: RwLock<BTreeMap<String, (DeploymentSpec, Footprint, u64)>>,
    in_flight: InFlight,
    /// Placement changes seen here, per deployment.
    events: Mutex<BTreeMap<String, EventLog>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ClusterGateway {
    pub fn new(
        me: String,
        discovery: Arc<dyn Discovery>,
        placement: Arc<dyn Placement>,
        store: Arc<dyn DeploymentStore>,
        sizer: Arc<Sizer>,
        connector: Arc<dyn Connector>,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            discovery,
            placement,
            store,
            sizer,
            connector,
            specs: RwLock::new(BTreeMap::new()),
            in_flight: InFlight::default(),
            events: Mutex::new(BTreeMap::new()),
        })
    }

    /// Placement changes of `name` seen by this gateway (oldest first).
    pub fn events(&self, name: &str) -> Result<Vec<ScaleEvent>> {
        if self.entry(name).is_none() {
            return Err(Error::NotFound(name.to_owned()));
        }
        Ok(self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(EventLog::snapshot)
            .unwrap_or_default())
    }

    /// Log every assignment that appears or goes, with why (a node lost, a scale change).
    fn record(&self, before: &PlacementView, after: &PlacementView, members: &[Member]) {
        let mut logs = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let names: BTreeSet<&String> = before
            .assignments
            .keys()
            .chain(after.assignments.keys())
            .collect();
        for name in names {
            let old = before.assignments.get(name).cloned().unwrap_or_default();
            let new = after.assignments.get(name).cloned().unwrap_or_default();
            let log = logs.entry(name.clone()).or_default();
            let mut push = |reason: String| {
                log.push(ScaleEvent {
                    at: SystemTime::now(),
                    deployment: name.clone(),
                    kind: EventKind::Scale,
                    from: old.len(),
                    to: new.len(),
                    reason,
                })
            };
            for a in new.iter().filter(|a| !old.contains(a)) {
                let was = old.iter().find(|o| o.index == a.index);
                push(match was {
                    Some(o) => format!(
                        "replica {} re-placed from node {} (lost) to node {}",
                        a.index, o.node, a.node
                    ),
                    None => format!("replica {} placed on node {}", a.index, a.node),
                });
            }
            for o in old
                .iter()
                .filter(|o| !new.iter().any(|a| a.index == o.index))
            {
                let alive = members.iter().any(|m| m.id == o.node);
                push(format!(
                    "replica {} on node {} removed{}",
                    o.index,
                    o.node,
                    if alive {
                        ""
                    } else {
                        " (node lost, nowhere to re-place it)"
                    }
                ));
            }
        }
    }

    /// Read the specs now, then every `every` in the background (until aborted).
    pub async fn start_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        self.refresh().await;
        let this = self.clone();
        let mut view = self.placement.view();
        let mut seen = view.borrow().clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = view.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = view.borrow_and_update().clone();
                        if now.assignments != seen.assignments {
                            let members = this.discovery.members().borrow().clone();
                            this.record(&seen, &now, &members);
                        }
                        seen = now;
                    }
                    () = tokio::time::sleep(every) => this.refresh().await,
                }
            }
        })
    }

    async fn refresh(&self) {
        let specs = match self.store.list().await {
            Ok(specs) => specs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the deployment specs; serving the last known");
                return;
            }
        };
        let mut fresh = BTreeMap::new();
        for spec in specs {
            let known = self.entry(&spec.name).filter(|(s, _, _)| *s == spec);
            let entry = match known {
                Some(entry) => entry,
                None => match self.sizer.footprint(&spec).await {
                    Ok(f) => (spec.clone(), f, unix_now()),
                    Err(e) => {
                        tracing::warn!(deployment = %spec.name, error = %e, "cannot size; not served here");
                        continue;
                    }
                },
            };
            fresh.insert(spec.name.clone(), entry);
        }
        *self
            .specs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    fn entry(&self, name: &str) -> Option<(DeploymentSpec, Footprint, u64)> {
        self.specs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn all(&self) -> Vec<(DeploymentSpec, Footprint, u64)> {
        self.specs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.specs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    pub fn snapshot(&self) -> ClusterSnapshot {
        let placement = self.placement.view().borrow().clone();
        let used = policy::usage(&placement.assignments, &self.footprints())
            .into_iter()
            .map(|(node, (memory_bytes, threads))| {
                (
                    node,
                    NodeUsage {
                        memory_bytes,
                        threads,
                    },
                )
            })
            .collect();
        ClusterSnapshot {
            me: self.me.clone(),
            members: self.discovery.members().borrow().clone(),
            placement,
            used,
        }
    }

    fn footprints(&self) -> BTreeMap<String, Footprint> {
        self.all()
            .into_iter()
            .map(|(s, f, _)| (s.name, f))
            .collect()
    }

    /// Refuse `spec` (with the numbers) if its replicas fit on no live node beside what the
    /// other deployments hold.
    async fn check_fits(&self, spec: &DeploymentSpec, footprint: &Footprint) -> Result<()> {
        let members = self.discovery.members().borrow().clone();
        let current = self.placement.view().borrow().assignments.clone();
        let others: Vec<DeploymentSpec> = self
            .all()
            .into_iter()
            .map(|(s, _, _)| s)
            .filter(|s| s.name != spec.name)
            .collect();
        let mut wanted = demands(&others, &self.sizer).await;
        wanted.push(Demand {
            deployment: spec.name.clone(),
            replicas: desired_replicas(spec),
            footprint: footprint.clone(),
        });
        let plan = policy::place(&capacities(&members), &wanted, &current);
        match plan.refused.into_iter().find(|r| r.deployment == spec.name) {
            Some(r) => Err(Error::NoRoom(r.no_room)),
            None => Ok(()),
        }
    }

    pub async fn create(&self, spec: DeploymentSpec) -> Result<DeploymentView> {
        spec.validate()?;
        if spec.pinned {
            return Err(Error::InvalidSpec {
                field: "pinned",
                message: "a cluster has no pinned deployments: create it with min_replicas".into(),
            });
        }
        if self.entry(&spec.name).is_some() {
            return Err(Error::AlreadyExists(spec.name));
        }
        let footprint = self.sizer.footprint(&spec).await?;
        self.check_fits(&spec, &footprint).await?;
        self.store.put(&spec).await?;
        let name = spec.name.clone();
        self.specs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), (spec, footprint, unix_now()));
        self.describe(&name).await
    }

    pub async fn update(&self, name: &str, patch: &DeploymentPatch) -> Result<DeploymentView> {
        let (old, _, created) = self
            .entry(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let spec = patch.apply(&old);
        spec.validate()?;
        let footprint = self.sizer.footprint(&spec).await?;
        self.check_fits(&spec, &footprint).await?;
        self.store.put(&spec).await?;
        self.specs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), (spec, footprint, created));
        self.describe(name).await
    }

    /// Forget the spec; the leader then drops its placements and the nodes stop its replicas.
    pub async fn delete(&self, name: &str) -> Result<()> {
        if self.entry(name).is_none() {
            return Err(Error::NotFound(name.to_owned()));
        }
        self.store.delete(name).await?;
        self.specs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    pub async fn describe(&self, name: &str) -> Result<DeploymentView> {
        let (spec, footprint, created) = self
            .entry(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        Ok(self.view_of(spec, &footprint, created))
    }

    pub async fn list(&self) -> Vec<DeploymentView> {
        self.all()
            .into_iter()
            .map(|(spec, f, created)| self.view_of(spec, &f, created))
            .collect()
    }

    /// Replicas as placed, each in the state its node reports (ready first, then loading).
    fn view_of(&self, spec: DeploymentSpec, f: &Footprint, created: u64) -> DeploymentView {
        let members = self.discovery.members().borrow().clone();
        let view = self.placement.view().borrow().clone();
        let mut replicas = Vec::new();
        let (mut queue_length, mut in_flight) = (0, 0);
        let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
        for a in view.assignments.get(&spec.name).into_iter().flatten() {
            let seen = by_node.entry(a.node.as_str()).or_insert(0);
            let load = members
                .iter()
                .find(|m| m.id == a.node)
                .and_then(|m| m.load_of(&spec.name));
            let state = match load {
                Some(l) if *seen < l.ready => ReplicaState::Ready,
                _ => ReplicaState::Loading,
            };
            if *seen == 0 {
                if let Some(l) = load {
                    queue_length += l.queued;
                    in_flight += l.running;
                }
            }
            *seen += 1;
            replicas.push(ReplicaView {
                id: u64::from(a.index),
                state,
                model: format!("{} on node {}", spec.model, a.node),
                generation: 0,
                slots: spec.slots_per_replica,
                in_flight: 0,
                completed: 0,
                age_secs: unix_now().saturating_sub(created),
            });
        }
        DeploymentView {
            replica_memory_bytes: f.total_bytes(),
            replica_threads: f.threads,
            spec,
            replicas,
            queue_length,
            in_flight,
            drain_per_sec: 0.0,
            tokens_per_sec: 0.0,
        }
    }

    /// The cluster's nodes together, as one node view (budgets summed, use as placed).
    pub fn node(&self) -> NodeView {
        let members = self.discovery.members().borrow().clone();
        let view = self.placement.view().borrow().clone();
        let used = policy::usage(&view.assignments, &self.footprints());
        let nodes: Vec<&Member> = members.iter().filter(|m| m.role.runs_replicas()).collect();
        NodeView {
            memory_bytes: nodes.iter().map(|m| m.memory_bytes).sum(),
            memory_used_bytes: used.values().map(|(b, _)| b).sum(),
            threads: nodes.iter().map(|m| m.threads).sum(),
            threads_used: used.values().map(|(_, t)| t).sum(),
        }
    }

    /// The backend serving `name` through the cluster.
    pub fn backend(&self, name: &str) -> Option<Arc<dyn Backend>> {
        let (spec, f, created) = self.entry(name)?;
        Some(Arc::new(ClusterDeployment {
            info: ModelInfo {
                id: spec.name.clone(),
                owned_by: "flywheel".into(),
                context_length: spec.context_length,
                created,
                kind: f.kind,
            },
            max_wait: Duration::from_secs(spec.queue.max_wait_seconds),
            members: self.discovery.members(),
            view: self.placement.view(),
            connector: self.connector.clone(),
            in_flight: self.in_flight.clone(),
        }))
    }

    pub fn infos(&self) -> Vec<ModelInfo> {
        self.names()
            .iter()
            .filter_map(|n| self.backend(n))
            .map(|b| b.info())
            .collect()
    }

    /// Placement as seen here (for `/admin/v1/cluster` and the events route).
    pub fn placement(&self) -> watch::Receiver<PlacementView> {
        self.placement.view()
    }
}
