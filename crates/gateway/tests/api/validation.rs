//! Every malformed, unknown or unsupported input gets a 400 naming the parameter, and valid
//! input reaches the backend as the right `GenerateRequest`.

use backend::{ChatMessage, Prompt};
use serde_json::{json, Value};

use crate::common::*;

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";

/// `extra` merged into a valid chat body.
fn chat_with(extra: Value) -> Value {
    merge(chat_body("m"), extra)
}

fn completion_with(extra: Value) -> Value {
    merge(completion_body("m"), extra)
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

async fn expect_400(path: &str, body: Value, param: &str) -> String {
    let backend = Scripted::hello("m");
    let reply = post(&app(vec![backend.clone()]).await, path, body.clone()).await;
    reply.assert_error(400, "invalid_request_error", Some(param));
    assert!(
        backend.seen.lock().unwrap().is_empty(),
        "refused request reached the backend: {body}"
    );
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn unsupported_chat_parameters_are_refused_by_name() {
    let cases = [
        ("functions", json!([{ "name": "f" }])),
        ("function_call", json!("auto")),
        ("logit_bias", json!({ "50256": -100 })),
        ("store", json!(true)),
        ("audio", json!({ "voice": "alloy", "format": "wav" })),
        ("modalities", json!(["text", "audio"])),
        ("web_search_options", json!({})),
    ];
    for (param, value) in cases {
        let message = expect_400(CHAT, chat_with(json!({ param: value })), param).await;
        assert_eq!(
            message,
            format!("'{param}' is not supported yet by this server")
        );
    }
}

#[tokio::test]
async fn no_op_values_of_unsupported_parameters_pass() {
    let backend = Scripted::hello("m");
    let app = app(vec![backend.clone()]).await;
    let body = chat_with(json!({
        "logit_bias": {}, "logprobs": false, "store": false, "n": 1, "tools": null,
        "response_format": null, "user": "u-1", "metadata": { "k": "v" },
        // What agent frameworks send and needs nothing here.
        "prompt_cache_key": "session-1", "safety_identifier": "u-hash", "service_tier": "auto",
        "prediction": { "type": "content", "content": "x" }, "reasoning_effort": "low",
        "verbosity": "low", "modalities": ["text"]
    }));
    let reply = post(&app, CHAT, body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn unknown_fields_are_named() {
    let message = expect_400(CHAT, chat_with(json!({ "frobnicate": 1 })), "frobnicate").await;
    assert_eq!(
        message,
        "Unrecognized request argument supplied: frobnicate"
    );
    expect_400(
        COMPLETIONS,
        completion_with(json!({ "messages": [] })),
        "messages",
    )
    .await;
    expect_400(
        CHAT,
        chat_with(json!({ "messages": [{ "role": "user", "content": "x", "colour": 1 }] })),
        "messages[0].colour",
    )
    .await;
    expect_400(
        CHAT,
        chat_with(json!({ "stream": true, "stream_options": { "include_usage": true, "x": 1 } })),
        "stream_options.x",
    )
    .await;
}

#[tokio::test]
async fn bad_values_are_named() {
    let cases = [
        (json!({ "temperature": 2.5 }), "temperature"),
        (json!({ "temperature": -0.1 }), "temperature"),
        (json!({ "temperature": "hot" }), "temperature"),
        (json!({ "top_p": 0 }), "top_p"),
        (json!({ "top_p": 1.01 }), "top_p"),
        (json!({ "top_k": -1 }), "top_k"),
        (json!({ "top_k": 1.5 }), "top_k"),
        (json!({ "min_p": 1.5 }), "min_p"),
        (json!({ "seed": "x" }), "seed"),
        (json!({ "seed": 1.5 }), "seed"),
        (json!({ "max_tokens": 0 }), "max_tokens"),
        (
            json!({ "max_completion_tokens": 0 }),
            "max_completion_tokens",
        ),
        (json!({ "max_tokens": 5_000_000_000u64 }), "max_tokens"),
        (json!({ "presence_penalty": 2.5 }), "presence_penalty"),
        (json!({ "frequency_penalty": -3 }), "frequency_penalty"),
        (json!({ "stop": "" }), "stop"),
        (json!({ "stop": ["a", ""] }), "stop[1]"),
        (json!({ "stop": ["a", 1] }), "stop[1]"),
        (json!({ "stop": 5 }), "stop"),
        (json!({ "stop": vec!["s"; 17] }), "stop"),
        (json!({ "stream": "yes" }), "stream"),
        (
            json!({ "stream_options": { "include_usage": true } }),
            "stream_options",
        ),
        (
            json!({ "stream": true, "stream_options": { "include_usage": 1 } }),
            "stream_options.include_usage",
        ),
        (json!({ "n": 17 }), "n"),
        (json!({ "n": 0 }), "n"),
        (json!({ "top_logprobs": 2 }), "top_logprobs"),
        (
            json!({ "logprobs": true, "top_logprobs": 21 }),
            "top_logprobs",
        ),
        (json!({ "logprobs": 1 }), "logprobs"),
        (json!({ "user": 5 }), "user"),
        (json!({ "metadata": [] }), "metadata"),
        (json!({ "model": 5 }), "model"),
        (json!({ "messages": [] }), "messages"),
        (json!({ "messages": "hi" }), "messages"),
        (json!({ "messages": ["hi"] }), "messages[0]"),
        (
            json!({ "messages": [{ "content": "x" }] }),
            "messages[0].role",
        ),
        (
            json!({ "messages": [{ "role": "robot", "content": "x" }] }),
            "messages[0].role",
        ),
        (
            json!({ "messages": [{ "role": "user" }] }),
            "messages[0].content",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": 5 }] }),
            "messages[0].content",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x", "name": 1 }] }),
            "messages[0].name",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "text", "text": "a" }, { "type": "image_url", "image_url": { "url": "http://x" } }] }] }),
            "messages[0].content[1].type",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "text" }] }] }),
            "messages[0].content[0].text",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": ["a"] }] }),
            "messages[0].content[0]",
        ),
        (
            json!({ "messages": [{ "role": "assistant", "content": null, "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "not json" } }] }] }),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }, { "role": "tool", "tool_call_id": "nope", "content": "42" }] }),
            "messages[1].tool_call_id",
        ),
        (
            json!({ "messages": [{ "role": "tool", "content": "42" }] }),
            "messages[0].tool_call_id",
        ),
        (json!({ "tool_choice": "auto" }), "tool_choice"),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "has space" } }] }),
            "tools[0].function.name",
        ),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "f" } }, { "type": "function", "function": { "name": "f" } }] }),
            "tools[1].function.name",
        ),
        (
            json!({ "tools": [{ "type": "retrieval" }] }),
            "tools[0].type",
        ),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "f", "parameters": { "type": "string" } } }] }),
            "tools[0].function.parameters",
        ),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": { "type": "function", "function": { "name": "g" } } }),
            "tool_choice",
        ),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "f" } }], "parallel_tool_calls": "no" }),
            "parallel_tool_calls",
        ),
        (
            json!({ "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": "any" }),
            "tool_choice",
        ),
        (json!({ "tool_choice": "required" }), "tool_choice"),
        (json!({ "response_format": "json" }), "response_format"),
        (
            json!({ "response_format": { "type": "xml" } }),
            "response_format.type",
        ),
        (
            json!({ "response_format": { "type": "json_schema" } }),
            "response_format.json_schema",
        ),
        (
            json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "has space", "schema": {} } } }),
            "response_format.json_schema.name",
        ),
        (
            json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "r", "schema": [] } } }),
            "response_format.json_schema.schema",
        ),
        (
            json!({ "response_format": { "type": "json_object", "schema": {} } }),
            "response_format.schema",
        ),
    ];
    for (extra, param) in cases {
        expect_400(CHAT, chat_with(extra), param).await;
    }
    expect_400(
        CHAT,
        json!({ "messages": [{ "role": "user", "content": "x" }] }),
        "model",
    )
    .await;
    expect_400(CHAT, json!({ "model": "m" }), "messages").await;
}

#[tokio::test]
async fn completion_specific_refusals() {
    let cases = [
        (json!({ "prompt": [1, 2, 3] }), "prompt"),
        (json!({ "prompt": [[1, 2], [3]] }), "prompt"),
        (json!({ "prompt": ["a", "b"] }), "prompt"),
        (json!({ "prompt": [] }), "prompt"),
        (json!({ "prompt": 7 }), "prompt"),
        (json!({ "echo": true }), "echo"),
        (json!({ "suffix": "end" }), "suffix"),
        (json!({ "best_of": 2 }), "best_of"),
        (json!({ "logprobs": 6 }), "logprobs"),
        (json!({ "logit_bias": { "1": 1 } }), "logit_bias"),
        (
            json!({ "max_completion_tokens": 5 }),
            "max_completion_tokens",
        ),
        (json!({ "n": 17 }), "n"),
    ];
    for (extra, param) in cases {
        expect_400(COMPLETIONS, completion_with(extra), param).await;
    }
    let message = expect_400(
        COMPLETIONS,
        completion_with(json!({ "prompt": ["a", "b"] })),
        "prompt",
    )
    .await;
    assert!(message.contains("one prompt"), "{message}");
    let message = expect_400(
        COMPLETIONS,
        completion_with(json!({ "prompt": [1, 2] })),
        "prompt",
    )
    .await;
    assert!(message.contains("Token-array"), "{message}");
}

#[tokio::test]
async fn malformed_bodies_say_what_is_wrong() {
    let app = app(vec![Scripted::hello("m")]).await;
    for (body, needle) in [
        ("{\"model\": \"m\",", "EOF"),
        ("{\"model\": 'm'}", "line 1 column"),
        ("", "empty"),
        ("[1, 2]", "must be a JSON object"),
        ("\"text\"", "must be a JSON object"),
    ] {
        for path in [CHAT, COMPLETIONS] {
            let reply = post_raw(&app, path, body.to_string()).await;
            reply.assert_error(400, "invalid_request_error", None);
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.contains(needle), "{body:?} → {message}");
        }
    }
}

#[tokio::test]
async fn too_large_bodies_get_413() {
    let app = app(vec![Scripted::hello("m")]).await;
    let big = "x".repeat(MAX_BODY + 1);
    let reply = post(
        &app,
        CHAT,
        json!({ "model": "m", "messages": [{ "role": "user", "content": big }] }),
    )
    .await;
    reply.assert_error(413, "request_too_large", None);
}

#[tokio::test]
async fn unknown_model_is_404_listing_served_models() {
    let app = app(vec![Scripted::hello("alpha"), Scripted::hello("beta")]).await;
    for (path, body) in [
        (CHAT, chat_body("gamma")),
        (COMPLETIONS, completion_body("gamma")),
    ] {
        let reply = post(&app, path, body).await;
        reply.assert_error(404, "model_not_found", Some("model"));
        assert_eq!(
            reply.json()["error"]["message"],
            "The model 'gamma' does not exist. Available: alpha, beta"
        );
    }
}

#[tokio::test]
async fn chat_requests_map_to_generate_requests() {
    let backend = Scripted::hello("m");
    let app = app(vec![backend.clone()]).await;
    let body = json!({
        "model": "m",
        "messages": [
            { "role": "developer", "content": "Be brief." },
            { "role": "user", "name": "ann", "content": [{ "type": "text", "text": "Hello" }, { "type": "text", "text": "there" }] },
            { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function", "function": { "name": "answer", "arguments": "{\"q\": 1}" } }] },
            { "role": "tool", "tool_call_id": "c1", "content": "42" }
        ],
        "tools": [{ "type": "function", "function": { "name": "answer", "description": "d", "parameters": { "type": "object" } } }],
        "tool_choice": "auto", "parallel_tool_calls": true,
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7,
        "max_tokens": 100, "max_completion_tokens": 50, "stop": "END",
        "presence_penalty": 0.5, "frequency_penalty": -0.5
    });
    let reply = post(&app, CHAT, body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let request = backend.last_request();
    let msg = |role: &str, content: &str| ChatMessage::text(role, content);
    let call = backend::ToolCall::function("c1".into(), "answer".into(), json!({ "q": 1 }));
    assert_eq!(
        request.prompt,
        Prompt::Chat(vec![
            msg("system", "Be brief."),
            ChatMessage {
                name: Some("ann".into()),
                ..msg("user", "Hello\nthere")
            },
            ChatMessage {
                tool_calls: vec![call],
                ..msg("assistant", "")
            },
            ChatMessage {
                tool_call_id: Some("c1".into()),
                ..msg("tool", "42")
            },
        ])
    );
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tools[0].function.name, "answer");
    assert_eq!(request.model, "m");
    assert_eq!(request.max_tokens, Some(50));
    assert_eq!(request.stop, vec!["END".to_string()]);
    let s = &request.sampling;
    assert_eq!(
        (s.temperature, s.top_p, s.top_k, s.min_p),
        (0.5, 0.9, 40, 0.05)
    );
    assert_eq!(
        (s.seed, s.presence_penalty, s.frequency_penalty),
        (Some(7), 0.5, -0.5)
    );
    assert!(
        request.request_id.starts_with("chatcmpl-"),
        "{}",
        request.request_id
    );
    assert_eq!(request.request_id, reply.json()["id"]);
}

#[tokio::test]
async fn completion_requests_map_to_generate_requests() {
    let backend = Scripted::hello("m");
    let app = app(vec![backend.clone()]).await;
    let body = json!({ "model": "m", "prompt": ["Once"], "stop": ["a", "b"], "echo": false, "best_of": 1, "suffix": null, "logprobs": null });
    let reply = post(&app, COMPLETIONS, body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let request = backend.last_request();
    assert_eq!(request.prompt, Prompt::Text("Once".into()));
    assert_eq!(request.max_tokens, None);
    assert_eq!(request.stop, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(request.sampling, backend::SamplingParams::default());
    assert!(request.request_id.starts_with("cmpl-"));
}
