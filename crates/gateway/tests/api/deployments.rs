//! The deployment admin API and serving through deployments, with a control plane whose
//! replicas are scripted backends that load after a delay: error mapping, `/v1/models`, queue
//! headers and SSE comments of a cold start, 503 `queue_timeout` with `Retry-After`, and that a
//! tenant's request that timed out in the queue is never billed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use backend::Backend;
use control::{ControlPlane, Footprint, MemoryStore, NodeBudget, ReplicaLauncher, ReplicaSpec};
use serde_json::{json, Value};

use crate::common::*;

/// Replicas answer "Hello world" once loaded; a model named `slow` takes 10 s to load,
/// the others 200 ms.
struct ScriptedLauncher;

#[async_trait::async_trait]
impl ReplicaLauncher for ScriptedLauncher {
    async fn footprint(&self, spec: &ReplicaSpec) -> control::Result<Footprint> {
        Ok(Footprint {
            weights_key: spec.model.clone(),
            weights_bytes: 100 << 20,
            private_bytes: (spec.slots as u64) << 20,
            threads: spec.threads,
            kind: backend::ModelKind::Generate,
        })
    }

    async fn start(&self, spec: &ReplicaSpec) -> control::Result<Arc<dyn Backend>> {
        let load = if spec.model == "slow" { 10_000 } else { 200 };
        tokio::time::sleep(Duration::from_millis(load)).await;
        Ok(Scripted::hello(&spec.deployment))
    }
}

async fn setup() -> (Router, ControlPlane) {
    let plane = ControlPlane::new(
        NodeBudget {
            memory_bytes: 1 << 30,
            threads: 2,
        },
        Arc::new(ScriptedLauncher),
        Arc::new(MemoryStore::default()),
    );
    let app = app_full(Vec::new(), false, tenancy().await, Some(plane.clone()));
    (app, plane)
}

async fn call(app: &Router, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json");
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    send(app, request.body(body).expect("request")).await
}

async fn admin(app: &Router, method: &str, path: &str, body: Option<Value>) -> Reply {
    call(app, method, &format!("/admin/v1{path}"), ADMIN_KEY, body).await
}

#[tokio::test]
async fn deployments_are_created_listed_patched_and_deleted() {
    let (app, plane) = setup().await;
    let created = admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "org/m", "model": "v1", "max_replicas": 2, "idle_seconds": 60})),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    assert_eq!(created.json()["spec"]["max_replicas"], 2);

    admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "org/m", "model": "v1"})),
    )
    .await
    .assert_error(409, "conflict", None);
    admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "x", "model": "v1", "max_replica": 2})),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("max_replica"));
    admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "x", "model": "v1", "pinned": true})),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("pinned"));
    admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "x", "model": "v1", "min_replicas": 3})),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("min_replicas"));
    let wide = admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "wide", "model": "v1", "threads_per_replica": 3})),
    )
    .await;
    wide.assert_error(409, "insufficient_capacity", None);
    assert!(wide.body.contains("3 threads"), "{}", wide.body);

    let list = admin(&app, "GET", "/deployments", None).await.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let one = admin(&app, "GET", "/deployments/org/m", None).await;
    assert_eq!(one.status.as_u16(), 200, "{}", one.body);
    assert_eq!(one.json()["spec"]["name"], "org/m");
    let events = admin(&app, "GET", "/deployments/org/m/events", None).await;
    assert_eq!(events.status.as_u16(), 200, "{}", events.body);
    assert!(events.json()["data"].is_array());
    let node = admin(&app, "GET", "/node", None).await.json();
    assert_eq!(node["threads"], 2);
    // A single process is a one-node cluster of its own: itself, its own leader, and the
    // replicas it runs.
    let cluster = admin(&app, "GET", "/cluster", None).await;
    assert_eq!(cluster.status.as_u16(), 200, "{}", cluster.body);
    let cluster = cluster.json();
    assert_eq!(cluster["object"], "cluster");
    assert_eq!(cluster["leader"], "local");
    assert_eq!(cluster["nodes"][0]["id"], "local");
    assert_eq!(cluster["nodes"][0]["role"], "both");
    assert_eq!(cluster["nodes"][0]["threads"], 2);
    call(&app, "GET", "/admin/v1/cluster", "not-a-key", None)
        .await
        .assert_error(401, "invalid_api_key", None);

    let patched = admin(
        &app,
        "PATCH",
        "/deployments/org/m",
        Some(json!({"max_replicas": 1, "queue": {"max_length": 5, "max_wait_seconds": 9}})),
    )
    .await;
    assert_eq!(patched.status.as_u16(), 200, "{}", patched.body);
    assert_eq!(patched.json()["spec"]["queue"]["max_length"], 5);
    admin(
        &app,
        "PATCH",
        "/deployments/org/m",
        Some(json!({"name": "renamed"})),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("name"));

    let models = call(&app, "GET", "/v1/models", ADMIN_KEY, None)
        .await
        .json();
    assert_eq!(models["data"][0]["id"], "org/m");

    let deleted = admin(&app, "DELETE", "/deployments/org/m", None).await;
    assert_eq!(deleted.status.as_u16(), 200, "{}", deleted.body);
    admin(&app, "GET", "/deployments/org/m", None)
        .await
        .assert_error(404, "not_found", None);
    assert!(plane.names().is_empty());
    plane.shutdown().await;
}

#[tokio::test]
async fn a_cold_start_streams_queue_headers_and_comments_then_completes() {
    let (app, plane) = setup().await;
    admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "cold", "model": "v1"})),
    )
    .await;
    let mut body = completion_body("cold");
    body["stream"] = json!(true);
    let reply = call(&app, "POST", "/v1/completions", ADMIN_KEY, Some(body)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    assert_eq!(reply.header("x-flywheel-queue-position"), Some("1"));
    assert!(reply.header("x-flywheel-queue-eta-ms").is_some());
    assert!(
        reply.body.starts_with(": queue position=1 eta_ms="),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with("data: [DONE]\n\n"), "{}", reply.body);
    // Once warm, a request is admitted at once: no queue headers.
    let warm = call(
        &app,
        "POST",
        "/v1/completions",
        ADMIN_KEY,
        Some(completion_body("cold")),
    )
    .await;
    assert_eq!(warm.status.as_u16(), 200, "{}", warm.body);
    assert_eq!(warm.header("x-flywheel-queue-position"), None);
    plane.shutdown().await;
}

#[tokio::test]
async fn a_request_past_the_maximum_wait_gets_503_and_is_not_billed() {
    let (app, plane) = setup().await;
    admin(
        &app,
        "POST",
        "/deployments",
        Some(json!({"name": "late", "model": "slow", "queue": {"max_length": 4, "max_wait_seconds": 1}})),
    )
    .await;
    let tenant = admin(&app, "POST", "/tenants", Some(json!({"name": "t"}))).await;
    let id = tenant.json()["id"].as_str().expect("id").to_owned();
    let key = admin(
        &app,
        "POST",
        &format!("/tenants/{id}/keys"),
        Some(json!({"name": "k"})),
    )
    .await;
    let key = key.json()["key"].as_str().expect("key").to_owned();
    let before = call(&app, "GET", "/v1/account", &key, None).await.json();

    let reply = call(
        &app,
        "POST",
        "/v1/completions",
        &key,
        Some(completion_body("late")),
    )
    .await;
    reply.assert_error(503, "queue_timeout", None);
    assert!(reply
        .header("retry-after")
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));

    // The replica is still loading: a stream queues, then ends with an SSE error event.
    let mut body = completion_body("late");
    body["stream"] = json!(true);
    let streamed = call(&app, "POST", "/v1/completions", &key, Some(body)).await;
    assert_eq!(streamed.status.as_u16(), 200, "{}", streamed.body);
    assert!(streamed.header("x-flywheel-queue-position").is_some());
    assert!(
        streamed.body.contains("\"code\":\"queue_timeout\""),
        "{}",
        streamed.body
    );
    assert!(!streamed.body.contains("[DONE]"), "{}", streamed.body);

    // Neither was billed, and nothing is held.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = call(&app, "GET", "/v1/account", &key, None).await.json();
    for field in [
        "grant_tokens_left",
        "grant_tokens_held",
        "balance",
        "amount_held",
    ] {
        assert_eq!(after[field], before[field], "{field}: {after}");
    }
    assert_eq!(after["grant_tokens_held"], 0);
    plane.shutdown().await;
}
