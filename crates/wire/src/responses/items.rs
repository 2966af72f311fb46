//! The Responses API's conversation items: `message` (text parts), `function_call` and
//! `function_call_output`, read from `input` into one canonical [`Item`] form, which is also
//! what a stored response keeps of its conversation, and turned into chat messages for the
//! model's template.

use std::collections::HashSet;

use backend::{ChatMessage, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Result};
use crate::validate::{self, Fields};

/// One conversation item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// `role` is `user`, `assistant` or `system` (`developer` is stored as `system`).
    Message {
        role: String,
        content: String,
    },
    FunctionCall {
        call_id: String,
        name: String,
        /// A JSON object, as text.
        arguments: String,
    },
    FunctionCallOutput {
        call_id: String,
        output: String,
    },
    /// The tools an MCP server offered (`tools` as the API lists them).
    McpListTools {
        id: String,
        server_label: String,
        tools: Value,
    },
    /// A call of an MCP server's tool that was made: its output, or its error (an object).
    McpCall {
        id: String,
        server_label: String,
        name: String,
        arguments: String,
        output: Option<String>,
        error: Option<Value>,
        approval_request_id: Option<String>,
    },
    /// A call of an MCP server's tool that waits for the client's approval.
    McpApprovalRequest {
        id: String,
        server_label: String,
        name: String,
        arguments: String,
    },
    /// The client's answer to an approval request.
    McpApprovalResponse {
        approval_request_id: String,
        approve: bool,
        reason: Option<String>,
    },
}

impl Item {
    /// The item as the API lists it (`input_items`, `output`), under `id`.
    pub fn view(&self, id: &str) -> Value {
        match self {
            Item::Message { role, content } => {
                let part = if role == "assistant" {
                    json!({ "type": "output_text", "text": content, "annotations": [] })
                } else {
                    json!({ "type": "input_text", "text": content })
                };
                json!({ "type": "message", "id": id, "status": "completed", "role": role, "content": [part] })
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call", "id": id, "status": "completed",
                "call_id": call_id, "name": name, "arguments": arguments,
            }),
            Item::FunctionCallOutput { call_id, output } => json!({
                "type": "function_call_output", "id": id, "status": "completed",
                "call_id": call_id, "output": output,
            }),
            Item::McpListTools {
                id,
                server_label,
                tools,
            } => json!({
                "type": "mcp_list_tools", "id": id, "server_label": server_label,
                "tools": tools, "error": null,
            }),
            Item::McpCall {
                id,
                server_label,
                name,
                arguments,
                output,
                error,
                approval_request_id,
            } => json!({
                "type": "mcp_call", "id": id,
                "status": if error.is_some() { "failed" } else { "completed" },
                "server_label": server_label, "name": name, "arguments": arguments,
                "output": output, "error": error, "approval_request_id": approval_request_id,
            }),
            Item::McpApprovalRequest {
                id,
                server_label,
                name,
                arguments,
            } => json!({
                "type": "mcp_approval_request", "id": id, "server_label": server_label,
                "name": name, "arguments": arguments,
            }),
            Item::McpApprovalResponse {
                approval_request_id,
                approve,
                reason,
            } => json!({
                "type": "mcp_approval_response", "id": id,
                "approval_request_id": approval_request_id, "approve": approve, "reason": reason,
            }),
        }
    }

    /// The id an item carries itself (MCP items), if any.
    pub fn own_id(&self) -> Option<&str> {
        match self {
            Item::McpListTools { id, .. }
            | Item::McpCall { id, .. }
            | Item::McpApprovalRequest { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// `input`: a string (one user message) or a list of items.
pub fn input(fields: &Fields<'_>) -> Result<Vec<Item>> {
    match fields.required("input")? {
        Value::String(text) => Ok(vec![Item::Message {
            role: "user".into(),
            content: text.clone(),
        }]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item_at(item, format!("input[{i}]")).transpose())
            .collect(),
        other => Err(ApiError::invalid(
            "input",
            format!(
                "Invalid type for 'input': expected a string or an array of input items, but got {} instead.",
                validate::kind(other)
            ),
        )),
    }
}

/// One input item; `None` for items that carry nothing for these models (`reasoning`).
fn item_at(item: &Value, path: String) -> Result<Option<Item>> {
    let item = validate::object_item(item, path)?;
    // A message may leave out its type (`{"role", "content"}`, the easy input form).
    let kind = match item.string("type")? {
        Some(kind) => kind,
        None if item.get("role").is_some() => "message",
        None => {
            item.required("type")?;
            "message"
        }
    };
    match kind {
        "message" => message(&item).map(Some),
        "function_call" => {
            item.deny_unknown(&["type", "id", "call_id", "name", "arguments", "status"])?;
            item.string("id")?;
            item.string("status")?;
            let arguments = item.required_string("arguments")?;
            if !matches!(
                serde_json::from_str::<Value>(arguments),
                Ok(Value::Object(_))
            ) {
                let param = item.param("arguments");
                return Err(ApiError::invalid(
                    param.clone(),
                    format!("Invalid '{param}': expected a JSON object in a string."),
                ));
            }
            Ok(Some(Item::FunctionCall {
                call_id: item.required_string("call_id")?.to_owned(),
                name: item.required_string("name")?.to_owned(),
                arguments: arguments.to_owned(),
            }))
        }
        "function_call_output" => {
            item.deny_unknown(&["type", "id", "call_id", "output", "status"])?;
            item.string("id")?;
            item.string("status")?;
            let output = match item.required("output")? {
                Value::String(text) => text.clone(),
                Value::Array(parts) => text_parts(&item.param("output"), parts)?,
                other => {
                    let param = item.param("output");
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!(
                            "Invalid type for '{param}': expected a string or an array of input_text parts, but got {} instead.",
                            validate::kind(other)
                        ),
                    ));
                }
            };
            Ok(Some(Item::FunctionCallOutput {
                call_id: item.required_string("call_id")?.to_owned(),
                output,
            }))
        }
        // Reasoning from an earlier turn comes back to the server; these models write none.
        "reasoning" => Ok(None),
        "mcp_list_tools" | "mcp_call" | "mcp_approval_request" | "mcp_approval_response" => {
            super::hosted::input_item(kind, &item).map(Some)
        }
        other => {
            let param = item.param("type");
            Err(ApiError::invalid(
                param.clone(),
                format!("Invalid value for '{param}': '{other}' items are not supported by this server; send 'message', 'function_call', 'function_call_output' or MCP items."),
            ))
        }
    }
}

fn message(item: &Fields<'_>) -> Result<Item> {
    item.deny_unknown(&["type", "id", "role", "content", "status"])?;
    item.string("id")?;
    item.string("status")?;
    let role = match item.required_string("role")? {
        "user" => "user",
        "assistant" => "assistant",
        "system" | "developer" => "system",
        other => {
            let param = item.param("role");
            return Err(ApiError::invalid(
                param.clone(),
                format!("Invalid value for '{param}': '{other}'. Supported values are: 'user', 'assistant', 'system' and 'developer'."),
            ));
        }
    };
    let content = match item.required("content")? {
        Value::String(text) => text.clone(),
        Value::Array(parts) => text_parts(&item.param("content"), parts)?,
        other => {
            let param = item.param("content");
            return Err(ApiError::invalid(
                param.clone(),
                format!(
                    "Invalid type for '{param}': expected a string or an array of content parts, but got {} instead.",
                    validate::kind(other)
                ),
            ));
        }
    };
    Ok(Item::Message {
        role: role.into(),
        content,
    })
}

/// `input_text` / `output_text` parts joined with newlines; other part types are refused.
fn text_parts(base: &str, parts: &[Value]) -> Result<String> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part = validate::object_item(part, format!("{base}[{j}]"))?;
        match part.required_string("type")? {
            "input_text" | "output_text" | "text" => {
                part.deny_unknown(&["type", "text", "annotations", "logprobs"])?;
                texts.push(part.required_string("text")?);
            }
            other => {
                let param = part.param("type");
                return Err(ApiError::invalid(
                    param,
                    format!("Content parts of type '{other}' are not supported yet by this server; only text parts are."),
                ));
            }
        }
    }
    Ok(texts.join("\n"))
}

/// The chat messages of a conversation: `instructions` first, then the earlier turns
/// (`previous`, already checked), then this request's `input` (errors name `input[i]`).
/// Consecutive calls join one assistant message; each output must answer an earlier call.
pub fn chat_messages(
    instructions: Option<&str>,
    previous: &[Item],
    input: &[Item],
) -> Result<Vec<ChatMessage>> {
    let mut out = Vec::with_capacity(previous.len() + input.len() + 1);
    if let Some(text) = instructions {
        out.push(ChatMessage::text("system", text));
    }
    let mut calls: HashSet<&str> = HashSet::new();
    let all = previous
        .iter()
        .map(|item| (None, item))
        .chain(input.iter().enumerate().map(|(i, item)| (Some(i), item)));
    for (index, item) in all {
        match item {
            Item::Message { role, content } => out.push(ChatMessage::text(role, content)),
            Item::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                let arguments = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                let call = ToolCall::function(call_id.clone(), name.clone(), arguments);
                calls.insert(call_id);
                match out.last_mut() {
                    Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                    _ => out.push(ChatMessage {
                        role: "assistant".into(),
                        tool_calls: vec![call],
                        ..ChatMessage::default()
                    }),
                }
            }
            Item::FunctionCallOutput { call_id, output } => {
                if !calls.contains(call_id.as_str()) {
                    let param = match index {
                        Some(i) => format!("input[{i}].call_id"),
                        None => "previous_response_id".into(),
                    };
                    return Err(ApiError::invalid(
                        param,
                        format!("No tool call found for function call output with call_id '{call_id}': send the 'function_call' item it answers first (or continue from the response that made it with 'previous_response_id')."),
                    ));
                }
                out.push(ChatMessage {
                    role: "tool".into(),
                    content: output.clone(),
                    tool_call_id: Some(call_id.clone()),
                    ..ChatMessage::default()
                });
            }
            Item::McpCall {
                id,
                name,
                arguments,
                output,
                error,
                ..
            } => {
                let arguments = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                let call = ToolCall::function(id.clone(), name.clone(), arguments);
                match out.last_mut() {
                    Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                    _ => out.push(ChatMessage {
                        role: "assistant".into(),
                        tool_calls: vec![call],
                        ..ChatMessage::default()
                    }),
                }
                out.push(ChatMessage {
                    role: "tool".into(),
                    content: super::hosted::call_result_text(output.as_deref(), error.as_ref()),
                    tool_call_id: Some(id.clone()),
                    ..ChatMessage::default()
                });
            }
            // What the tools were and what waits for approval is not conversation.
            Item::McpListTools { .. }
            | Item::McpApprovalRequest { .. }
            | Item::McpApprovalResponse { .. } => {}
        }
    }
    Ok(out)
}
