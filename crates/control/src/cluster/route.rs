//! The gateway's side of a deployment in a cluster: a [`Backend`] that sends each request to
//! the ready replicas of the least loaded node (its reported queue plus running requests, plus
//! what this gateway sent it since, per slot), over the internal protocol a [`Connector`]
//! speaks. With no ready replica yet (loading, or being re-placed) it waits up to the
//! deployment's maximum queue wait; a node that cannot be reached before its stream starts is
//! skipped for the next one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backend::{Backend, BackendError, EventStream, GenerateRequest, ModelInfo};
use tokio::sync::watch;

use super::{Member, PlacementView};

/// Reaches a node's replicas of a deployment (the `cluster` crate: HTTP with the cluster
/// secret).
pub trait Connector: Send + Sync {
    fn connect(&self, node: &Member, deployment: &str) -> Arc<dyn Backend>;
}

/// Requests this gateway has running per node id.
pub type InFlight = Arc<Mutex<HashMap<String, usize>>>;

/// One deployment as a gateway serves it.
pub struct ClusterDeployment {
    pub info: ModelInfo,
    pub max_wait: Duration,
    pub members: watch::Receiver<Vec<Member>>,
    pub view: watch::Receiver<PlacementView>,
    pub connector: Arc<dyn Connector>,
    pub in_flight: InFlight,
}

/// Ready nodes for `deployment`, least loaded first: (load per slot ×1000, node).
pub fn ranked(
    deployment: &str,
    members: &[Member],
    view: &PlacementView,
    in_flight: &HashMap<String, usize>,
    skip: &BTreeSet<String>,
) -> Vec<Member> {
    let mut ready: Vec<(usize, &Member)> = members
        .iter()
        .filter(|m| m.role.runs_replicas() && !skip.contains(&m.id))
        .filter(|m| view.count_on(deployment, &m.id) > 0)
        .filter_map(|m| {
            let load = m.load_of(deployment)?;
            (load.ready > 0).then(|| {
                let busy = load.queued + load.running + in_flight.get(&m.id).copied().unwrap_or(0);
                (busy * 1000 / load.slots.max(1), m)
            })
        })
        .collect();
    ready.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    ready.into_iter().map(|(_, m)| m.clone()).collect()
}

/// Counts a request against its node until its stream is dropped.
struct Counted {
    in_flight: InFlight,
    node: String,
}

impl Counted {
    fn new(in_flight: &InFlight, node: &str) -> Self {
        *in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(node.to_owned())
            .or_insert(0) += 1;
        Self {
            in_flight: in_flight.clone(),
            node: node.to_owned(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.node);
            }
        }
    }
}

impl ClusterDeployment {
    fn pick(&self, skip: &BTreeSet<String>) -> Option<Member> {
        let members = self.members.borrow().clone();
        let view = self.view.borrow().clone();
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ranked(&self.info.id, &members, &view, &in_flight, skip)
            .into_iter()
            .next()
    }

    /// The least loaded ready node, waiting for one up to the maximum wait.
    async fn wait_for_node(
        &self,
        skip: &BTreeSet<String>,
        since: Instant,
    ) -> backend::Result<Member> {
        let mut members = self.members.clone();
        loop {
            if let Some(m) = self.pick(skip) {
                return Ok(m);
            }
            let waited = since.elapsed();
            if waited >= self.max_wait {
                return Err(BackendError::QueueTimeout {
                    waited_secs: waited.as_secs(),
                    retry_after: 1,
                });
            }
            let left = self.max_wait - waited;
            tokio::select! {
                _ = members.changed() => {}
                () = tokio::time::sleep(left.min(Duration::from_millis(200))) => {}
            }
        }
    }
}

/// Errors after which another node may still serve the request (nothing was generated).
fn try_another(e: &BackendError) -> bool {
    matches!(e, BackendError::Unreachable(_) | BackendError::ShuttingDown)
}

#[async_trait::async_trait]
impl Backend for ClusterDeployment {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        let since = Instant::now();
        let mut skip = BTreeSet::new();
        loop {
            let node = self.wait_for_node(&skip, since).await?;
            let counted = Counted::new(&self.in_flight, &node.id);
            let backend = self.connector.connect(&node, &self.info.id);
            match backend.generate(request.clone()).await {
                Ok(stream) => {
                    use tokio_stream::StreamExt;
                    // The count goes with the stream: dropped when the client's stream is.
                    let mut counted = Some(counted);
                    return Ok(Box::pin(stream.map(move |item| {
                        let _keep = &counted;
                        if matches!(item, Ok(backend::Event::Finished { .. }) | Err(_)) {
                            counted = None;
                        }
                        item
                    })));
                }
                Err(e) if try_another(&e) => {
                    tracing::warn!(node = %node.id, deployment = %self.info.id, error = %e, "node unreachable; trying another");
                    skip.insert(node.id);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> backend::Result<u32> {
        let node = self.pick(&BTreeSet::new()).ok_or_else(|| {
            BackendError::Unavailable(format!(
                "'{}' has no ready replica on any node to count tokens with. Send it a \
                 request, then retry.",
                self.info.id
            ))
        })?;
        self.connector
            .connect(&node, &self.info.id)
            .count_prompt_tokens(request)
            .await
    }
}
