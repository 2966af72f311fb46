//! Health, metrics, model listing, unknown routes and wrong methods.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn health_is_open() {
    let reply = get(&app(vec![]).await, "/health", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({ "status": "ok" }));
}

#[tokio::test]
async fn metrics_need_the_admin_key() {
    let app = app(vec![Scripted::hello("m")]).await;
    // Produce some traffic to count.
    post(&app, "/v1/chat/completions", chat_body("m")).await;

    get(&app, "/metrics", None)
        .await
        .assert_error(401, "invalid_api_key", None);
    get(&app, "/metrics", Some("wrong"))
        .await
        .assert_error(401, "invalid_api_key", None);
    let reply = get(&app, "/metrics", Some(ADMIN_KEY)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("flywheel_http_requests_total"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("endpoint=\"/v1/chat/completions\""),
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("flywheel_usage_cached_tokens_total{model=\"m\"}"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("flywheel_http_request_duration_seconds"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn metrics_can_be_open() {
    let app = app_with(Vec::new(), true).await;
    assert_eq!(get(&app, "/metrics", None).await.status, 200);
}

#[tokio::test]
async fn models_are_listed() {
    let app = app(vec![Scripted::hello("alpha"), Scripted::hello("org/beta")]).await;
    let reply = get(&app, "/v1/models", Some(ADMIN_KEY)).await;
    assert_eq!(reply.status, 200);
    insta::assert_json_snapshot!(reply.json());

    let reply = get(&app, "/v1/models/org/beta", Some(ADMIN_KEY)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({ "id": "org/beta", "object": "model", "created": 1_700_000_000, "owned_by": "flywheel" })
    );
    get(&app, "/v1/models/gamma", Some(ADMIN_KEY))
        .await
        .assert_error(404, "model_not_found", Some("model"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_openai_errors() {
    let app = app(vec![]).await;
    let reply = get(&app, "/v1/embeddings", None).await;
    reply.assert_error(404, "not_found", None);
    assert_eq!(
        reply.json()["error"]["message"],
        "Invalid URL (GET /v1/embeddings)"
    );

    let reply = get(&app, "/v1/chat/completions", None).await;
    reply.assert_error(405, "method_not_allowed", None);
    let request = Request::delete("/health")
        .body(Body::empty())
        .expect("request");
    send(&app, request)
        .await
        .assert_error(405, "method_not_allowed", None);
}
