//! The gateway's side of a deployment in a cluster: a [`Backend`] that sends each request to
//! the ready replicas of the least loaded node (its reported queue plus running requests, plus
//! what this gateway sent it since, per slot), over the internal protocol a [`Connector`]
//! speaks. A request with a long prompt prefers one node by **prefix affinity**: the first
//! [`AFFINITY_BYTES`] of its prompt are hashed and the nodes ranked by rendezvous hashing on
//! that hash, so requests sharing a long prefix (a system prompt, a document) go where its KV
//! is likely cached, from every gateway alike; when that node's slots are all busy and another
//! node has a free one, load decides. With no ready replica yet (loading, or being re-placed) it waits up to the
//! deployment's maximum queue wait; a node that cannot be reached before its stream starts is
//! skipped for the next one, and one lost mid-stream hands the stream to another
//! ([`super::migrate`]).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backend::{Backend, BackendError, EventStream, GenerateRequest, ModelInfo, Prompt};
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
#[derive(Clone)]
pub struct ClusterDeployment {
    pub info: ModelInfo,
    pub max_wait: Duration,
    pub members: watch::Receiver<Vec<Member>>,
    pub view: watch::Receiver<PlacementView>,
    pub connector: Arc<dyn Connector>,
    pub in_flight: InFlight,
}

/// How much of a prompt its affinity is keyed on: exactly this many bytes from its start, so
/// requests sharing a longer prefix (a system prompt, a document) and differing after it (the
/// user's question) share the key. Shorter prompts have no affinity (little KV to reuse):
/// load alone decides.
pub const AFFINITY_BYTES: usize = 512;
/// Load is measured per slot ×1000: a node at or above this has every slot busy.
const FULL: usize = 1000;

/// The hash of the first [`AFFINITY_BYTES`] of a prompt as a model reads it (each chat
/// message's role and content in order), or `None` for a prompt shorter than
/// that. Stable across processes of one build, so every gateway agrees.
pub fn affinity_key(prompt: &Prompt) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut taken = 0usize;
    let mut feed = |bytes: &[u8]| {
        let n = bytes.len().min(AFFINITY_BYTES - taken);
        bytes[..n].hash(&mut hasher);
        taken += n;
        taken < AFFINITY_BYTES
    };
    match prompt {
        Prompt::Text(text) => {
            feed(text.as_bytes());
        }
        Prompt::Chat(messages) => {
            for m in messages {
                if !(feed(m.role.as_bytes()) && feed(m.content.as_bytes())) {
                    break;
                }
            }
        }
    }
    (taken >= AFFINITY_BYTES).then(|| hasher.finish())
}

/// The rendezvous weight of `node` for `key`: the node with the highest weight is preferred.
fn rendezvous(key: u64, node: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    node.hash(&mut hasher);
    hasher.finish()
}

/// Ready nodes for `deployment`, least loaded first: (load per slot ×1000, node). With an
/// affinity `key`, the node it prefers comes first unless all its slots are busy while
/// another node has a free one.
pub fn ranked(
    deployment: &str,
    (members, view): (&[Member], &PlacementView),
    in_flight: &HashMap<String, usize>,
    skip: &BTreeSet<String>,
    key: Option<u64>,
) -> Vec<Member> {
    let mut ready: Vec<(usize, &Member)> = members
        .iter()
        .filter(|m| m.role.runs_replicas() && !skip.contains(&m.id))
        .filter(|m| view.count_on(deployment, &m.id) > 0)
        .filter_map(|m| {
            let load = m.load_of(deployment)?;
            (load.ready > 0).then(|| {
                let busy = load.queued + load.running + in_flight.get(&m.id).copied().unwrap_or(0);
                (busy * FULL / load.slots.max(1), m)
            })
        })
        .collect();
    ready.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    if let (Some(key), Some(&(least, _))) = (key, ready.first()) {
        let preferred = ready
            .iter()
            .enumerate()
            .max_by_key(|(_, (_, m))| rendezvous(key, &m.id))
            .map(|(i, &(load, _))| (i, load));
        if let Some((i, load)) = preferred {
            if load < FULL || least >= FULL {
                let chosen = ready.remove(i);
                ready.insert(0, chosen);
            }
        }
    }
    ready.into_iter().map(|(_, m)| m.clone()).collect()
}

/// Counts a request against its node until its stream is dropped.
pub(super) struct Counted {
    in_flight: InFlight,
    node: String,
}

impl Counted {
    pub(super) fn new(in_flight: &InFlight, node: &str) -> Self {
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
    fn pick(&self, skip: &BTreeSet<String>, key: Option<u64>) -> Option<Member> {
        let members = self.members.borrow().clone();
        let view = self.view.borrow().clone();
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ranked(&self.info.id, (&members, &view), &in_flight, skip, key)
            .into_iter()
            .next()
    }

    /// The node to send a request to (see [`ranked`]), waiting for a ready one up to the
    /// maximum wait.
    pub(super) async fn wait_for_node(
        &self,
        skip: &BTreeSet<String>,
        (since, key): (Instant, Option<u64>),
    ) -> backend::Result<Member> {
        let mut members = self.members.clone();
        loop {
            if let Some(m) = self.pick(skip, key) {
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
pub(super) fn try_another(e: &BackendError) -> bool {
    matches!(e, BackendError::Unreachable(_) | BackendError::ShuttingDown)
}

#[async_trait::async_trait]
impl Backend for ClusterDeployment {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        let since = Instant::now();
        let key = affinity_key(&request.prompt);
        let mut skip = BTreeSet::new();
        loop {
            let node = self.wait_for_node(&skip, (since, key)).await?;
            let counted = Counted::new(&self.in_flight, &node.id);
            let backend = self.connector.connect(&node, &self.info.id);
            match backend.generate(request.clone()).await {
                Ok(stream) => {
                    // The count goes with the stream: dropped when the client's stream is.
                    return Ok(super::migrate::follow(
                        self.clone(),
                        request,
                        (node, counted),
                        stream,
                    ));
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
        let node = self.pick(&BTreeSet::new(), None).ok_or_else(|| {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cluster::{Assignment, ReplicaLoad, Role};
    use backend::ChatMessage;

    /// A node running deployment `d` with one ready replica of 2 slots, `running` busy.
    pub(in crate::cluster) fn node(id: &str, running: usize) -> Member {
        Member {
            id: id.into(),
            role: Role::Node,
            address: format!("http://{id}"),
            memory_bytes: 1 << 30,
            threads: 2,
            replicas: vec![ReplicaLoad {
                deployment: "d".into(),
                ready: 1,
                loading: 0,
                slots: 2,
                queued: 0,
                running,
            }],
            lease: 0,
            ttl_secs: 5,
        }
    }

    /// Deployment `d` with one replica on each of `nodes`.
    pub(in crate::cluster) fn view(nodes: &[&str]) -> PlacementView {
        let assignments = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Assignment {
                deployment: "d".into(),
                index: i as u32,
                node: (*n).into(),
            })
            .collect();
        PlacementView {
            assignments: [("d".to_owned(), assignments)].into(),
            leader: None,
            revision: 1,
        }
    }

    fn chat(system: &str, user: &str) -> Prompt {
        Prompt::Chat(vec![
            ChatMessage::text("system", system),
            ChatMessage::text("user", user),
        ])
    }

    fn first(members: &[Member], key: Option<u64>) -> String {
        let view = view(&["a", "b", "c"]);
        ranked(
            "d",
            (members, &view),
            &HashMap::new(),
            &BTreeSet::new(),
            key,
        )[0]
        .id
        .clone()
    }

    #[test]
    fn a_short_prompt_has_no_affinity() {
        assert_eq!(affinity_key(&chat("be brief", "hi")), None);
    }

    #[test]
    fn prompts_sharing_a_long_prefix_share_a_key_and_others_differ() {
        let manual = "You answer questions about the manual below.\n".repeat(60);
        let a = affinity_key(&chat(&manual, "How do I reset it?")).expect("long prompt");
        let b = affinity_key(&chat(&manual, "Where is the fuse?")).expect("long prompt");
        assert_eq!(a, b, "only the first AFFINITY_BYTES count");
        let other = "You answer questions about another manual.\n".repeat(60);
        assert_ne!(
            a,
            affinity_key(&chat(&other, "How do I reset it?")).expect("long")
        );
        assert!(affinity_key(&Prompt::Text(manual.clone())).is_some());
        // A system prompt a little over the key's bytes: the questions after it differ, the
        // key does not (a key over the whole prompt would split them over the nodes).
        let desk = "You are the help desk of a museum. Answer in one short sentence. ".repeat(9);
        assert!(desk.len() > AFFINITY_BYTES && desk.len() < 2 * AFFINITY_BYTES);
        assert_eq!(
            affinity_key(&chat(&desk, "Question 0: when do you open?")),
            affinity_key(&chat(&desk, "Question 1: where is the cafe?")),
        );
        assert!(affinity_key(&chat(&desk, "q")).is_some());
    }

    #[test]
    fn one_prefix_goes_to_one_node_while_it_has_a_free_slot() {
        let idle = [node("a", 0), node("b", 0), node("c", 0)];
        let manual = "Shared system prompt of a support bot. ".repeat(40);
        let key = affinity_key(&chat(&manual, "q")).expect("long");
        let preferred = first(&idle, Some(key));
        // The preferred node stays first while it is less loaded than the others, and while
        // it has a free slot even if more loaded.
        let loaded: Vec<Member> = ["a", "b", "c"]
            .iter()
            .map(|id| node(id, usize::from(*id == preferred)))
            .collect();
        assert_eq!(first(&loaded, Some(key)), preferred);
        // Different prefixes spread over the nodes.
        let spread: BTreeSet<String> = (0..40)
            .map(|i| {
                let prompt = format!("Tenant {i}'s own long system prompt. ").repeat(30);
                first(&idle, affinity_key(&chat(&prompt, "q")))
            })
            .collect();
        assert_eq!(
            spread.len(),
            3,
            "rendezvous hashing uses every node: {spread:?}"
        );
    }

    #[test]
    fn load_decides_when_the_preferred_node_is_full_and_another_is_not() {
        let manual = "Shared system prompt of a support bot. ".repeat(40);
        let key = affinity_key(&chat(&manual, "q")).expect("long");
        let idle = [node("a", 0), node("b", 0), node("c", 0)];
        let preferred = first(&idle, Some(key));
        let busy: Vec<Member> = ["a", "b", "c"]
            .iter()
            .map(|id| node(id, if *id == preferred { 2 } else { 1 }))
            .collect();
        assert_ne!(
            first(&busy, Some(key)),
            preferred,
            "full: the least loaded wins"
        );
        // Everyone full: affinity again (the KV may still help once a slot frees).
        let full: Vec<Member> = ["a", "b", "c"]
            .iter()
            .map(|id| node(id, if *id == preferred { 3 } else { 2 }))
            .collect();
        assert_eq!(first(&full, Some(key)), preferred);
        // No key: the least loaded, ties by id.
        assert_eq!(first(&idle, None), "a");
    }
}
