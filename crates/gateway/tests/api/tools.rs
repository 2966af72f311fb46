//! Tool calls in answers: `message.tool_calls` and `finish_reason: "tool_calls"`, and the
//! streamed `delta.tool_calls` (index, then id, type and name, then the arguments).

use backend::{Event, FinishReason, Usage};
use serde_json::{json, Value};

use crate::common::*;

fn calling() -> std::sync::Arc<Scripted> {
    Scripted::new(
        "m",
        Script::Events(vec![
            admitted(),
            Ok(Event::text("Let me check.", 3)),
            Ok(Event::ToolCall {
                index: 0,
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Oslo\"}".into(),
            }),
            Ok(Event::Finished {
                reason: FinishReason::ToolCalls,
                usage: Usage {
                    prompt_tokens: 5,
                    completion_tokens: 12,
                    cached_tokens: 0,
                },
            }),
        ]),
    )
}

fn body(stream: bool) -> Value {
    let mut body = chat_body("m");
    body["stream"] = json!(stream);
    body["tools"] = json!([{ "type": "function", "function": {
        "name": "get_weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }]);
    body
}

#[tokio::test]
async fn an_answer_that_calls_a_tool_carries_its_calls() {
    let backend = calling();
    let app = app(vec![backend.clone()]).await;
    let reply = post(&app, "/v1/chat/completions", body(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    // The backend was offered the tool.
    assert_eq!(backend.last_request().tools[0].function.name, "get_weather");
}

#[tokio::test]
async fn a_streamed_call_arrives_as_a_tool_call_delta() {
    let app = app(vec![calling()]).await;
    let reply = post(&app, "/v1/chat/completions", body(true)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = reply.sse();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 1, "{chunks:?}");
    let delta = deltas[0];
    assert_eq!(delta["index"], 0);
    assert_eq!(delta["id"], "call_1");
    assert_eq!(delta["type"], "function");
    assert_eq!(delta["function"]["name"], "get_weather");
    assert_eq!(delta["function"]["arguments"], "{\"city\":\"Oslo\"}");
    let last = &chunks[chunks.len() - 1]["choices"][0];
    assert_eq!(last["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn a_model_without_tool_support_is_a_400_naming_tools() {
    let refusing = Scripted::new(
        "m",
        Script::Refuse(backend::BackendError::ToolsUnsupported(
            "The chat template of 'm' has no tool support".into(),
        )),
    );
    let app = app(vec![refusing]).await;
    post(&app, "/v1/chat/completions", body(false))
        .await
        .assert_error(400, "invalid_request_error", Some("tools"));
}

#[tokio::test]
async fn forced_choices_parallel_calls_and_formats_reach_the_backend() {
    use backend::{OutputFormat, SchemaSite, ToolChoice};
    let backend = calling();
    let router = app(vec![backend.clone()]).await;
    let cases = [
        (json!("required"), true, ToolChoice::Required),
        (
            json!({ "type": "function", "function": { "name": "get_weather" } }),
            false,
            ToolChoice::Function("get_weather".into()),
        ),
        (json!("auto"), true, ToolChoice::Auto),
    ];
    for (choice, parallel, expected) in cases {
        let mut request = body(false);
        request["tool_choice"] = choice;
        request["parallel_tool_calls"] = json!(parallel);
        let reply = post(&router, "/v1/chat/completions", request).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let seen = backend.last_request();
        assert_eq!(seen.tool_choice, expected);
        assert_eq!(seen.parallel_tool_calls, parallel);
    }
    let schema = json!({ "type": "object", "properties": { "a": { "type": "integer" } } });
    let mut request = chat_body("m");
    request["response_format"] = json!({ "type": "json_schema", "json_schema": {
        "name": "r", "schema": schema, "strict": true } });
    let reply = post(&router, "/v1/chat/completions", request).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        backend.last_request().format,
        OutputFormat::JsonSchema(schema)
    );

    // A schema the backend cannot enforce is a 400 naming where it sits.
    let refusing = Scripted::new(
        "m",
        Script::Refuse(backend::BackendError::UnsupportedSchema {
            site: SchemaSite::Tool(0),
            message: "the JSON Schema keyword 'pattern' at /properties/city cannot be enforced"
                .into(),
        }),
    );
    let refused = app(vec![refusing]).await;
    let reply = post(&refused, "/v1/chat/completions", body(false)).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.json()["error"]["param"],
        "tools[0].function.parameters"
    );
}
