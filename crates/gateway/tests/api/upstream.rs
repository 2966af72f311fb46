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
use serde_json::{json, Value};
use upstream::{UpstreamBackend, UpstreamConfig};

use crate::common::*;
use crate::tenants::{admin, tenant_with_key};

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
    /// A 500 whose message names the address the request was sent to.
    ErrorNamingItself,
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
        Answer::ErrorNamingItself => {
            let host = headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let message = format!("backend http://{host}/v1 is overloaded");
            let body = json!({ "error": { "message": message, "type": "server_error" } });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
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
    backend_with_default(base_url, None)
}

fn backend_with_default(base_url: &str, default_max_tokens: Option<u32>) -> UpstreamBackend {
    UpstreamBackend::new(UpstreamConfig {
        name: "served".into(),
        base_url: base_url.into(),
        api_key: Some("sk-up".into()),
        model: Some("upstream-id".into()),
        timeout_seconds: Some(1),
        default_max_tokens,
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
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: Default::default(),
        priority: Default::default(),
        resume: Vec::new(),
    }
}

fn chat_prompt() -> Prompt {
    Prompt::Chat(vec![ChatMessage::text("user", "Hi")])
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
    // The upstream is called only after `Admitted`; its refusal is the one item after it.
    if let [Err(_)] = events.as_slice() {
        return Err(events.remove(0).unwrap_err());
    }
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
    assert!(body.get("tool_choice").is_none() && body.get("response_format").is_none());
}

#[tokio::test]
async fn tool_choices_and_formats_are_passed_through() {
    let (url, fake) = start(Answer::Sse(chat_sse())).await;
    let mut req = request(chat_prompt());
    req.tools = vec![backend::Tool {
        r#type: "function",
        function: backend::FunctionSpec {
            name: "f".into(),
            description: None,
            parameters: json!({ "type": "object" }),
        },
    }];
    req.tool_choice = backend::ToolChoice::Function("f".into());
    req.parallel_tool_calls = false;
    req.format = backend::OutputFormat::JsonSchema(json!({ "type": "object" }));
    collect(&backend(&url), req).await.unwrap();
    let seen = fake.seen.lock().unwrap();
    let body = &seen[0].2;
    assert_eq!(
        body["tool_choice"],
        json!({ "type": "function", "function": { "name": "f" } })
    );
    assert_eq!(body["parallel_tool_calls"], false);
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        json!({ "type": "object" })
    );
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

/// The gateway serving the upstream at `url` to tenants.
async fn tenant_app(url: &str, default_max_tokens: Option<u32>) -> Router {
    let upstream: Arc<dyn Backend> = Arc::new(backend_with_default(url, default_max_tokens));
    app_on(vec![upstream], false, tenancy().await)
}

/// `n` chunks of text `t0`, `t1`, … then the upstream's usage claiming all `n` tokens.
fn chunks(n: usize) -> Vec<String> {
    let mut sse: Vec<String> = (0..n)
        .map(|i| {
            json!({ "choices": [{ "index": 0, "delta": { "content": format!("t{i}") }, "finish_reason": null }] })
                .to_string()
        })
        .collect();
    sse.push(
        json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }).to_string(),
    );
    sse.push(
        json!({ "choices": [], "usage": { "prompt_tokens": 3, "completion_tokens": n } })
            .to_string(),
    );
    sse.push("[DONE]".into());
    sse
}

async fn bill(app: &Router, id: &str) -> Value {
    let reply = get(app, &format!("/admin/v1/requests/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    reply.json()
}

#[tokio::test]
async fn a_tenant_that_cannot_pay_never_reaches_the_upstream() {
    let (url, fake) = start(Answer::Sse(chat_sse())).await;
    let app = tenant_app(&url, None).await;
    let price = admin(
        &app,
        "PUT",
        "/prices/served",
        Some(json!({ "input_per_million": 1_000_000, "output_per_million": 1_000_000 })),
    )
    .await;
    assert_eq!(price.status.as_u16(), 200, "{}", price.body);
    let (_, broke, _) = tenant_with_key(&app, json!({ "grant_tokens": 0 }), json!({})).await;
    // A tenant that can pay for a little, but not for this request's worst case (the
    // prompt's upper bound and 1,000 completion tokens): refused when the reservation fails,
    // which is before anything is sent upstream.
    let (id, poor, _) = tenant_with_key(&app, json!({ "grant_tokens": 0 }), json!({})).await;
    admin(
        &app,
        "POST",
        &format!("/tenants/{id}/topups"),
        Some(json!({ "amount": 500 })),
    )
    .await;
    for stream in [false, true] {
        let mut body = chat_body("served");
        body["max_tokens"] = json!(1_000);
        body["stream"] = json!(stream);
        for key in [&broke, &poor] {
            post_as(&app, "/v1/chat/completions", body.to_string(), Some(key))
                .await
                .assert_error(402, "insufficient_quota", None);
        }
    }
    assert!(
        fake.seen.lock().unwrap().is_empty(),
        "an unpaid request reached the upstream"
    );
    let poor_account = get(&app, "/v1/account", Some(&poor)).await.json();
    assert_eq!(poor_account["balance"], 500, "{poor_account}");
    assert_eq!(poor_account["amount_held"], 0, "{poor_account}");

    // Within its means, it is served.
    let mut body = chat_body("served");
    body["max_tokens"] = json!(10);
    let ok = post_as(&app, "/v1/chat/completions", body.to_string(), Some(&poor)).await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_upstream_that_ignores_max_tokens_is_cut_off_and_billed_what_was_delivered() {
    let (url, fake) = start(Answer::Sse(chunks(10))).await;
    let app = tenant_app(&url, None).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;

    let mut body = chat_body("served");
    body["max_tokens"] = json!(4);
    let reply = post_as(&app, "/v1/chat/completions", body.to_string(), Some(&key)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["choices"][0]["message"]["content"], "t0t1t2t3");
    assert_eq!(json["choices"][0]["finish_reason"], "length");
    assert_eq!(json["usage"]["completion_tokens"], 4);
    let billed = bill(&app, json["id"].as_str().unwrap()).await;
    assert_eq!(billed["billed"]["completion_tokens"], 4, "{billed}");
    assert_eq!(fake.seen.lock().unwrap()[0].2["max_tokens"], 4);

    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let reply = post_as(&app, "/v1/chat/completions", body.to_string(), Some(&key)).await;
    let frames: Vec<Value> = reply
        .sse()
        .iter()
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let text: String = frames
        .iter()
        .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "t0t1t2t3");
    let usage = &frames.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 4, "{usage}");
    let billed = bill(&app, frames[0]["id"].as_str().unwrap()).await;
    assert_eq!(billed["billed"]["completion_tokens"], 4, "{billed}");
    assert!(
        billed["billed"]["prompt_tokens"].as_i64() <= billed["prompt_tokens"].as_i64(),
        "{billed}"
    );

    // Without a max_tokens from the client, the reserved default is sent and enforced.
    let app = tenant_app(&url, Some(3)).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let reply = post_as(
        &app,
        "/v1/chat/completions",
        chat_body("served").to_string(),
        Some(&key),
    )
    .await;
    let json = reply.json();
    assert_eq!(json["choices"][0]["message"]["content"], "t0t1t2", "{json}");
    assert_eq!(fake.seen.lock().unwrap().last().unwrap().2["max_tokens"], 3);
    let billed = bill(&app, json["id"].as_str().unwrap()).await;
    assert_eq!(billed["max_completion_tokens"], 3, "{billed}");
    assert_eq!(billed["billed"]["completion_tokens"], 3, "{billed}");
}

#[tokio::test]
async fn an_upstream_refusal_bills_nothing() {
    let error = json!({ "error": { "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded" } });
    let (url, fake) = start(Answer::Error {
        status: 429,
        retry_after: Some("7"),
        body: error.to_string(),
    })
    .await;
    let app = tenant_app(&url, None).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let before = get(&app, "/v1/account", Some(&key)).await.json();
    for stream in [false, true] {
        let mut body = chat_body("served");
        body["stream"] = json!(stream);
        let reply = post_as(&app, "/v1/chat/completions", body.to_string(), Some(&key)).await;
        // Still a status, also for a stream: the upstream's answer is awaited first.
        reply.assert_error(429, "rate_limit_exceeded", None);
        assert_eq!(reply.header("retry-after"), Some("7"));
    }
    assert_eq!(fake.seen.lock().unwrap().len(), 2);
    let after = get(&app, "/v1/account", Some(&key)).await.json();
    assert_eq!(
        after["grant_tokens_left"], before["grant_tokens_left"],
        "{after}"
    );
    assert_eq!(after["grant_tokens_held"], 0, "{after}");
}

#[tokio::test]
async fn tenants_never_see_the_upstreams_address_or_key() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let app = tenant_app(&format!("http://{addr}/v1"), None).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    for stream in [false, true] {
        let mut body = chat_body("served");
        body["stream"] = json!(stream);
        let reply = post_as(&app, "/v1/chat/completions", body.to_string(), Some(&key)).await;
        reply.assert_error(502, "upstream_unreachable", None);
        assert!(!reply.body.contains("127.0.0.1"), "{}", reply.body);
        assert!(
            !reply.body.contains(&addr.port().to_string()),
            "{}",
            reply.body
        );
    }

    let (url, _) = start(Answer::ErrorNamingItself).await;
    let app = tenant_app(&url, None).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let reply = post_as(
        &app,
        "/v1/chat/completions",
        chat_body("served").to_string(),
        Some(&key),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 500, "{}", reply.body);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!message.contains("127.0.0.1"), "{message}");
    assert!(message.contains("is overloaded"), "{message}");

    // The upstream refusing this server's own key is the operator's problem, and says nothing
    // of the key.
    let refusal = json!({ "error": { "message": "Incorrect API key provided: sk-up", "code": "invalid_api_key" } });
    let (url, _) = start(Answer::Error {
        status: 401,
        retry_after: None,
        body: refusal.to_string(),
    })
    .await;
    let app = tenant_app(&url, None).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let reply = post_as(
        &app,
        "/v1/chat/completions",
        chat_body("served").to_string(),
        Some(&key),
    )
    .await;
    reply.assert_error(502, "upstream_error", None);
    assert!(!reply.body.contains("sk-up"), "{}", reply.body);
}
