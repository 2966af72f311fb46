//! The cluster's roles in one process over the in-process seams (`LocalCluster`): a placement
//! leader, three node agents each with its own plane of fake replicas, and a gateway routing
//! to them, on tokio's paused clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendError, EventStream, GenerateRequest, ModelInfo};
use control::cluster::gateway::ClusterGateway;
use control::cluster::leader::{LeaderParts, Sizer};
use control::cluster::local::LocalCluster;
use control::cluster::route::Connector;
use control::cluster::{agent, leader, Discovery, Member, Placement, Role};
use control::{ControlPlane, DeploymentStore, MemoryStore};

use crate::common::*;

/// Reaches a node's local plane directly (the `cluster` crate does this over HTTP).
struct InProcess(BTreeMap<String, ControlPlane>);

struct Gone(String);

#[async_trait::async_trait]
impl Backend for Gone {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.0.clone(),
            owned_by: "test".into(),
            context_length: None,
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, _: GenerateRequest) -> backend::Result<EventStream> {
        Err(BackendError::Unreachable(format!("{} is not here", self.0)))
    }
}

impl Connector for InProcess {
    fn connect(&self, node: &Member, deployment: &str) -> Arc<dyn Backend> {
        self.0
            .get(&node.id)
            .and_then(|p| p.backend(deployment))
            .unwrap_or_else(|| Arc::new(Gone(deployment.to_owned())))
    }
}

struct World {
    cluster: LocalCluster,
    nodes: BTreeMap<String, (ControlPlane, tokio::task::JoinHandle<()>)>,
    gateway: ControlPlane,
}

fn member(id: &str, role: Role, threads: usize) -> Member {
    Member {
        id: id.into(),
        role,
        address: format!("inproc://{id}"),
        memory_bytes: 8 << 30,
        threads,
        replicas: Vec::new(),
        lease: 0,
        ttl_secs: 0,
    }
}

async fn world(nodes: usize) -> World {
    let cluster = LocalCluster::new();
    let specs: Arc<dyn DeploymentStore> = Arc::new(MemoryStore::default());
    let mut planes = BTreeMap::new();
    for i in 1..=nodes {
        let id = format!("n{i}");
        let fx = fixture(4, Duration::from_secs(2), Duration::from_millis(500));
        let me = member(&id, Role::Node, 4);
        cluster.register(me.clone()).await.unwrap();
        let task = agent::spawn(agent::AgentParts {
            me,
            discovery: Arc::new(cluster.clone()),
            placement: Arc::new(cluster.clone()),
            store: specs.clone(),
            local: fx.plane.clone(),
            report_every: Duration::from_millis(200),
        });
        planes.insert(id, (fx.plane, task));
    }
    cluster
        .register(member("g1", Role::Gateway, 0))
        .await
        .unwrap();
    let fake = fixture(1, Duration::ZERO, Duration::ZERO);
    let launcher: Arc<dyn control::ReplicaLauncher> = Arc::new(FakeLauncher {
        load: Duration::ZERO,
        work: Duration::ZERO,
        journal: fake.journal,
    });
    let sizer = Arc::new(Sizer::new(launcher.clone()));
    let connector = InProcess(
        planes
            .iter()
            .map(|(id, (p, _))| (id.clone(), p.clone()))
            .collect(),
    );
    let gw = ClusterGateway::new(
        "g1".into(),
        Arc::new(cluster.clone()),
        Arc::new(cluster.clone()),
        specs.clone(),
        sizer.clone(),
        Arc::new(connector),
    );
    gw.start_refresh(Duration::from_millis(200)).await;
    leader::spawn(LeaderParts {
        id: "g1".into(),
        discovery: Arc::new(cluster.clone()),
        placement: Arc::new(cluster.clone()),
        store: specs.clone(),
        sizer,
        tick: Duration::from_millis(200),
    });
    World {
        cluster,
        nodes: planes,
        gateway: ControlPlane::clustered(gw, launcher, specs),
    }
}

/// Node id → ready replicas of `name` there.
async fn ready_on(w: &World, name: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (id, (plane, _)) in &w.nodes {
        if let Ok(view) = plane.describe(name).await {
            out.insert(id.clone(), ready(&view));
        }
    }
    out
}

async fn settle(
    w: &World,
    name: &str,
    want: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    for _ in 0..200 {
        let now = ready_on(w, name).await;
        if want(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not reached: {:?}", ready_on(w, name).await);
}

#[tokio::test(start_paused = true)]
async fn replicas_spread_serve_through_the_gateway_and_move_off_a_lost_node() {
    let w = world(3).await;
    w.gateway.create(spec("smol", 3, 3, 2)).await.unwrap();
    let on = settle(&w, "smol", |m| m.values().filter(|&&n| n == 1).count() == 3).await;
    assert_eq!(on.len(), 3, "one replica on each node: {on:?}");
    // Exactly 3 in the cluster; the gateway routes requests to them.
    let backend = w.gateway.backend("smol").unwrap();
    let outcomes = futures::future::join_all(
        (0..6).map(|i| run(backend.as_ref(), request(&format!("r{i}"), None))),
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Finished { .. })),
        "{outcomes:?}"
    );
    let snapshot = w.gateway.cluster_snapshot().await;
    assert_eq!(snapshot.placement.leader.as_deref(), Some("g1"));

    // n2 dies (its lease expires): its replica goes to a survivor; the others stay.
    let before = w.cluster.view().borrow().assignments["smol"].clone();
    w.nodes["n2"].1.abort();
    w.cluster.expire("n2");
    settle(&w, "smol", |m| {
        m.get("n1").copied().unwrap_or(0) + m.get("n3").copied().unwrap_or(0) == 3
    })
    .await;
    let after = w.cluster.view().borrow().assignments["smol"].clone();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|a| a.node != "n2"));
    for a in before.iter().filter(|a| a.node != "n2") {
        assert!(after.contains(a), "{a:?} moved");
    }
    let events = w.gateway.events("smol").await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason.contains("re-placed from node n2")),
        "{events:?}"
    );
    // Still served, never by n2.
    assert!(matches!(
        run(backend.as_ref(), request("after", None)).await,
        Outcome::Finished { .. }
    ));

    // n2 comes back (a partition healed): it still runs its stale replica until its agent
    // sees it is placed elsewhere, then stops it; nothing moves back to it.
    w.cluster
        .register(member("n2", Role::Node, 4))
        .await
        .unwrap();
    let plane = w.nodes["n2"].0.clone();
    let agent = agent::spawn(agent::AgentParts {
        me: member("n2", Role::Node, 4),
        discovery: Arc::new(w.cluster.clone()),
        placement: Arc::new(w.cluster.clone()),
        store: Arc::new(MemoryStore::default()),
        local: plane.clone(),
        report_every: Duration::from_millis(200),
    });
    for _ in 0..100 {
        if plane.names().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        plane.names().is_empty(),
        "the stale deployment still runs on n2"
    );
    let total: usize = ready_on(&w, "smol").await.values().sum();
    assert_eq!(total, 3);
    agent.abort();
}

#[tokio::test(start_paused = true)]
async fn what_fits_on_no_node_is_refused_with_the_numbers_and_deleting_stops_replicas() {
    let w = world(2).await;
    let err = w
        .gateway
        .create(control::DeploymentSpec {
            threads_per_replica: 8,
            ..spec("big", 1, 1, 1)
        })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, control::Error::NoRoom(_)), "{err:?}");
    assert!(
        message.contains("8 threads") && message.contains("4 threads"),
        "{message}"
    );
    // Two fit only spread over both nodes; a third replica still fits (4 threads each).
    w.gateway.create(spec("two", 2, 2, 1)).await.unwrap();
    let on = settle(&w, "two", |m| m.values().sum::<usize>() == 2).await;
    assert_eq!(
        on.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1])
    );
    w.gateway.delete("two").await.unwrap();
    for _ in 0..100 {
        if w.nodes.values().all(|(p, _)| p.names().is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replicas of a deleted deployment still run");
}

#[tokio::test(start_paused = true)]
async fn a_fenced_leader_cannot_write_and_another_takes_over() {
    let cluster = LocalCluster::new();
    let first = cluster.campaign("a").await.unwrap();
    let waiting = {
        let c = cluster.clone();
        tokio::spawn(async move { c.campaign("b").await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished());
    cluster.publish(&first, &BTreeMap::new()).await.unwrap();
    cluster.expire("a");
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.id, "b");
    assert!(second.fence > first.fence);
    assert_eq!(
        cluster.publish(&first, &BTreeMap::new()).await,
        Err(control::cluster::ClusterError::Fenced)
    );
    cluster.publish(&second, &BTreeMap::new()).await.unwrap();
    assert_eq!(cluster.view().borrow().leader.as_deref(), Some("b"));
}
