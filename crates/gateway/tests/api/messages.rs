//! Anthropic's Messages API through the router: the `message` object, its stream events,
//! `count_tokens`, `x-api-key`, Anthropic's error shape (auth and extractor errors included),
//! and metering exactly like chat.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use backend::{BackendError, Event, FinishReason, ToolChoice, Usage};
use serde_json::{json, Value};

use crate::common::*;
use crate::tenants::{account, admin, setup, tenant_with_key};

fn body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]})
}

async fn post_anthropic(app: &axum::Router, path: &str, body: Value, key: Option<&str>) -> Reply {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header("anthropic-version", "2023-06-01");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    send(
        app,
        request.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

/// Asserts `{"type": "error", "error": {"type": kind, "message"}}` with this status.
fn assert_anthropic_error(reply: &Reply, status: u16, kind: &str) -> String {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["type"], "error", "{json}");
    assert_eq!(json["error"]["type"], kind, "{json}");
    json["error"]["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| panic!("no message: {json}"))
        .to_owned()
}

#[tokio::test]
async fn a_message_has_anthropic_shape_and_usage() {
    let backend = Scripted::hello("m");
    let app = app(vec![backend.clone()]).await;
    let reply = post_anthropic(&app, "/v1/messages", body("m"), Some(ADMIN_KEY)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let message = reply.json();
    assert!(message["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello world"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    // hello: 5 prompt tokens of which 3 cached, 2 completion tokens.
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 2, "output_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3})
    );
    assert_eq!(backend.last_request().max_tokens, Some(16));
}

#[tokio::test]
async fn tool_use_comes_back_as_blocks_whole_and_streamed() {
    let events = vec![
        admitted(),
        Ok(Event::text("Checking.", 2)),
        Ok(Event::ToolCall {
            index: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        }),
        Ok(Event::Finished {
            reason: FinishReason::ToolCalls,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 9,
                cached_tokens: 0,
            },
        }),
    ];
    let backend = Scripted::new("m", Script::Events(events));
    let app = app(vec![backend.clone()]).await;
    let mut request = body("m");
    request["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    request["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    let reply = post_anthropic(&app, "/v1/messages", request.clone(), Some(ADMIN_KEY)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let message = reply.json();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
    );
    let seen = backend.last_request();
    assert_eq!(seen.tool_choice, ToolChoice::Function("get_weather".into()));
    assert_eq!(seen.tools[0].function.name, "get_weather");

    request["stream"] = json!(true);
    let reply = post_anthropic(&app, "/v1/messages", request, Some(ADMIN_KEY)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let events: Vec<(String, Value)> = reply
        .body
        .split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').expect("event and data lines");
            let name = name.strip_prefix("event: ").expect("event line").to_owned();
            let data = data.strip_prefix("data: ").expect("data line");
            (name, serde_json::from_str(data).expect("JSON data"))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "{data}");
    }
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 5);
    assert_eq!(
        events[3].1["delta"],
        json!({"type": "text_delta", "text": "Checking."})
    );
    assert_eq!(events[5].1["index"], 1);
    assert_eq!(events[5].1["content_block"]["input"], json!({}));
    assert_eq!(
        events[6].1["delta"],
        json!({"type": "input_json_delta", "partial_json": r#"{"city":"Paris"}"#})
    );
    assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[8].1["usage"]["output_tokens"], 9);
}

#[tokio::test]
async fn errors_are_in_anthropic_shape_with_the_sdk_statuses() {
    let app = app(vec![Scripted::hello("m")]).await;
    // No key, a wrong key: 401 authentication_error, whichever header carries it.
    assert_anthropic_error(
        &post_anthropic(&app, "/v1/messages", body("m"), None).await,
        401,
        "authentication_error",
    );
    assert_anthropic_error(
        &post_anthropic(&app, "/v1/messages", body("m"), Some("sk-wrong")).await,
        401,
        "authentication_error",
    );
    let mut no_max = body("m");
    no_max.as_object_mut().map(|m| m.remove("max_tokens"));
    let message = assert_anthropic_error(
        &post_anthropic(&app, "/v1/messages", no_max, Some(ADMIN_KEY)).await,
        400,
        "invalid_request_error",
    );
    assert!(message.contains("max_tokens"), "{message}");
    assert_anthropic_error(
        &post_anthropic(&app, "/v1/messages", body("nope"), Some(ADMIN_KEY)).await,
        404,
        "not_found_error",
    );
    let reply = send(
        &app,
        Request::post("/v1/messages")
            .header("x-api-key", ADMIN_KEY)
            .body(Body::from("{not json"))
            .expect("request"),
    )
    .await;
    assert_anthropic_error(&reply, 400, "invalid_request_error");
    let big = "x".repeat(MAX_BODY + 1);
    let reply = post_anthropic(&app, "/v1/messages", json!({ "big": big }), Some(ADMIN_KEY)).await;
    assert_anthropic_error(&reply, 413, "request_too_large");
    // The chat route keeps OpenAI's shape.
    post_as(&app, "/v1/chat/completions", "{}", None)
        .await
        .assert_error(401, "invalid_api_key", None);
}

#[tokio::test]
async fn an_overloaded_backend_is_a_retryable_anthropic_error() {
    let refuse = BackendError::Overloaded {
        queued: 3,
        retry_after: 2,
    };
    let app = app(vec![Scripted::new("m", Script::Refuse(refuse))]).await;
    let reply = post_anthropic(&app, "/v1/messages", body("m"), Some(ADMIN_KEY)).await;
    assert_anthropic_error(&reply, 429, "rate_limit_error");
    assert_eq!(reply.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn count_tokens_counts_without_generating_or_charging() {
    let backend = Scripted::hello("m");
    let (app, _) = setup(vec![backend.clone()]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let before = account(&app, &key).await;
    let mut request = body("m");
    request.as_object_mut().map(|m| m.remove("max_tokens"));
    request["system"] = json!("Be brief.");
    let reply = post_anthropic(&app, "/v1/messages/count_tokens", request, Some(&key)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"input_tokens": 5}));
    let seen = backend.last_request();
    assert_eq!(seen.max_tokens, None);
    let after = account(&app, &key).await;
    assert_eq!(before["grant_tokens_left"], after["grant_tokens_left"]);
    // Generation fields are not part of a count.
    let reply = post_anthropic(&app, "/v1/messages/count_tokens", body("m"), Some(&key)).await;
    assert_anthropic_error(&reply, 400, "invalid_request_error");
}

/// The same answer through chat and Messages is charged the same, and what each reports.
#[tokio::test]
async fn messages_are_metered_like_chat() {
    let (app, _) = setup(vec![Scripted::hello("m")]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let start = account(&app, &key).await["grant_tokens_left"]
        .as_i64()
        .unwrap_or(0);
    let chat = post_as(
        &app,
        "/v1/chat/completions",
        chat_body("m").to_string(),
        Some(&key),
    )
    .await;
    assert_eq!(chat.status.as_u16(), 200, "{}", chat.body);
    let after_chat = account(&app, &key).await["grant_tokens_left"]
        .as_i64()
        .unwrap_or(0);
    let reply = post_anthropic(&app, "/v1/messages", body("m"), Some(&key)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let after_messages = account(&app, &key).await["grant_tokens_left"]
        .as_i64()
        .unwrap_or(0);
    let usage = &reply.json()["usage"];
    let reported = usage["input_tokens"].as_i64().unwrap_or(0)
        + usage["cache_read_input_tokens"].as_i64().unwrap_or(0)
        + usage["output_tokens"].as_i64().unwrap_or(0);
    assert_eq!(start - after_chat, 7);
    assert_eq!(after_chat - after_messages, reported);
    let id = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    let bill = admin(&app, "GET", &format!("/requests/{id}"), None)
        .await
        .json();
    assert_eq!(bill["billed"]["prompt_tokens"], 5, "{bill}");
    assert_eq!(bill["billed"]["completion_tokens"], 2, "{bill}");
}

/// An abandoned Messages stream is settled with what was delivered, like an abandoned chat
/// stream.
#[tokio::test]
async fn an_abandoned_message_stream_is_billed_what_was_sent() {
    let backend = Scripted::new(
        "m",
        Script::EventsThenHang(vec![
            admitted(),
            Ok(Event::text("one", 1)),
            Ok(Event::text(" two", 2)),
        ]),
    );
    let (app, _) = setup(vec![backend.clone()]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let mut request = body("m");
    request["stream"] = json!(true);
    let request = Request::post("/v1/messages")
        .header("x-api-key", &key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(request.to_string()))
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 200);
    let id;
    {
        use futures::StreamExt;
        let mut frames = response.into_body().into_data_stream();
        let mut seen = String::new();
        while !seen.contains(" two") {
            let bytes = frames.next().await.expect("a frame").expect("bytes");
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        let start = seen.find("msg_").expect("an id");
        id = seen[start..].split('"').next().expect("id").to_owned();
    }
    let mut bill = Value::Null;
    for _ in 0..100 {
        bill = admin(&app, "GET", &format!("/requests/{id}"), None)
            .await
            .json();
        if bill["state"] == "settled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bill["state"], "settled", "{bill}");
    assert_eq!(bill["billed"]["completion_tokens"], 3, "{bill}");
    assert!(backend.was_dropped());
}
