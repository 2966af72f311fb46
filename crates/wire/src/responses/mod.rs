//! OpenAI's Responses API (`POST /v1/responses`): request parsing. The conversation becomes the
//! same chat messages chat completions send (one conversation type, one serving path); `items`
//! reads the input items, `view` writes the response object and its typed stream events.
//!
//! Accepted and honoured: `model`, `input`, `instructions`, `tools` (function tools),
//! `tool_choice`, `parallel_tool_calls`, `text.format`, `temperature`, `top_p`,
//! `max_output_tokens`, `store`, `previous_response_id`, `metadata`, `stream`. Accepted as
//! documented no-ops: `include` (nothing it names is produced but logprobs, which is refused),
//! `truncation` (a conversation that does not fit is a 400 either way), `prompt_cache_key`
//! (every prompt prefix is cached), `reasoning` (these models write no separate reasoning),
//! `user`, `safety_identifier`, `service_tier`, `stream_options`, `max_tool_calls`,
//! `top_logprobs: 0`, `background: false`. `mcp` tools are run by Flywheel (`hosted`;
//! `max_tool_calls` bounds their calls). Refused by name: what would change the answer and is
//! not implemented (`background`, `conversation`, `prompt`, logprobs, other built-in tools).

pub mod hosted;
pub mod items;
pub mod view;

use std::collections::HashSet;

use backend::{OutputFormat, SamplingParams, ToolChoice};
use serde_json::{json, Map, Value};

use super::tools::{self, Offer};
use crate::error::{ApiError, Result};
use crate::validate::{self, is_false, never, Fields, NumberRange, Refused};
use items::Item;

const ACCEPTED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "temperature",
    "top_p",
    "max_output_tokens",
    "store",
    "previous_response_id",
    "metadata",
    "stream",
    "stream_options",
    "include",
    "truncation",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning",
    "user",
    "safety_identifier",
    "service_tier",
    "max_tool_calls",
];

const REFUSED: &[Refused] = &[
    Refused {
        key: "background",
        is_noop: is_false,
    },
    Refused {
        key: "conversation",
        is_noop: never,
    },
    Refused {
        key: "prompt",
        is_noop: never,
    },
    Refused {
        key: "top_logprobs",
        is_noop: is_zero,
    },
];

fn is_zero(v: &Value) -> bool {
    v.as_u64() == Some(0)
}

/// Most metadata pairs, as OpenAI allows.
const MAX_METADATA: usize = 16;

/// A `/v1/responses` request that passed validation; the conversation is built once the
/// previous response (if any) is read.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    pub instructions: Option<String>,
    pub input: Vec<Item>,
    pub previous_response_id: Option<String>,
    pub store: bool,
    pub stream: bool,
    pub sampling: SamplingParams,
    pub max_output_tokens: Option<u32>,
    pub tools: Offer,
    /// `mcp` tools: servers Flywheel calls for the model.
    pub mcp: Vec<hosted::McpTool>,
    /// `tool_choice: {"type": "mcp", "server_label", "name"?}`: the first turn calls a tool of
    /// that server (that tool, if named).
    pub mcp_choice: Option<(String, Option<String>)>,
    /// Most MCP calls the response makes (`max_tool_calls`).
    pub max_tool_calls: Option<u32>,
    pub format: OutputFormat,
    /// What the response object echoes of the request (`tools`, `tool_choice`, `text`,
    /// `metadata`, …), as sent or defaulted.
    pub echo: Map<String, Value>,
}

/// Parses and validates a Responses request body.
pub fn parse(body: &[u8]) -> Result<ResponsesRequest> {
    let map = validate::parse_object(body)?;
    let fields = Fields::root(&map);
    validate::deny_refused(&fields, REFUSED)?;
    let refused: Vec<&str> = REFUSED.iter().map(|r| r.key).collect();
    let allowed: Vec<&str> = ACCEPTED.iter().copied().chain(refused).collect();
    fields.deny_unknown(&allowed)?;

    let model = fields.required_string("model")?.to_owned();
    let input = items::input(&fields)?;
    let instructions = fields.string("instructions")?.map(str::to_owned);
    let Offered {
        offer,
        mcp,
        mcp_choice,
        echo: tools_echo,
    } = offer(&fields)?;
    let (format, text) = text(&fields)?;
    include(&fields)?;
    let metadata = metadata(&fields)?;
    fields.strings(&[
        "prompt_cache_key",
        "user",
        "safety_identifier",
        "service_tier",
        "prompt_cache_retention",
    ])?;
    fields.object("reasoning")?;
    let max_tool_calls = fields
        .integer("max_tool_calls", 1, i64::from(u32::MAX))?
        .and_then(|m| u32::try_from(m).ok());
    let truncation = match fields.string("truncation")? {
        None | Some("disabled") => "disabled",
        Some("auto") => "auto",
        Some(other) => {
            return Err(ApiError::invalid(
                "truncation",
                format!("Invalid value for 'truncation': '{other}'. Supported values are: 'auto' and 'disabled'."),
            ))
        }
    };
    let stream = fields.bool("stream")?.unwrap_or(false);
    if let Some(options) = fields.object("stream_options")? {
        if !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ));
        }
        let options = Fields::nested(options, "stream_options".into());
        options.deny_unknown(&["include_obfuscation"])?;
        options.bool("include_obfuscation")?;
    }
    let defaults = SamplingParams::default();
    let temperature = fields.number(
        "temperature",
        NumberRange {
            min: 0.0,
            min_inclusive: true,
            max: 2.0,
        },
    )?;
    let top_p = fields.number(
        "top_p",
        NumberRange {
            min: 0.0,
            min_inclusive: false,
            max: 1.0,
        },
    )?;
    let sampling = SamplingParams {
        temperature: temperature.map_or(defaults.temperature, |x| x as f32),
        top_p: top_p.map_or(defaults.top_p, crate::validate::top_p),
        ..defaults
    };
    let max_output_tokens = fields
        .integer("max_output_tokens", 1, i64::from(u32::MAX))?
        .and_then(|m| u32::try_from(m).ok());
    let store = fields.bool("store")?.unwrap_or(true);
    let previous_response_id = fields.string("previous_response_id")?.map(str::to_owned);

    let mut echo = Map::new();
    echo.insert("instructions".into(), json!(instructions));
    echo.insert("max_output_tokens".into(), json!(max_output_tokens));
    echo.insert("metadata".into(), Value::Object(metadata));
    echo.insert("parallel_tool_calls".into(), json!(offer.parallel));
    echo.insert("previous_response_id".into(), json!(previous_response_id));
    echo.insert(
        "reasoning".into(),
        json!({ "effort": null, "summary": null }),
    );
    echo.insert("store".into(), json!(store));
    echo.insert("temperature".into(), json!(sampling.temperature));
    echo.insert("text".into(), text);
    echo.insert(
        "tool_choice".into(),
        fields.get("tool_choice").cloned().unwrap_or(json!("auto")),
    );
    echo.insert("tools".into(), Value::Array(tools_echo));
    echo.insert("top_p".into(), json!(sampling.top_p));
    echo.insert("truncation".into(), json!(truncation));
    echo.insert("user".into(), json!(fields.string("user")?));
    Ok(ResponsesRequest {
        model,
        instructions,
        input,
        previous_response_id,
        store,
        stream,
        sampling,
        max_output_tokens,
        tools: offer,
        mcp,
        mcp_choice,
        max_tool_calls,
        format,
        echo,
    })
}

/// A function tool as the response object lists it.
fn function_echo(t: &backend::Tool) -> Value {
    json!({
        "type": "function", "name": t.function.name,
        "description": t.function.description,
        "parameters": t.function.parameters, "strict": true,
    })
}

/// `tools`, `tool_choice` and `parallel_tool_calls`, read.
struct Offered {
    offer: Offer,
    mcp: Vec<hosted::McpTool>,
    mcp_choice: Option<(String, Option<String>)>,
    /// The tools as the response object lists them, in order.
    echo: Vec<Value>,
}

/// `include`: a list of extra outputs; logprobs would change the answer and are refused.
fn include(fields: &Fields<'_>) -> Result<()> {
    let Some(items) = fields.array("include")? else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let param = format!("include[{i}]");
        match item.as_str() {
            Some("message.output_text.logprobs") => return Err(validate::unsupported(&param)),
            Some(_) => {}
            None => {
                return Err(ApiError::invalid(
                    param.clone(),
                    format!("Invalid type for '{param}': expected a string."),
                ))
            }
        }
    }
    Ok(())
}

fn metadata(fields: &Fields<'_>) -> Result<Map<String, Value>> {
    let Some(map) = fields.object("metadata")? else {
        return Ok(Map::new());
    };
    if map.len() > MAX_METADATA {
        return Err(ApiError::invalid(
            "metadata",
            format!("Invalid 'metadata': at most {MAX_METADATA} keys are allowed."),
        ));
    }
    let metadata = Fields::nested(map, "metadata".into());
    for key in map.keys() {
        let value = metadata.string(key)?.unwrap_or_default();
        if key.len() > 64 || value.len() > 512 {
            return Err(ApiError::invalid(
                metadata.param(key),
                "Invalid 'metadata': keys are at most 64 characters and values at most 512.",
            ));
        }
    }
    Ok(map.clone())
}

/// `tools` (function tools, flat: `{"type": "function", "name", "description", "parameters",
/// "strict"}`, and `mcp` tools), `tool_choice` and `parallel_tool_calls`.
fn offer(fields: &Fields<'_>) -> Result<Offered> {
    let mut declared = Vec::new();
    let mut mcp = Vec::new();
    let mut echo = Vec::new();
    let mut labels = HashSet::new();
    if let Some(items) = fields.array("tools")? {
        if items.len() > tools::MAX_TOOLS {
            return Err(ApiError::invalid(
                "tools",
                format!(
                    "Invalid 'tools': at most {} tools are allowed.",
                    tools::MAX_TOOLS
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let tool = validate::object_item(item, format!("tools[{i}]"))?;
            match tool.required_string("type")? {
                "function" => {}
                "mcp" => {
                    if mcp.len() == hosted::MAX_SERVERS {
                        return Err(ApiError::invalid(
                            "tools",
                            format!(
                                "Invalid 'tools': at most {} 'mcp' tools are allowed.",
                                hosted::MAX_SERVERS
                            ),
                        ));
                    }
                    let (parsed, view) = hosted::tool(&tool, &mut labels)?;
                    mcp.push(parsed);
                    echo.push(view);
                    continue;
                }
                other => {
                    let param = tool.param("type");
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!("Invalid value for '{param}': '{other}' tools are not available on this server; only 'function' and 'mcp' tools are."),
                    ));
                }
            }
            tool.deny_unknown(&["type", "name", "description", "parameters", "strict"])?;
            tool.bool("strict")?;
            let function = tools::declared(&tool, "parameters", &mut names)?;
            echo.push(function_echo(&function));
            declared.push(function);
        }
    }
    let parallel = fields.bool("parallel_tool_calls")?.unwrap_or(true);
    let mut offer = Offer {
        tools: declared,
        choice: ToolChoice::Auto,
        parallel,
    };
    let mut mcp_choice = None;
    let has_mcp = !mcp.is_empty();
    let needs_tools = |offer: &Offer| {
        if offer.tools.is_empty() && !has_mcp {
            Err(ApiError::invalid(
                "tool_choice",
                "Tool choice requires 'tools' to be specified.",
            ))
        } else {
            Ok(())
        }
    };
    match fields.get("tool_choice") {
        None => {}
        Some(Value::String(choice)) => match choice.as_str() {
            "none" => {
                offer.tools.clear();
                mcp.clear();
            }
            "auto" => {}
            "required" => {
                needs_tools(&offer)?;
                offer.choice = ToolChoice::Required;
            }
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("Invalid value for 'tool_choice': '{other}'. Supported values are: 'none', 'auto' and 'required', or a function."),
                ))
            }
        },
        Some(Value::Object(choice)) => {
            let choice = Fields::nested(choice, "tool_choice".into());
            match choice.required_string("type")? {
                "function" => {}
                "mcp" => {
                    choice.deny_unknown(&["type", "server_label", "name"])?;
                    let label = choice.required_string("server_label")?;
                    if !labels.contains(label) {
                        return Err(ApiError::invalid(
                            "tool_choice.server_label",
                            format!("Invalid 'tool_choice.server_label': no 'mcp' tool in 'tools' is labelled '{label}'."),
                        ));
                    }
                    let name = choice.string("name")?.map(str::to_owned);
                    mcp_choice = Some((label.to_owned(), name));
                    offer.choice = ToolChoice::Required;
                    return Ok(Offered { offer, mcp, mcp_choice, echo });
                }
                other => {
                    return Err(ApiError::invalid(
                        "tool_choice.type",
                        format!("Invalid value for 'tool_choice.type': '{other}'; 'function' and 'mcp' are supported by this server."),
                    ))
                }
            }
            choice.deny_unknown(&["type", "name"])?;
            needs_tools(&offer)?;
            let name = choice.required_string("name")?;
            if !offer.tools.iter().any(|t| t.function.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.name",
                    format!("Invalid 'tool_choice.name': no tool named '{name}' is in 'tools'."),
                ));
            }
            offer.choice = ToolChoice::Function(name.to_owned());
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "tool_choice",
                format!(
                    "Invalid type for 'tool_choice': expected a string or an object, but got {} instead.",
                    validate::kind(other)
                ),
            ))
        }
    }
    Ok(Offered {
        offer,
        mcp,
        mcp_choice,
        echo,
    })
}

/// `text.format`: `text`, `json_object` or `json_schema` (`name`, `schema`, `description`,
/// `strict`, flat). Also what the response echoes as `text`.
fn text(fields: &Fields<'_>) -> Result<(OutputFormat, Value)> {
    let Some(text) = fields.object("text")? else {
        return Ok((OutputFormat::Text, json!({ "format": { "type": "text" } })));
    };
    let text_fields = Fields::nested(text, "text".into());
    text_fields.deny_unknown(&["format", "verbosity"])?;
    text_fields.string("verbosity")?;
    let Some(format) = text_fields.object("format")? else {
        return Ok((OutputFormat::Text, json!({ "format": { "type": "text" } })));
    };
    let spec = Fields::nested(format, "text.format".into());
    let parsed = match spec.required_string("type")? {
        "text" => {
            spec.deny_unknown(&["type"])?;
            OutputFormat::Text
        }
        "json_object" => {
            spec.deny_unknown(&["type"])?;
            OutputFormat::JsonObject
        }
        "json_schema" => {
            spec.deny_unknown(&["type", "name", "schema", "description", "strict"])?;
            tools::checked_name(&spec, "name")?;
            spec.string("description")?;
            spec.bool("strict")?;
            let schema = spec.object("schema")?.ok_or_else(|| {
                ApiError::invalid(
                    "text.format.schema",
                    "Missing required parameter: 'text.format.schema'.",
                )
            })?;
            OutputFormat::JsonSchema(tools::bounded_schema("text.format.schema", schema)?)
        }
        other => {
            return Err(ApiError::invalid(
                "text.format.type",
                format!("Invalid value for 'text.format.type': '{other}'. Supported values are: 'text', 'json_object' and 'json_schema'."),
            ))
        }
    };
    Ok((parsed, Value::Object(text.clone())))
}

#[cfg(test)]
mod tests;
