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
async fn ready_says_whether_the_database_answers() {
    let store = store::open("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    let tenancy = tenancy::Tenancy::new(
        store.clone(),
        std::sync::Arc::new(tenancy::SystemClock),
        &tenancy::TenancyConfig::default(),
    )
    .expect("tenancy");
    let app = app_on(vec![], false, tenancy);
    let reply = get(&app, "/ready", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["checks"]["database"], "ok");
    store.close().await;
    let reply = get(&app, "/ready", None).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["status"], "not_ready");
    assert!(reply.json()["checks"]["database"]
        .as_str()
        .is_some_and(|s| s.starts_with("failing")));
    assert_eq!(reply.header("retry-after"), Some("1"));
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
        json!({ "id": "org/beta", "object": "model", "created": 1_700_000_000, "owned_by": "flywheel",
                "capabilities": ["chat", "completions"] })
    );
    get(&app, "/v1/models/gamma", Some(ADMIN_KEY))
        .await
        .assert_error(404, "model_not_found", Some("model"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_openai_errors() {
    let app = app(vec![]).await;
    let reply = get(&app, "/v1/images/generations", None).await;
    reply.assert_error(404, "not_found", None);
    assert_eq!(
        reply.json()["error"]["message"],
        "Invalid URL (GET /v1/images/generations)"
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

#[tokio::test]
async fn unserved_model_names_never_become_metric_labels() {
    let app = app(vec![Scripted::hello("served-model")]).await;
    let size = |body: &str| body.len();
    post(&app, "/v1/chat/completions", chat_body("served-model")).await;
    let before = get(&app, "/metrics", Some(ADMIN_KEY)).await.body;
    // The attack, scaled to the test's body limit: many unique long model names.
    let names: Vec<String> = (0..40)
        .map(|i| format!("{i:04}{}", "n".repeat(60 * 1024)))
        .collect();
    for name in &names {
        post(&app, "/v1/chat/completions", chat_body(name))
            .await
            .assert_error(404, "model_not_found", Some("model"));
        let reply = post(&app, "/v1/completions", completion_body(name)).await;
        reply.assert_error(404, "model_not_found", Some("model"));
    }
    let after = get(&app, "/metrics", Some(ADMIN_KEY)).await.body;
    let prefix = &names[0][..64];
    assert!(!after.contains(prefix), "a model name became a label");
    // Other tests share the recorder, so allow some growth, but far less than one name.
    assert!(
        size(&after) < size(&before) + 60 * 1024,
        "/metrics grew from {} to {} bytes",
        size(&before),
        size(&after)
    );
    assert!(
        after.contains("model=\"unknown\""),
        "refusals for unserved names are not labelled unknown"
    );
    assert!(after.contains("model=\"served-model\""), "{after}");
}
