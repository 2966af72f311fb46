//! The Responses API's `mcp` tools (servers Flywheel calls for the model): the tool entries
//! (`server_label`, `server_url` or a registered server, `headers`, `authorization`,
//! `allowed_tools`, `require_approval`, `server_description`), the MCP input items a client
//! sends back (`mcp_list_tools`, `mcp_call`, `mcp_approval_request`, `mcp_approval_response`),
//! and the output items and stream events of the loop (`response.mcp_list_tools.*`,
//! `response.mcp_call_arguments.*`, `response.mcp_call.*`).

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::items::Item;
use super::view::ResponseEvents;
use crate::error::{ApiError, Result};
use crate::validate::{self, Fields};

/// Most `mcp` tools in one request.
pub const MAX_SERVERS: usize = 8;

/// One `mcp` tool of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    pub label: String,
    /// `None`: the registered server named `label`.
    pub url: Option<String>,
    pub headers: Vec<(String, String)>,
    pub allowed: Filter,
    pub approval: Approval,
    /// `tools[i]`, for errors about this server.
    pub param: String,
}

/// Which tools a filter matches: by name and/or by the `readOnlyHint` annotation; the empty
/// filter matches every tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub names: Option<Vec<String>>,
    pub read_only: Option<bool>,
}

impl Filter {
    pub fn matches(&self, name: &str, read_only: bool) -> bool {
        self.names
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
            && self.read_only.is_none_or(|want| want == read_only)
    }

    fn parse(value: &Value, param: &str) -> Result<Filter> {
        match value {
            Value::Null => Ok(Filter::default()),
            Value::Array(names) => Ok(Filter {
                names: Some(names_of(names, param)?),
                read_only: None,
            }),
            Value::Object(map) => {
                let fields = Fields::nested(map, param.to_owned());
                fields.deny_unknown(&["tool_names", "read_only"])?;
                let names = match fields.array("tool_names")? {
                    Some(names) => Some(names_of(names, &fields.param("tool_names"))?),
                    None => None,
                };
                Ok(Filter {
                    names,
                    read_only: fields.bool("read_only")?,
                })
            }
            other => Err(ApiError::invalid(
                param,
                format!(
                    "Invalid type for '{param}': expected a list of tool names or a filter object, but got {} instead.",
                    validate::kind(other)
                ),
            )),
        }
    }
}

fn names_of(values: &[Value], param: &str) -> Result<Vec<String>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                ApiError::invalid(
                    format!("{param}[{i}]"),
                    format!("Invalid '{param}[{i}]': expected a tool name (a string)."),
                )
            })
        })
        .collect()
}

/// `require_approval`: `"always"` (OpenAI's default), `"never"`, or filters naming the tools
/// that never (or always) need approval; a tool neither filter matches needs approval unless
/// only `always` was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub always: Option<Filter>,
    pub never: Option<Filter>,
}

impl Approval {
    pub const ALWAYS: Approval = Approval {
        always: Some(Filter {
            names: None,
            read_only: None,
        }),
        never: None,
    };

    /// Whether calling `name` waits for the client's approval.
    pub fn needed(&self, name: &str, read_only: bool) -> bool {
        if self
            .never
            .as_ref()
            .is_some_and(|f| f.matches(name, read_only))
        {
            return false;
        }
        match &self.always {
            Some(filter) => filter.matches(name, read_only) || self.never.is_some(),
            None => true,
        }
    }

    fn parse(value: Option<&Value>, param: &str) -> Result<Approval> {
        match value {
            None | Some(Value::Null) => Ok(Approval::ALWAYS),
            Some(Value::String(s)) if s == "always" => Ok(Approval::ALWAYS),
            Some(Value::String(s)) if s == "never" => Ok(Approval {
                always: None,
                never: Some(Filter::default()),
            }),
            Some(Value::Object(map)) => {
                let fields = Fields::nested(map, param.to_owned());
                fields.deny_unknown(&["always", "never"])?;
                let parse = |key: &str| {
                    fields
                        .get(key)
                        .filter(|v| !v.is_null())
                        .map(|v| Filter::parse(v, &fields.param(key)))
                        .transpose()
                };
                Ok(Approval {
                    always: parse("always")?,
                    never: parse("never")?,
                })
            }
            Some(other) => Err(ApiError::invalid(
                param,
                format!(
                    "Invalid value for '{param}': expected 'always', 'never' or a filter object, but got {}.",
                    other
                ),
            )),
        }
    }
}

/// One `{"type": "mcp", …}` entry of `tools`; `labels` keeps labels unique.
pub fn tool(tool: &Fields<'_>, labels: &mut HashSet<String>) -> Result<(McpTool, Value)> {
    tool.deny_unknown(&[
        "type",
        "server_label",
        "server_url",
        "server_description",
        "headers",
        "authorization",
        "allowed_tools",
        "require_approval",
        "connector_id",
        "defer_loading",
    ])?;
    if tool.get("connector_id").is_some() {
        let param = tool.param("connector_id");
        return Err(ApiError::invalid(
            param.clone(),
            format!("'{param}': OpenAI's service connectors are not available on this server; give a 'server_url' or the name of a registered MCP server as 'server_label'."),
        ));
    }
    let label = tool.required_string("server_label")?;
    if !crate::tools::valid_name(label) {
        let param = tool.param("server_label");
        return Err(ApiError::invalid(
            param.clone(),
            format!("Invalid '{param}': '{label}' must be 1 to 64 characters of a-z, A-Z, 0-9, '_' and '-'."),
        ));
    }
    if !labels.insert(label.to_owned()) {
        let param = tool.param("server_label");
        return Err(ApiError::invalid(
            param.clone(),
            format!("Invalid '{param}': two 'mcp' tools are labelled '{label}'."),
        ));
    }
    let url = tool.string("server_url")?.map(str::to_owned);
    tool.string("server_description")?;
    tool.bool("defer_loading")?;
    let mut headers = Vec::new();
    if let Some(map) = tool.object("headers")? {
        let fields = Fields::nested(map, tool.param("headers"));
        for key in map.keys() {
            let value = fields.string(key)?.unwrap_or_default();
            headers.push((key.clone(), value.to_owned()));
        }
    }
    if let Some(token) = tool.string("authorization")? {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    if url.is_none() && !headers.is_empty() {
        let param = tool.param("headers");
        return Err(ApiError::invalid(
            param.clone(),
            format!("'{param}' and 'authorization' go with a 'server_url': a registered server sends the headers it was registered with."),
        ));
    }
    let allowed = match tool.get("allowed_tools") {
        Some(value) => Filter::parse(value, &tool.param("allowed_tools"))?,
        None => Filter::default(),
    };
    let approval = Approval::parse(
        tool.get("require_approval"),
        &tool.param("require_approval"),
    )?;
    // The echo keeps everything but secrets.
    let mut echo = Map::new();
    echo.insert("type".into(), json!("mcp"));
    echo.insert("server_label".into(), json!(label));
    echo.insert("server_url".into(), json!(url));
    echo.insert(
        "server_description".into(),
        json!(tool.string("server_description")?),
    );
    echo.insert(
        "allowed_tools".into(),
        tool.get("allowed_tools").cloned().unwrap_or(Value::Null),
    );
    echo.insert(
        "require_approval".into(),
        tool.get("require_approval")
            .cloned()
            .unwrap_or(json!("always")),
    );
    echo.insert("headers".into(), Value::Null);
    let parsed = McpTool {
        label: label.to_owned(),
        url,
        headers,
        allowed,
        approval,
        param: tool
            .param("server_label")
            .trim_end_matches(".server_label")
            .to_owned(),
    };
    Ok((parsed, Value::Object(echo)))
}

/// An MCP item in `input` (a client sending back an earlier response's output, or answering
/// an approval request).
pub fn input_item(kind: &str, item: &Fields<'_>) -> Result<Item> {
    item.string("id")?;
    item.string("status")?;
    match kind {
        "mcp_approval_response" => {
            item.deny_unknown(&["type", "id", "approval_request_id", "approve", "reason"])?;
            let approve = item.bool("approve")?.ok_or_else(|| {
                ApiError::invalid(
                    item.param("approve"),
                    format!("Missing required parameter: '{}'.", item.param("approve")),
                )
            })?;
            Ok(Item::McpApprovalResponse {
                approval_request_id: item.required_string("approval_request_id")?.to_owned(),
                approve,
                reason: item.string("reason")?.map(str::to_owned),
            })
        }
        "mcp_approval_request" => {
            item.deny_unknown(&["type", "id", "server_label", "name", "arguments"])?;
            Ok(Item::McpApprovalRequest {
                id: item.required_string("id")?.to_owned(),
                server_label: item.required_string("server_label")?.to_owned(),
                name: item.required_string("name")?.to_owned(),
                arguments: item.required_string("arguments")?.to_owned(),
            })
        }
        "mcp_list_tools" => {
            item.deny_unknown(&["type", "id", "server_label", "tools", "error"])?;
            Ok(Item::McpListTools {
                id: item.required_string("id")?.to_owned(),
                server_label: item.required_string("server_label")?.to_owned(),
                tools: Value::Array(item.required_array("tools")?.clone()),
            })
        }
        _ => {
            item.deny_unknown(&[
                "type",
                "id",
                "server_label",
                "name",
                "arguments",
                "output",
                "error",
                "status",
                "approval_request_id",
            ])?;
            Ok(Item::McpCall {
                id: item.required_string("id")?.to_owned(),
                server_label: item.required_string("server_label")?.to_owned(),
                name: item.required_string("name")?.to_owned(),
                arguments: item.required_string("arguments")?.to_owned(),
                output: item.string("output")?.map(str::to_owned),
                error: item.get("error").filter(|e| !e.is_null()).cloned(),
                approval_request_id: item.string("approval_request_id")?.map(str::to_owned),
            })
        }
    }
}

/// What the model reads of a call's result: its output, or what went wrong.
pub fn call_result_text(output: Option<&str>, error: Option<&Value>) -> String {
    match (output, error) {
        (_, Some(error)) => {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| content_text(error.get("content").unwrap_or(&Value::Null)));
            format!("Error: {message}")
        }
        (Some(output), None) => output.to_owned(),
        (None, None) => String::new(),
    }
}

/// The text of an MCP result's content blocks (other blocks named by their type).
pub fn content_text(content: &Value) -> String {
    let Some(blocks) = content.as_array() else {
        return String::new();
    };
    blocks
        .iter()
        .map(|block| match block.get("text").and_then(Value::as_str) {
            Some(text) => text.to_owned(),
            None => format!(
                "[{} content]",
                block.get("type").and_then(Value::as_str).unwrap_or("other")
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool's result as an `mcp_call` reports it: `(output, error)`.
pub fn call_outcome(
    result: std::result::Result<Value, (i64, String)>,
) -> (Option<String>, Option<Value>) {
    match result {
        Ok(result) => {
            let text = content_text(result.get("content").unwrap_or(&Value::Null));
            if result.get("isError").and_then(Value::as_bool) == Some(true) {
                let content = result.get("content").cloned().unwrap_or(json!([]));
                (
                    None,
                    Some(json!({ "type": "mcp_tool_execution_error", "content": content })),
                )
            } else if text.is_empty() {
                let structured = result
                    .get("structuredContent")
                    .cloned()
                    .unwrap_or(Value::Null);
                (
                    Some(if structured.is_null() {
                        String::new()
                    } else {
                        structured.to_string()
                    }),
                    None,
                )
            } else {
                (Some(text), None)
            }
        }
        Err((code, message)) => (
            None,
            Some(json!({ "type": "mcp_protocol_error", "code": code, "message": message })),
        ),
    }
}

/// Keywords an MCP tool's schema loses before the model sees it (the server validates the
/// arguments itself): those the grammar cannot enforce, and `format` (enforced for a few
/// values only).
fn unenforceable(key: &str) -> bool {
    backend::UNENFORCEABLE_SCHEMA_KEYWORDS.contains(&key)
        || matches!(key, "format" | "$dynamicAnchor")
}

/// An MCP tool's input schema as the model is offered it: an object schema without keywords
/// the grammar cannot enforce (`{"type": "object"}` when it is not one).
pub fn model_schema(schema: Option<&Value>) -> Value {
    fn strip(value: &mut Value, in_properties: bool) {
        match value {
            Value::Object(map) => {
                if !in_properties {
                    map.retain(|k, _| !unenforceable(k));
                }
                for (key, child) in map.iter_mut() {
                    strip(
                        child,
                        !in_properties
                            && (key == "properties" || key == "$defs" || key == "definitions"),
                    );
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| strip(v, false)),
            _ => {}
        }
    }
    match schema {
        Some(Value::Object(map)) if map.get("type").is_none_or(|t| t == "object") => {
            let mut value = Value::Object(map.clone());
            strip(&mut value, false);
            if let Value::Object(map) = &mut value {
                map.remove("$schema");
            }
            value
        }
        _ => json!({ "type": "object" }),
    }
}

fn listed_tool(tool: &Value) -> Value {
    json!({
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or(Value::Null),
        "input_schema": tool.get("inputSchema").cloned().unwrap_or(json!({ "type": "object" })),
        "annotations": tool.get("annotations").cloned().unwrap_or(Value::Null),
    })
}

/// The tools of an MCP `tools/list` that `allowed` lets through, as an `mcp_list_tools` item
/// lists them.
pub fn listed_tools(tools: &[Value], allowed: &Filter) -> Value {
    Value::Array(
        tools
            .iter()
            .filter(|tool| {
                let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
                let read_only = tool
                    .pointer("/annotations/readOnlyHint")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                allowed.matches(name, read_only)
            })
            .map(listed_tool)
            .collect(),
    )
}

/// Stream events and output items of the loop.
impl ResponseEvents {
    /// An `mcp_list_tools` item, whole.
    pub fn mcp_list_tools(&mut self, out: &mut Vec<u8>, item: Item) {
        self.close(out);
        let index = self.output.len();
        let Some(id) = item.own_id().map(str::to_owned) else {
            return;
        };
        let Item::McpListTools { server_label, .. } = &item else {
            return;
        };
        let pending = json!({
            "type": "mcp_list_tools", "id": id, "server_label": server_label, "tools": [],
            "error": null,
        });
        self.emit(
            out,
            "response.output_item.added",
            json!({ "output_index": index, "item": pending }),
        );
        let at = json!({ "item_id": id, "output_index": index });
        self.emit(out, "response.mcp_list_tools.in_progress", at.clone());
        self.emit(out, "response.mcp_list_tools.completed", at);
        self.item_done(out, index, item);
    }

    /// A call the model proposed that needs no approval: `output_item.added` and its
    /// arguments; [`Self::mcp_call_done`] follows once it ran.
    pub fn mcp_call_started(
        &mut self,
        out: &mut Vec<u8>,
        id: &str,
        label: &str,
        name: &str,
        arguments: &str,
    ) {
        self.close(out);
        let index = self.output.len();
        let pending = json!({
            "type": "mcp_call", "id": id, "status": "in_progress", "server_label": label,
            "name": name, "arguments": "", "output": null, "error": null,
            "approval_request_id": null,
        });
        self.emit(
            out,
            "response.output_item.added",
            json!({ "output_index": index, "item": pending }),
        );
        let at = json!({ "item_id": id, "output_index": index });
        let mut delta = at.clone();
        delta["delta"] = json!(arguments);
        self.emit(out, "response.mcp_call_arguments.delta", delta);
        let mut done = at.clone();
        done["arguments"] = json!(arguments);
        self.emit(out, "response.mcp_call_arguments.done", done);
        self.emit(out, "response.mcp_call.in_progress", at);
        self.calling = Some(index);
    }

    /// The call [`Self::mcp_call_started`] announced ran: `item` is its `mcp_call`.
    pub fn mcp_call_done(&mut self, out: &mut Vec<u8>, item: Item) {
        let index = self.calling.take().unwrap_or(self.output.len());
        let (Some(id), Item::McpCall { error, .. }) = (item.own_id().map(str::to_owned), &item)
        else {
            return;
        };
        let kind = if error.is_some() {
            "response.mcp_call.failed"
        } else {
            "response.mcp_call.completed"
        };
        self.emit(out, kind, json!({ "item_id": id, "output_index": index }));
        self.item_done(out, index, item);
    }

    /// An item added whole (`mcp_approval_request`).
    pub fn whole_item(&mut self, out: &mut Vec<u8>, item: Item) {
        self.close(out);
        let index = self.output.len();
        let id = item.own_id().unwrap_or_default().to_owned();
        self.emit(
            out,
            "response.output_item.added",
            json!({ "output_index": index, "item": item.view(&id) }),
        );
        self.item_done(out, index, item);
    }

    /// Conversation items that are not output (a denied call's refusal to the model).
    pub fn remember(&mut self, items: impl IntoIterator<Item = Item>) {
        self.items.extend(items);
    }

    fn item_done(&mut self, out: &mut Vec<u8>, index: usize, item: Item) {
        let id = item.own_id().unwrap_or_default().to_owned();
        let view = item.view(&id);
        self.emit(
            out,
            "response.output_item.done",
            json!({ "output_index": index, "item": view.clone() }),
        );
        self.output.push(view);
        self.items.push(item);
    }
}
