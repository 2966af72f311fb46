//! Streamed responses: the SSE frame sequence, usage chunks, errors after the start, and
//! cancellation by disconnect.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use backend::{BackendError, Event};
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::*;

fn parse(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect()
}

#[tokio::test]
async fn chat_stream_frames() {
    let app = app(vec![Scripted::hello("m")]).await;
    let body =
        json!({ "model": "m", "messages": [{ "role": "user", "content": "Hi" }], "stream": true });
    let reply = post(&app, "/v1/chat/completions", body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    assert_eq!(reply.header("x-accel-buffering"), Some("no"));
    let events = reply.sse();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = parse(&events);
    assert_eq!(chunks.len(), 4, "role, two texts, finish: {chunks:?}");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage key without include_usage"
    );
    let ids: Vec<&Value> = chunks.iter().map(|c| &c["id"]).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one id per stream");
    insta::assert_json_snapshot!(chunks, { "[].id" => "[id]", "[].created" => "[created]" });
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let app = app(vec![Scripted::hello("m")]).await;
    let body = json!({
        "model": "m", "messages": [{ "role": "user", "content": "Hi" }],
        "stream": true, "stream_options": { "include_usage": true }
    });
    let reply = post(&app, "/v1/chat/completions", body).await;
    let events = reply.sse();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = parse(&events);
    assert_eq!(chunks.len(), 5);
    let (last, rest) = chunks.split_last().expect("chunks");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({ "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": { "cached_tokens": 3 } })
    );
    assert!(rest
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    assert_eq!(rest[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(rest[3]["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn completion_stream_frames() {
    let app = app(vec![Scripted::hello("m")]).await;
    let body = json!({ "model": "m", "prompt": "Hi", "stream": true, "stream_options": { "include_usage": true } });
    let reply = post(&app, "/v1/completions", body).await;
    let events = reply.sse();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = parse(&events);
    insta::assert_json_snapshot!(chunks, { "[].id" => "[id]", "[].created" => "[created]" });
}

#[tokio::test]
async fn error_after_start_is_one_error_event_without_done() {
    let scripted = Scripted::new(
        "m",
        Script::Events(vec![
            Ok(Event::text("partial", 1)),
            Err(BackendError::Internal("the decoder fell over".into())),
        ]),
    );
    let app = app(vec![scripted.clone()]).await;
    let body =
        json!({ "model": "m", "messages": [{ "role": "user", "content": "Hi" }], "stream": true });
    let reply = post(&app, "/v1/chat/completions", body).await;
    assert_eq!(reply.status, 200);
    let events = reply.sse();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(!events.contains(&"[DONE]".to_string()));
    let error: Value = serde_json::from_str(&events[2]).expect("json");
    assert_eq!(error["error"]["code"], "internal_error");
    assert!(error["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("decoder fell over")));
    assert!(scripted.was_dropped());
}

#[tokio::test]
async fn stream_that_ends_without_finishing_reports_an_error() {
    let app = app(vec![Scripted::new(
        "m",
        Script::Events(vec![Ok(Event::text("x", 1))]),
    )])
    .await;
    let body = json!({ "model": "m", "prompt": "Hi", "stream": true });
    let events = post(&app, "/v1/completions", body).await.sse();
    assert!(!events.contains(&"[DONE]".to_string()));
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("json");
    assert_eq!(last["error"]["type"], "server_error");
}

#[tokio::test]
async fn disconnect_drops_the_backend_stream() {
    let scripted = Scripted::new(
        "m",
        Script::EventsThenHang(vec![Ok(Event::text("tick", 1))]),
    );
    let app = app(vec![scripted.clone()]).await;
    let body =
        json!({ "model": "m", "messages": [{ "role": "user", "content": "Hi" }], "stream": true });
    let request = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let mut frames = response.into_body().into_data_stream();
    let first = frames.next().await.expect("role chunk").expect("bytes");
    assert!(first.starts_with(b"data: "));
    let second = frames.next().await.expect("text chunk").expect("bytes");
    assert!(String::from_utf8_lossy(&second).contains("tick"));
    // The backend is now generating "forever"; nothing is dropped yet.
    let pending = tokio::time::timeout(Duration::from_millis(50), frames.next()).await;
    assert!(pending.is_err(), "the stream should still be open");
    assert!(!scripted.was_dropped());
    // The client goes away.
    drop(frames);
    assert!(
        scripted.was_dropped(),
        "dropping the body must drop the backend's stream"
    );
}

#[tokio::test]
async fn non_stream_disconnect_drops_the_backend_stream() {
    let scripted = Scripted::new(
        "m",
        Script::EventsThenHang(vec![Ok(Event::text("tick", 1))]),
    );
    let app = app(vec![scripted.clone()]).await;
    let request = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(Body::from(chat_body("m").to_string()))
        .expect("request");
    let call = app.oneshot(request);
    assert!(tokio::time::timeout(Duration::from_millis(50), call)
        .await
        .is_err());
    assert!(scripted.was_dropped());
}
