//! Tool calls through an upstream server: the request's tools and tool messages go as OpenAI
//! sends them, and the calls in its answer (whole, or streamed as `delta.tool_calls`
//! fragments) come back as whole `ToolCall` events, just before the answer finishes.

use std::collections::BTreeMap;

use backend::{ChatMessage, Event, GenerateRequest, OutputFormat, ToolChoice};
use serde_json::{json, Map, Value};

/// `tools`, `tool_choice` and `parallel_tool_calls` as OpenAI takes them (nothing without
/// tools).
pub(crate) fn offer(request: &GenerateRequest, body: &mut Map<String, Value>) {
    if request.tools.is_empty() {
        return;
    }
    body.insert("tools".into(), json!(request.tools));
    let choice = match &request.tool_choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({ "type": "function", "function": { "name": name } }),
    };
    body.insert("tool_choice".into(), choice);
    if !request.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(false));
    }
}

/// `response_format` as OpenAI takes it (`None` for plain text). The schema's name is not
/// kept below the wire: the upstream sees `response`.
pub(crate) fn response_format(format: &OutputFormat) -> Option<Value> {
    match format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(json!({ "type": "json_object" })),
        OutputFormat::JsonSchema(schema) => Some(json!({
            "type": "json_schema",
            "json_schema": { "name": "response", "schema": schema },
        })),
    }
}

/// `messages` in OpenAI's shape: a call's arguments are a JSON object in a string.
pub(crate) fn messages(messages: &[ChatMessage]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let mut out = json!({ "role": m.role, "content": m.content });
                if !m.tool_calls.is_empty() {
                    let calls: Vec<Value> = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": c.r#type,
                                "function": {
                                    "name": c.function.name,
                                    "arguments": c.function.arguments.to_string(),
                                },
                            })
                        })
                        .collect();
                    out["tool_calls"] = Value::Array(calls);
                }
                if let Some(id) = &m.tool_call_id {
                    out["tool_call_id"] = json!(id);
                }
                if let Some(name) = &m.name {
                    out["name"] = json!(name);
                }
                out
            })
            .collect(),
    )
}

/// The calls of one answer, gathered by their index.
#[derive(Default)]
pub(crate) struct Calls {
    parts: BTreeMap<u64, Part>,
}

#[derive(Default)]
struct Part {
    id: String,
    name: String,
    arguments: String,
}

impl Calls {
    /// Takes the calls (or fragments of them) in a choice's `delta` or `message`; whether it
    /// had any.
    pub(crate) fn absorb(&mut self, choice: &Value) -> bool {
        let calls = choice
            .pointer("/delta/tool_calls")
            .or_else(|| choice.pointer("/message/tool_calls"))
            .and_then(Value::as_array);
        let Some(calls) = calls.filter(|c| !c.is_empty()) else {
            return false;
        };
        for (position, call) in calls.iter().enumerate() {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let part = self.parts.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                part.id = id.to_owned();
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                part.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                part.arguments.push_str(args);
            }
        }
        true
    }

    /// The gathered calls as events, in index order; a call without an id gets one.
    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.parts)
            .into_values()
            .enumerate()
            .map(|(i, part)| Event::ToolCall {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                id: if part.id.is_empty() {
                    format!("call_{i}")
                } else {
                    part.id
                },
                name: part.name,
                arguments: if part.arguments.is_empty() {
                    "{}".to_owned()
                } else {
                    part.arguments
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use backend::ToolCall;

    use super::*;

    #[test]
    fn streamed_fragments_become_whole_calls_in_index_order() {
        let mut calls = Calls::default();
        let chunks = [
            json!({ "delta": { "tool_calls": [{ "index": 1, "id": "b", "function": { "name": "g", "arguments": "" } }] } }),
            json!({ "delta": { "tool_calls": [{ "index": 0, "id": "a", "type": "function", "function": { "name": "f", "arguments": "{\"x\"" } }] } }),
            json!({ "delta": { "tool_calls": [{ "index": 0, "function": { "arguments": ": 1}" } }] } }),
            json!({ "delta": { "content": "text" } }),
        ];
        let had: Vec<bool> = chunks.iter().map(|c| calls.absorb(c)).collect();
        assert_eq!(had, [true, true, true, false]);
        let events = calls.take_events();
        assert_eq!(
            events,
            vec![
                Event::ToolCall {
                    index: 0,
                    id: "a".into(),
                    name: "f".into(),
                    arguments: "{\"x\": 1}".into()
                },
                Event::ToolCall {
                    index: 1,
                    id: "b".into(),
                    name: "g".into(),
                    arguments: "{}".into()
                },
            ]
        );
        assert!(calls.take_events().is_empty());
    }

    #[test]
    fn tool_messages_go_in_openai_shape() {
        let call = ToolCall::function("c1".into(), "f".into(), json!({ "x": 1 }));
        let sent = messages(&[
            ChatMessage {
                tool_calls: vec![call],
                ..ChatMessage::text("assistant", "")
            },
            ChatMessage {
                tool_call_id: Some("c1".into()),
                ..ChatMessage::text("tool", "42")
            },
        ]);
        assert_eq!(
            sent[0]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(sent[0]["tool_calls"][0]["type"], "function");
        assert_eq!(sent[1]["tool_call_id"], "c1");
        assert!(sent[1].get("tool_calls").is_none());
    }
}
