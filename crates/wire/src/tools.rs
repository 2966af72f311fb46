//! Tool calling on `/v1/chat/completions`: `tools`, `tool_choice`, `parallel_tool_calls`, the
//! tool fields of messages, and the `tool_calls` of answers.
//!
//! `tool_choice: "none"` offers the model no tools; `"auto"` lets it decide; `"required"` and a
//! named function make the answer a call (the engine constrains its decoding to valid calls of
//! the offered tools). `parallel_tool_calls: false` allows one call per answer. `strict` is
//! accepted either way: the engine enforces every schema it accepts, and refuses (400) the
//! keywords it cannot enforce.

use std::collections::HashSet;

use backend::{FunctionSpec, Tool, ToolCall, ToolChoice};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Result};
use crate::validate::{self, Fields};

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;
/// Largest JSON of one schema (a tool's `parameters`, a `response_format`'s schema), and
/// deepest nesting.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// What a request offers the model to call.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// None without `tools` or with `tool_choice: "none"`.
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

impl Default for Offer {
    /// No tools (as OpenAI, parallel calls allowed once some are offered).
    fn default() -> Self {
        Self {
            tools: Vec::new(),
            choice: ToolChoice::Auto,
            parallel: true,
        }
    }
}

/// The tools a request offers the model, and whether it must call one.
pub fn parse(fields: &Fields<'_>) -> Result<Offer> {
    let tools = match fields.array("tools")? {
        Some(items) => tools(fields, items)?,
        None => Vec::new(),
    };
    let parallel = fields.bool("parallel_tool_calls")?.unwrap_or(true);
    let offer = |tools, choice| Offer {
        tools,
        choice,
        parallel,
    };
    match fields.get("tool_choice") {
        None | Some(Value::Null) => Ok(offer(tools, ToolChoice::Auto)),
        Some(Value::String(choice)) if choice == "none" => Ok(offer(Vec::new(), ToolChoice::Auto)),
        Some(Value::String(choice)) if choice == "auto" => {
            require_tools(&tools)?;
            Ok(offer(tools, ToolChoice::Auto))
        }
        Some(Value::String(choice)) if choice == "required" => {
            require_tools(&tools)?;
            Ok(offer(tools, ToolChoice::Required))
        }
        Some(Value::Object(choice)) => {
            require_tools(&tools)?;
            let choice = Fields::nested(choice, "tool_choice".into());
            let name = choice
                .object("function")?
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "tool_choice",
                        "Invalid 'tool_choice': expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}.",
                    )
                })?;
            if !tools.iter().any(|t| t.function.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("Invalid 'tool_choice': no tool named '{name}' is in 'tools'."),
                ));
            }
            let name = name.to_owned();
            Ok(offer(tools, ToolChoice::Function(name)))
        }
        Some(other) => Err(ApiError::invalid(
            "tool_choice",
            format!(
                "Invalid 'tool_choice': expected \"none\", \"auto\", \"required\" or an object, but got {}.",
                validate::kind(other)
            ),
        )),
    }
}

fn require_tools(tools: &[Tool]) -> Result<()> {
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "'tool_choice' is only allowed when 'tools' are specified.",
        ));
    }
    Ok(())
}

fn tools(fields: &Fields<'_>, items: &[Value]) -> Result<Vec<Tool>> {
    if items.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "Invalid 'tools': {} tools, at most {MAX_TOOLS} are allowed.",
                items.len()
            ),
        ));
    }
    let mut names = HashSet::new();
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", fields.param("tools"));
        let map = item.as_object().ok_or_else(|| {
            ApiError::invalid(
                path.clone(),
                format!("Invalid '{path}': expected an object."),
            )
        })?;
        let tool = Fields::nested(map, path.clone());
        tool.deny_unknown(&["type", "function"])?;
        if tool.required_string("type")? != "function" {
            let param = tool.param("type");
            return Err(ApiError::invalid(
                param.clone(),
                format!("Invalid '{param}': only 'function' tools are supported."),
            ));
        }
        let function = tool.object("function")?.ok_or_else(|| {
            ApiError::invalid(
                tool.param("function"),
                "Missing required parameter: 'function'.",
            )
        })?;
        let function = Fields::nested(function, tool.param("function"));
        function.deny_unknown(&["name", "description", "parameters", "strict"])?;
        function.bool("strict")?;
        tools.push(declared(&function, "parameters", &mut names)?);
    }
    Ok(tools)
}

/// One declared function: `name` (unique among `names`), `description` and its parameters'
/// JSON Schema under `schema_key` (an object schema; `{}` properties when absent).
pub fn declared(
    function: &Fields<'_>,
    schema_key: &str,
    names: &mut HashSet<String>,
) -> Result<Tool> {
    let name = checked_name(function, "name")?;
    if !names.insert(name.to_owned()) {
        return Err(ApiError::invalid(
            function.param("name"),
            format!("Invalid 'tools': the name '{name}' is used by two tools."),
        ));
    }
    let parameters = match function.object(schema_key)? {
        Some(schema) => schema_checked(&function.param(schema_key), schema)?,
        None => json!({ "type": "object", "properties": {} }),
    };
    Ok(Tool {
        r#type: "function",
        function: FunctionSpec {
            name: name.to_owned(),
            description: function.string("description")?.map(str::to_owned),
            parameters,
        },
    })
}

/// The string under `key`, a valid function (or schema) name.
pub fn checked_name<'a>(fields: &Fields<'a>, key: &str) -> Result<&'a str> {
    let name = fields.required_string(key)?;
    if !valid_name(name) {
        let param = fields.param(key);
        return Err(ApiError::invalid(
            param.clone(),
            format!("Invalid '{param}': '{name}' must be 1 to 64 characters of a-z, A-Z, 0-9, '_' and '-'."),
        ));
    }
    Ok(name)
}

pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A tool's JSON Schema within the size and depth bounds.
fn schema_checked(param: &str, schema: &Map<String, Value>) -> Result<Value> {
    let value = bounded_schema(param, schema)?;
    if let Some(kind) = schema.get("type") {
        if kind != "object" {
            return Err(ApiError::invalid(
                param,
                format!(
                    "Invalid '{param}': a function's parameters must be a schema of type 'object'."
                ),
            ));
        }
    }
    Ok(value)
}

/// A JSON Schema within the size and depth bounds (what it may contain is the backend's to
/// say: the engine refuses keywords it cannot enforce, an upstream server its own).
pub fn bounded_schema(param: &str, schema: &Map<String, Value>) -> Result<Value> {
    let value = Value::Object(schema.clone());
    if value.to_string().len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid(
            param,
            format!("Invalid '{param}': the schema is larger than {MAX_SCHEMA_BYTES} bytes."),
        ));
    }
    if depth(&value) > MAX_SCHEMA_DEPTH {
        return Err(ApiError::invalid(
            param,
            format!("Invalid '{param}': the schema nests deeper than {MAX_SCHEMA_DEPTH} levels."),
        ));
    }
    Ok(value)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// An assistant message's `tool_calls`, each `{"id", "type": "function", "function": {"name",
/// "arguments"}}` with the arguments a JSON object in a string (as OpenAI sends them).
pub fn message_calls(fields: &Fields<'_>) -> Result<Vec<ToolCall>> {
    let Some(items) = fields.array("tool_calls")? else {
        return Ok(Vec::new());
    };
    let mut calls = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", fields.param("tool_calls"));
        let map = item.as_object().ok_or_else(|| {
            ApiError::invalid(
                path.clone(),
                format!("Invalid '{path}': expected an object."),
            )
        })?;
        let call = Fields::nested(map, path);
        call.deny_unknown(&["id", "type", "function", "index"])?;
        let id = call.required_string("id")?.to_owned();
        let function = call.object("function")?.ok_or_else(|| {
            ApiError::invalid(
                call.param("function"),
                "Missing required parameter: 'function'.",
            )
        })?;
        let function = Fields::nested(function, call.param("function"));
        function.deny_unknown(&["name", "arguments"])?;
        let name = function.required_string("name")?.to_owned();
        let raw = function.string("arguments")?.unwrap_or("{}");
        let arguments = match serde_json::from_str::<Value>(raw) {
            Ok(object @ Value::Object(_)) => object,
            _ => {
                let param = function.param("arguments");
                return Err(ApiError::invalid(
                    param.clone(),
                    format!("Invalid '{param}': expected a JSON object in a string."),
                ));
            }
        };
        calls.push(ToolCall::function(id, name, arguments));
    }
    Ok(calls)
}

/// A tool call in an answer.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallView {
    pub id: String,
    pub r#type: &'static str,
    pub function: FunctionView,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionView {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

impl ToolCallView {
    pub fn new(id: String, name: String, arguments: String) -> Self {
        Self {
            id,
            r#type: "function",
            function: FunctionView { name, arguments },
        }
    }
}
