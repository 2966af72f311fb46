//! A stream moved off a lost node, against scripted nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::{
    Backend, BackendError, Event, EventStream, FinishReason, GenerateRequest, ModelInfo, Prompt,
    Usage,
};
use futures::StreamExt;
use tokio::sync::watch;

use crate::cluster::route::tests::{node, view};
use crate::cluster::route::{ClusterDeployment, Connector, InFlight};
use crate::cluster::Member;

/// What one node streams, then whether it stays silent (a hung connection) or ends.
#[derive(Clone)]
struct Script {
    events: Vec<Result<Event, BackendError>>,
    hang: bool,
}

#[derive(Default)]
struct Nodes {
    scripts: HashMap<String, Script>,
    /// Each request a node got: (node, the ids it resumes from).
    got: Mutex<Vec<(String, Vec<u32>)>>,
}

struct Node {
    id: String,
    nodes: Arc<Nodes>,
}

#[async_trait::async_trait]
impl Backend for Node {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: "d".into(),
            owned_by: "test".into(),
            context_length: None,
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        self.nodes
            .got
            .lock()
            .expect("lock")
            .push((self.id.clone(), request.resume.clone()));
        let script = self.nodes.scripts[&self.id].clone();
        let events = futures::stream::iter(script.events);
        Ok(if script.hang {
            Box::pin(events.chain(futures::stream::pending()))
        } else {
            Box::pin(events)
        })
    }
}

impl Connector for Arc<Nodes> {
    fn connect(&self, node: &Member, _deployment: &str) -> Arc<dyn Backend> {
        Arc::new(Node {
            id: node.id.clone(),
            nodes: self.clone(),
        })
    }
}

/// Nodes `a` and `b` running `d` (`a` is picked first: equal load, ties by id).
fn route(nodes: &Arc<Nodes>) -> (ClusterDeployment, watch::Sender<Vec<Member>>, InFlight) {
    let (members_tx, members) = watch::channel(vec![node("a", 0), node("b", 0)]);
    let (_, view) = watch::channel(view(&["a", "b"]));
    let in_flight = InFlight::default();
    let route = ClusterDeployment {
        info: ModelInfo {
            id: "d".into(),
            owned_by: "flywheel".into(),
            context_length: None,
            created: 0,
            kind: backend::ModelKind::Generate,
        },
        max_wait: Duration::from_secs(2),
        members,
        view,
        connector: Arc::new(nodes.clone()),
        in_flight: in_flight.clone(),
    };
    (route, members_tx, in_flight)
}

fn request(max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        request_id: "r".into(),
        model: "d".into(),
        prompt: Prompt::Text("hello".into()),
        sampling: Default::default(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        tenant: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: Default::default(),
        priority: Default::default(),
        resume: Vec::new(),
    }
}

fn admitted(prompt_tokens: u32, max_tokens: u32) -> Result<Event, BackendError> {
    Ok(Event::Admitted {
        prompt_tokens,
        max_tokens,
        exact: true,
    })
}

fn lost() -> Result<Event, BackendError> {
    Err(BackendError::Unreachable("node a lost mid-stream".into()))
}

fn finished(reason: FinishReason, prompt: u32, completion: u32) -> Result<Event, BackendError> {
    Ok(Event::Finished {
        reason,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: 0,
        },
    })
}

fn nodes(a: Script, b: Script) -> Arc<Nodes> {
    Arc::new(Nodes {
        scripts: [("a".to_owned(), a), ("b".to_owned(), b)].into(),
        got: Mutex::default(),
    })
}

async fn collect(stream: EventStream) -> Vec<Result<Event, BackendError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.collect())
        .await
        .expect("the stream ends")
}

/// Node `b` goes on from three delivered tokens.
fn b_resumes() -> Script {
    Script {
        events: vec![
            Ok(Event::Queued {
                position: 1,
                eta_ms: 10,
            }),
            admitted(13, 5),
            Ok(Event::text_of(" world", vec![4, 5])),
            finished(FinishReason::Stop, 13, 2),
        ],
        hang: false,
    }
}

#[tokio::test]
async fn a_lost_nodes_stream_goes_on_from_another_with_no_token_repeated_or_missing() {
    let a = Script {
        events: vec![
            admitted(10, 8),
            Ok(Event::text_of("Hel", vec![1, 2])),
            Ok(Event::text_of("lo", vec![3])),
            lost(),
        ],
        hang: false,
    };
    let nodes = nodes(a, b_resumes());
    let (route, _members, in_flight) = route(&nodes);
    let stream = route.generate(request(8)).await.expect("stream");
    let events = collect(stream).await;
    assert_eq!(
        events,
        vec![
            admitted(10, 8),
            Ok(Event::text_of("Hel", vec![1, 2])),
            Ok(Event::text_of("lo", vec![3])),
            Ok(Event::text_of(" world", vec![4, 5])),
            // The original prompt, every delivered token once.
            finished(FinishReason::Stop, 10, 5),
        ],
        "one Admitted, no Queued mid-stream, one Finished"
    );
    assert_eq!(
        *nodes.got.lock().expect("lock"),
        vec![("a".to_owned(), vec![]), ("b".to_owned(), vec![1, 2, 3])],
        "b resumes from the delivered ids"
    );
    assert!(
        in_flight.lock().expect("lock").is_empty(),
        "no node counts the ended stream"
    );
}

#[tokio::test]
async fn a_node_whose_lease_expires_mid_stream_hands_its_stream_over() {
    let a = Script {
        events: vec![
            admitted(10, 8),
            Ok(Event::text_of("Hel", vec![1, 2])),
            Ok(Event::text_of("lo", vec![3])),
        ],
        hang: true,
    };
    let nodes = nodes(a, b_resumes());
    let (route, members, _) = route(&nodes);
    let mut stream = route.generate(request(8)).await.expect("stream");
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(stream.next().await.expect("event"));
    }
    // Its connection hangs; its lease expires: it leaves the membership.
    members.send_replace(vec![node("b", 0)]);
    events.extend(collect(stream).await);
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[3], Ok(Event::text_of(" world", vec![4, 5])));
    assert_eq!(events[4], finished(FinishReason::Stop, 10, 5));
}

#[tokio::test]
async fn a_stream_that_delivered_what_has_no_ids_ends_with_the_nodes_error() {
    for delivered in [
        Event::text("Hel", 2),
        Event::Reasoning {
            text: "hm".into(),
            tokens: 1,
        },
    ] {
        let a = Script {
            events: vec![admitted(10, 8), Ok(delivered.clone()), lost()],
            hang: false,
        };
        let nodes = nodes(a, b_resumes());
        let (route, _members, _) = route(&nodes);
        let events = collect(route.generate(request(8)).await.expect("stream")).await;
        assert_eq!(events, vec![admitted(10, 8), Ok(delivered), lost()]);
        assert_eq!(nodes.got.lock().expect("lock").len(), 1, "b never asked");
    }
}

#[tokio::test]
async fn delivered_tokens_that_reach_max_tokens_finish_the_stream_where_it_is() {
    let a = Script {
        events: vec![
            admitted(10, 2),
            Ok(Event::text_of("Hi", vec![1, 2])),
            lost(),
        ],
        hang: false,
    };
    let nodes = nodes(a, b_resumes());
    let (route, _members, _) = route(&nodes);
    let events = collect(route.generate(request(2)).await.expect("stream")).await;
    assert_eq!(
        events,
        vec![
            admitted(10, 2),
            Ok(Event::text_of("Hi", vec![1, 2])),
            finished(FinishReason::Length, 10, 2),
        ]
    );
    assert_eq!(nodes.got.lock().expect("lock").len(), 1, "b never asked");
}
