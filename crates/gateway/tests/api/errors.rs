//! Backend refusals before streaming become HTTP errors with the right status, code and
//! `Retry-After`.

use backend::{BackendError, UpstreamError};
use serde_json::json;

use crate::common::*;

async fn refuse(err: BackendError, path: &str) -> Reply {
    let app = app(vec![Scripted::new("m", Script::Refuse(err))]).await;
    let body = if path.ends_with("chat/completions") {
        json!({ "model": "m", "messages": [{ "role": "user", "content": "Hi" }], "stream": true })
    } else {
        completion_body("m")
    };
    post(&app, path, body).await
}

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";

#[tokio::test]
async fn context_length_names_the_prompt_field() {
    let err = BackendError::ContextLengthExceeded {
        prompt_tokens: 5000,
        context_length: 4096,
    };
    let reply = refuse(err.clone(), CHAT).await;
    reply.assert_error(400, "context_length_exceeded", Some("messages"));
    assert!(reply.body.contains("4096"));
    refuse(err, COMPLETIONS)
        .await
        .assert_error(400, "context_length_exceeded", Some("prompt"));
}

#[tokio::test]
async fn invalid_request_names_its_field_as_the_api_does() {
    let err = BackendError::InvalidRequest {
        message: "two answers are not served here".into(),
        field: Some(backend::Field::Choices),
    };
    refuse(err, CHAT)
        .await
        .assert_error(400, "invalid_request_error", Some("n"));
}

#[tokio::test]
async fn overloaded_is_429_with_retry_after() {
    let reply = refuse(
        BackendError::Overloaded {
            queued: 64,
            retry_after: 9,
        },
        CHAT,
    )
    .await;
    reply.assert_error(429, "server_overloaded", None);
    assert_eq!(reply.json()["error"]["type"], "server_error");
    assert_eq!(reply.header("retry-after"), Some("9"));
}

#[tokio::test]
async fn over_the_tenant_share_of_a_queue_is_429_rate_limit_with_its_retry_after() {
    let reply = refuse(
        BackendError::QueueShareExceeded {
            waiting: 32,
            limit: 32,
            retry_after: 4,
        },
        CHAT,
    )
    .await;
    reply.assert_error(429, "rate_limit_exceeded", None);
    assert_eq!(reply.json()["error"]["type"], "requests");
    assert_eq!(reply.header("retry-after"), Some("4"));
    assert!(
        reply.body.contains("your share of its queue (32)"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn shutting_down_is_503_with_retry_after() {
    let reply = refuse(BackendError::ShuttingDown, COMPLETIONS).await;
    reply.assert_error(503, "shutting_down", None);
    assert!(reply
        .header("retry-after")
        .is_some_and(|s| s.parse::<u64>().is_ok()));
}

#[tokio::test]
async fn unreachable_is_502_and_internal_is_500() {
    refuse(BackendError::Unreachable("refused".into()), CHAT)
        .await
        .assert_error(502, "upstream_unreachable", None);
    let reply = refuse(BackendError::Internal("oops".into()), CHAT).await;
    reply.assert_error(500, "internal_error", None);
    assert!(reply.header("retry-after").is_none());
}

#[tokio::test]
async fn upstream_errors_pass_through() {
    let err = BackendError::Upstream(UpstreamError {
        status: 429,
        message: "Rate limit reached for requests".into(),
        r#type: Some("requests".into()),
        code: Some("rate_limit_exceeded".into()),
        param: None,
        retry_after: Some(20),
    });
    let reply = refuse(err, CHAT).await;
    reply.assert_error(429, "rate_limit_exceeded", None);
    assert_eq!(
        reply.json()["error"]["message"],
        "Rate limit reached for requests"
    );
    assert_eq!(reply.json()["error"]["type"], "requests");
    assert_eq!(reply.header("retry-after"), Some("20"));

    // A 503 without Retry-After from upstream still gets one.
    let err = BackendError::Upstream(UpstreamError {
        status: 503,
        message: "down".into(),
        r#type: None,
        code: None,
        param: None,
        retry_after: None,
    });
    let reply = refuse(err, COMPLETIONS).await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["error"]["code"].is_null());
    assert_eq!(reply.json()["error"]["type"], "server_error");
    assert!(reply.header("retry-after").is_some());
}
