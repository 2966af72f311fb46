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
//! `top_logprobs: 0`, `background: false`. Refused by name: what would change the answer and
//! is not implemented (`background`, `conversation`, `prompt`, logprobs, non-function tools).

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
    let offer = offer(&fields)?;
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
    fields.integer("max_tool_calls", 1, i64::MAX)?;
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
    echo.insert("tools".into(), tools_echo(&offer));
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
        format,
        echo,
    })
}

/// The function tools as the response object lists them.
fn tools_echo(offer: &Offer) -> Value {
    Value::Array(
        offer
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function", "name": t.function.name,
                    "description": t.function.description,
                    "parameters": t.function.parameters, "strict": true,
                })
            })
            .collect(),
    )
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
/// "strict"}`), `tool_choice` and `parallel_tool_calls`.
fn offer(fields: &Fields<'_>) -> Result<Offer> {
    let mut declared = Vec::new();
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
                    return Err(ApiError::invalid(
                        tool.param("type"),
                        format!("'mcp' tools are not supported yet by this server ({}): declare the MCP server's tools as function tools.", tool.param("type")),
                    ))
                }
                other => {
                    let param = tool.param("type");
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!("Invalid value for '{param}': '{other}' tools are not available on this server; only 'function' tools are."),
                    ));
                }
            }
            tool.deny_unknown(&["type", "name", "description", "parameters", "strict"])?;
            tool.bool("strict")?;
            declared.push(tools::declared(&tool, "parameters", &mut names)?);
        }
    }
    let parallel = fields.bool("parallel_tool_calls")?.unwrap_or(true);
    let mut offer = Offer {
        tools: declared,
        choice: ToolChoice::Auto,
        parallel,
    };
    let needs_tools = |offer: &Offer| {
        if offer.tools.is_empty() {
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
            "none" => offer.tools.clear(),
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
                other => {
                    return Err(ApiError::invalid(
                        "tool_choice.type",
                        format!("Invalid value for 'tool_choice.type': '{other}'; only 'function' is supported by this server."),
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
    Ok(offer)
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
