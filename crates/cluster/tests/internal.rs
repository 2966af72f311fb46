//! The internal protocol end to end over real HTTP: a node's `/internal/v1/*` (axum on a free
//! loopback port) serving a local plane of scripted replicas, and the gateway's client of it.

use std::sync::Arc;
use std::time::Duration;

use backend::{
    Backend, BackendError, Event, EventStream, FinishReason, GenerateRequest, ModelInfo, Prompt,
    SamplingParams, Usage,
};
use cluster::{ClusterSecret, HttpConnector};
use control::cluster::route::Connector;
use control::cluster::{Member, Role};
use control::{
    ControlPlane, DeploymentSpec, Footprint, MemoryStore, NodeBudget, ReplicaLauncher, ReplicaSpec,
};
use futures::StreamExt;

/// Answers every prompt with its own text back, in two chunks, or refuses `too long`.
struct Echo;

#[async_trait::async_trait]
impl Backend for Echo {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: "echo".into(),
            owned_by: "test".into(),
            context_length: Some(64),
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        let Prompt::Text(text) = request.prompt else {
            return Err(BackendError::InvalidPrompt("text prompts only".into()));
        };
        if text == "too long" {
            return Err(BackendError::ContextLengthExceeded {
                prompt_tokens: 100,
                context_length: 64,
            });
        }
        let (a, b) = text.split_at(text.len() / 2);
        let events = vec![
            Ok(Event::Admitted {
                prompt_tokens: 3,
                max_tokens: 2,
                exact: true,
            }),
            Ok(Event::text(a, 1)),
            Ok(Event::text(b, 1)),
            Ok(Event::Finished {
                reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    cached_tokens: 1,
                },
            }),
        ];
        Ok(Box::pin(futures::stream::iter(events)))
    }

    async fn count_prompt_tokens(&self, _: &GenerateRequest) -> backend::Result<u32> {
        Ok(3)
    }
}

struct EchoLauncher;

#[async_trait::async_trait]
impl ReplicaLauncher for EchoLauncher {
    async fn footprint(&self, spec: &ReplicaSpec) -> control::Result<Footprint> {
        Ok(Footprint {
            weights_key: spec.model.clone(),
            weights_bytes: 1 << 20,
            private_bytes: 1 << 20,
            threads: spec.threads,
            kind: backend::ModelKind::Generate,
        })
    }

    async fn start(&self, _: &ReplicaSpec) -> control::Result<Arc<dyn Backend>> {
        Ok(Arc::new(Echo))
    }
}

fn request(text: &str) -> GenerateRequest {
    GenerateRequest {
        request_id: "r1".into(),
        model: "echo".into(),
        prompt: Prompt::Text(text.into()),
        sampling: SamplingParams {
            temperature: 0.0,
            seed: Some(7),
            ..SamplingParams::default()
        },
        max_tokens: Some(2),
        stop: vec!["\n\n".into()],
        tenant: Some("t1".into()),
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: backend::OutputFormat::JsonSchema(serde_json::json!({"type": "object"})),
        priority: backend::Priority::Batch,
        resume: Vec::new(),
    }
}

#[tokio::test]
async fn a_gateway_streams_from_a_node_with_the_secret_and_nothing_without_it() {
    let secret = ClusterSecret::new("s".repeat(32)).unwrap();
    let plane = ControlPlane::new(
        NodeBudget {
            memory_bytes: 1 << 30,
            threads: 2,
        },
        Arc::new(EchoLauncher),
        Arc::new(MemoryStore::default()),
    );
    plane
        .create(DeploymentSpec {
            min_replicas: 1,
            ..DeploymentSpec::new("echo", "echo.gguf")
        })
        .await
        .unwrap();
    for _ in 0..100 {
        if plane
            .describe("echo")
            .await
            .unwrap()
            .replicas
            .iter()
            .any(|r| r.state == control::ReplicaState::Ready)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = cluster::internal::router(secret.clone(), plane.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let node = Member {
        id: "n1".into(),
        role: Role::Node,
        address: format!("http://{addr}"),
        memory_bytes: 1 << 30,
        threads: 2,
        replicas: Vec::new(),
        lease: 0,
        ttl_secs: 0,
    };
    let connector = HttpConnector::new(secret).unwrap();
    let remote = connector.connect(&node, "echo");
    let stream = remote.generate(request("hello world")).await.unwrap();
    let events: Vec<_> = stream.collect().await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            Ok(Event::Text { text, .. }) => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "hello world");
    assert_eq!(
        events.last().unwrap().as_ref().unwrap(),
        &Event::Finished {
            reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                cached_tokens: 1
            },
        }
    );
    assert_eq!(remote.count_prompt_tokens(&request("x")).await.unwrap(), 3);

    // A refusal before the stream comes back as the same error.
    let err = remote.generate(request("too long")).await.err().unwrap();
    assert_eq!(
        err,
        BackendError::ContextLengthExceeded {
            prompt_tokens: 100,
            context_length: 64
        }
    );

    // A model this node does not run: another node may (the route tries one).
    let err = connector
        .connect(&node, "other")
        .generate(GenerateRequest {
            model: "other".into(),
            ..request("x")
        })
        .await
        .err()
        .unwrap();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");

    // Without the secret, or with another: 401, and nothing runs.
    let http = reqwest::Client::new();
    let body = serde_json::to_value(cluster::proto::Request::from(&request("x"))).unwrap();
    for auth in [None, Some("Bearer ".to_owned() + &"x".repeat(32))] {
        let mut call = http
            .post(format!("http://{addr}/internal/v1/generate"))
            .json(&body);
        if let Some(a) = auth {
            call = call.header("authorization", a);
        }
        let r = call.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let json: serde_json::Value = r.json().await.unwrap();
        assert_eq!(json["error"]["code"], "invalid_cluster_secret");
    }

    // A node that cannot be reached is `Unreachable` (the route skips it).
    let gone = Member {
        address: "http://127.0.0.1:9".into(),
        ..node
    };
    let err = connector
        .connect(&gone, "echo")
        .generate(request("x"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");
}

#[test]
fn requests_survive_the_wire() {
    let r = request("hi");
    let json = serde_json::to_string(&cluster::proto::Request::from(&r)).unwrap();
    let back: cluster::proto::Request = serde_json::from_str(&json).unwrap();
    assert_eq!(GenerateRequest::try_from(back).unwrap(), r);
}
