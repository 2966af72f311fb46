//! `UpstreamBackend` against a small OpenAI-compatible server started in the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use backend::{
    Backend, BackendError, ChatMessage, Event, FinishReason, GenerateRequest, Prompt,
    SamplingParams, Usage,
};
use futures::StreamExt;
use gateway::upstream::{UpstreamBackend, UpstreamConfig};
use serde_json::{json, Value};

use crate::common::*;

/// What the fake upstream answers.
#[derive(Clone)]
enum Answer {
    Sse(Vec<String>),
    Error {
        status: u16,
        retry_after: Option<&'static str>,
        body: String,
    },
    Json(Value),
    Stall,
}

struct Fake {
    answer: Answer,
    /// (path, authorization header, body) of each request.
    seen: Mutex<Vec<(String, Option<String>, Value)>>,
}

async fn fake_answer(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    fake.seen
        .lock()
        .unwrap()
        .push((uri.path().to_string(), auth, body));
    match fake.answer.clone() {
        Answer::Sse(events) => {
            let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            ([("content-type", "text/event-stream")], body).into_response()
        }
        Answer::Error {
            status,
            retry_after,
            body,
        } => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().unwrap());
            }
            response
        }
        Answer::Json(value) => Json(value).into_response(),
        Answer::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Starts the fake on a free port; returns its `/v1` base URL.
async fn start(answer: Answer) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        answer,
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", axum::routing::post(fake_answer))
        .route("/v1/completions", axum::routing::post(fake_answer))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), fake)
}

fn backend(base_url: &str) -> UpstreamBackend {
    UpstreamBackend::new(UpstreamConfig {
        name: "served".into(),
        base_url: base_url.into(),
        api_key: Some("sk-up".into()),
        model: Some("upstream-id".into()),
        timeout_seconds: Some(1),
    })
    .unwrap()
}

fn request(prompt: Prompt) -> GenerateRequest {
    GenerateRequest {
        request_id: "chatcmpl-test".into(),
        model: "served".into(),
        prompt,
        sampling: SamplingParams {
            temperature: 0.7,
            ..SamplingParams::default()
        },
        max_tokens: Some(32),
        stop: vec!["END".into()],
        tenant: None,
    }
}

fn chat_prompt() -> Prompt {
    Prompt::Chat(vec![ChatMessage {
        role: "user".into(),
        content: "Hi".into(),
    }])
}

async fn collect(
    backend: &UpstreamBackend,
    req: GenerateRequest,
) -> Result<Vec<Result<Event, BackendError>>, BackendError> {
    let prompt_bytes = match &req.prompt {
        Prompt::Chat(m) => m
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum::<usize>(),
        Prompt::Text(t) => t.len(),
    };
    let mut events: Vec<_> = backend.generate(req).await?.collect().await;
    // First, the worst case to reserve: an upper bound on the prompt, as the upstream
    // tokenizes it.
    match events.first() {
        Some(Ok(Event::Admitted {
            prompt_tokens,
            exact: false,
            ..
        })) => assert!(*prompt_tokens as usize >= prompt_bytes),
        other => panic!("the stream does not start with Admitted: {other:?}"),
    }
    let _admitted = events.remove(0);
    Ok(events)
}

fn chat_sse() -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "upstream-id",
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }], "usage": null })
        .to_string()
    };
    vec![
        chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
        chunk(json!({ "content": "Hel" }), Value::Null),
        chunk(json!({ "content": "lo" }), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({ "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "upstream-id", "choices": [],
                "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "prompt_tokens_details": { "cached_tokens": 1 } } })
        .to_string(),
        "[DONE]".into(),
    ]
}

#[tokio::test]
async fn chat_streams_text_and_usage() {
    let (url, fake) = start(Answer::Sse(chat_sse())).await;
    let events = collect(&backend(&url), request(chat_prompt()))
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![
            Ok(Event::text("Hel", 1)),
            Ok(Event::text("lo", 1)),
            Ok(Event::Finished {
                reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    cached_tokens: 1
                },
            }),
        ]
    );
    let seen = fake.seen.lock().unwrap();
    let (path, auth, body) = &seen[0];
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(auth.as_deref(), Some("Bearer sk-up"));
    assert_eq!(
        *body,
        json!({
            "model": "upstream-id", "messages": [{ "role": "user", "content": "Hi" }],
            "temperature": 0.7, "top_p": 1.0, "max_tokens": 32, "stop": ["END"],
            "stream": true, "stream_options": { "include_usage": true }
        })
    );
}

#[tokio::test]
async fn extensions_are_sent_only_when_set() {
    let (url, fake) = start(Answer::Sse(chat_sse())).await;
    let mut req = request(chat_prompt());
    req.sampling = SamplingParams {
        top_k: 40,
        min_p: 0.05,
        seed: Some(9),
        presence_penalty: 0.5,
        ..SamplingParams::default()
    };
    collect(&backend(&url), req).await.unwrap();
    let seen = fake.seen.lock().unwrap();
    let body = &seen[0].2;
    assert_eq!(body["top_k"], 40);
    assert_eq!(body["min_p"], 0.05);
    assert_eq!(body["seed"], 9);
    assert_eq!(body["presence_penalty"], 0.5);
    assert!(body.get("frequency_penalty").is_none());
}

#[tokio::test]
async fn completions_stream_text() {
    let chunk = |text: &str, finish: Value| {
        json!({ "object": "text_completion", "choices": [{ "index": 0, "text": text, "finish_reason": finish }] }).to_string()
    };
    let sse = vec![
        chunk("Once", Value::Null),
        chunk(" upon", json!("length")),
        json!({ "choices": [], "usage": { "prompt_tokens": 2, "completion_tokens": 2 } })
            .to_string(),
    ];
    let (url, fake) = start(Answer::Sse(sse)).await;
    let events = collect(&backend(&url), request(Prompt::Text("Tell".into())))
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![
            Ok(Event::text("Once", 1)),
            Ok(Event::text(" upon", 1)),
            Ok(Event::Finished {
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 2,
                    completion_tokens: 2,
                    cached_tokens: 0
                },
            }),
        ],
        "a stream that ends after a finish_reason, without [DONE], still finishes"
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen[0].0, "/v1/completions");
    assert_eq!(seen[0].2["prompt"], "Tell");
    assert!(seen[0].2.get("messages").is_none());
}

#[tokio::test]
async fn a_json_answer_is_accepted_too() {
    let body = json!({ "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Hi!" }, "finish_reason": "stop" }],
                       "usage": { "prompt_tokens": 1, "completion_tokens": 2 } });
    let (url, _) = start(Answer::Json(body)).await;
    let events = collect(&backend(&url), request(chat_prompt()))
        .await
        .unwrap();
    assert_eq!(events[0], Ok(Event::text("Hi!", 2)));
    assert!(matches!(
        events[1],
        Ok(Event::Finished {
            reason: FinishReason::Stop,
            ..
        })
    ));
}

#[tokio::test]
async fn errors_pass_through_intact() {
    let error = json!({ "error": { "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded", "param": null } });
    let (url, _) = start(Answer::Error {
        status: 429,
        retry_after: Some("7"),
        body: error.to_string(),
    })
    .await;
    let err = collect(&backend(&url), request(chat_prompt()))
        .await
        .unwrap_err();
    let BackendError::Upstream(e) = err else {
        panic!("expected Upstream, got {err:?}")
    };
    assert_eq!((e.status, e.retry_after), (429, Some(7)));
    assert_eq!(e.message, "Rate limit reached");
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(e.r#type.as_deref(), Some("requests"));

    // And through the gateway, to the client.
    let app = app_with(vec![Arc::new(backend(&url))], false).await;
    let reply = post(&app, "/v1/chat/completions", chat_body("served")).await;
    reply.assert_error(429, "rate_limit_exceeded", None);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(reply.json()["error"]["message"], "Rate limit reached");

    let error = json!({ "error": { "message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded", "param": "messages" } });
    let (url, _) = start(Answer::Error {
        status: 400,
        retry_after: None,
        body: error.to_string(),
    })
    .await;
    let app = app_with(vec![Arc::new(backend(&url))], false).await;
    let reply = post(&app, "/v1/chat/completions", chat_body("served")).await;
    reply.assert_error(400, "context_length_exceeded", Some("messages"));
}

#[tokio::test]
async fn unreachable_servers_are_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = collect(
        &backend(&format!("http://{addr}/v1")),
        request(chat_prompt()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");

    let app = app_with(vec![Arc::new(backend(&format!("http://{addr}/v1")))], false).await;
    let reply = post(&app, "/v1/chat/completions", chat_body("served")).await;
    reply.assert_error(502, "upstream_unreachable", None);
}

#[tokio::test]
async fn silent_servers_time_out_as_unreachable() {
    let (url, _) = start(Answer::Stall).await;
    let err = collect(&backend(&url), request(chat_prompt()))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_an_error() {
    let mut sse = chat_sse();
    sse.truncate(3); // role, "Hel", "lo": no finish_reason, no [DONE]
    let (url, _) = start(Answer::Sse(sse)).await;
    let events = collect(&backend(&url), request(chat_prompt()))
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        matches!(events[2], Err(BackendError::Unreachable(_))),
        "{:?}",
        events[2]
    );
}

#[tokio::test]
async fn the_gateway_streams_an_upstream_model() {
    let (url, _) = start(Answer::Sse(chat_sse())).await;
    let app = app_with(vec![Arc::new(backend(&url))], false).await;
    let models = get(&app, "/v1/models", Some(ADMIN_KEY)).await.json();
    assert_eq!(models["data"][0]["id"], "served");
    assert_eq!(models["data"][0]["owned_by"], "upstream");
    let body = json!({ "model": "served", "messages": [{ "role": "user", "content": "Hi" }],
                       "stream": true, "stream_options": { "include_usage": true } });
    let events = post(&app, "/v1/chat/completions", body).await.sse();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    assert_eq!(usage["model"], "served");
}
