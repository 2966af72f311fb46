//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`): request
//! parsing into the same [`ValidRequest`] chat completions make (one conversation type, one
//! serving path), and in `view` the `message` object, its stream events and Anthropic's error
//! shape.
//!
//! Blocks map onto chat messages: `system` (a string or text blocks) is the system message;
//! a user message's `tool_result` blocks become `tool` messages (in order, before its text);
//! an assistant message's `tool_use` blocks become its tool calls. `cache_control` is accepted
//! anywhere and needs nothing (every prompt prefix is cached automatically); `thinking` blocks
//! sent back from earlier turns are dropped (these models write no separate thinking).

pub mod view;

use std::collections::HashSet;

use backend::{ChatMessage, OutputFormat, Prompt, SamplingParams, ToolCall, ToolChoice};
use serde_json::Value;

use super::tools::{self, Offer};
use super::ValidRequest;
use crate::error::{ApiError, Result};
use crate::validate::{self, never, Fields, NumberRange, Refused};

const ACCEPTED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
    "cache_control",
    "output_config",
    "diagnostics",
    "inference_geo",
    "speed",
    "user_profile_id",
    "workspace_id",
];

/// Fields that would change the answer and are not implemented: refused by name.
const REFUSED: &[Refused] = &[
    Refused {
        key: "mcp_servers",
        is_noop: validate::is_empty_array,
    },
    Refused {
        key: "container",
        is_noop: never,
    },
    Refused {
        key: "context_management",
        is_noop: never,
    },
];

/// `count_tokens` takes the prompt's fields only.
const COUNT_ACCEPTED: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "cache_control",
    "output_config",
    "output_format",
    "speed",
    "user_profile_id",
    "workspace_id",
];

/// Which route a body came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Create,
    CountTokens,
}

/// Parses and validates a Messages request body.
pub fn parse(body: &[u8], route: Route) -> Result<ValidRequest> {
    let map = validate::parse_object(body)?;
    let fields = Fields::root(&map);
    let refused: Vec<&str> = REFUSED.iter().map(|r| r.key).collect();
    match route {
        Route::Create => {
            validate::deny_refused(&fields, REFUSED)?;
            let allowed: Vec<&str> = ACCEPTED.iter().copied().chain(refused).collect();
            fields.deny_unknown(&allowed)?;
        }
        Route::CountTokens => fields.deny_unknown(COUNT_ACCEPTED)?,
    }
    let model = fields.required_string("model")?.to_string();
    let mut messages = system(&fields)?;
    messages.extend(conversation(&fields)?);
    let offer = offer(&fields)?;
    thinking(&fields)?;
    if let Some(metadata) = fields.object("metadata")? {
        let metadata = Fields::nested(metadata, "metadata".into());
        metadata.deny_unknown(&["user_id"])?;
        metadata.string("user_id")?;
    }
    fields.strings(&[
        "service_tier",
        "inference_geo",
        "speed",
        "user_profile_id",
        "workspace_id",
    ])?;
    fields.object("cache_control")?;
    fields.object("diagnostics")?;
    let format = output_format(&fields)?;

    let max_tokens = match route {
        Route::Create => {
            let max = fields.integer("max_tokens", 1, i64::from(u32::MAX))?;
            let max =
                max.ok_or_else(|| ApiError::invalid("max_tokens", "max_tokens: Field required"))?;
            Some(u32::try_from(max).unwrap_or(u32::MAX))
        }
        Route::CountTokens => None,
    };
    let defaults = SamplingParams::default();
    let unit = NumberRange {
        min: 0.0,
        min_inclusive: true,
        max: 1.0,
    };
    let sampling = SamplingParams {
        // Anthropic's default temperature is 1.0, its range 0 to 1.
        temperature: fields
            .number("temperature", unit)?
            .map_or(1.0, |x| x as f32),
        top_p: fields
            .number("top_p", unit)?
            .map_or(defaults.top_p, crate::validate::top_p),
        top_k: match fields.integer("top_k", 0, i64::from(i32::MAX))? {
            Some(k) => i32::try_from(k).unwrap_or(i32::MAX),
            None => defaults.top_k,
        },
        ..defaults
    };
    Ok(ValidRequest {
        model,
        prompt: Prompt::Chat(messages),
        sampling,
        max_tokens,
        stop: validate::stop(&fields, "stop_sequences")?,
        stream: fields.bool("stream")?.unwrap_or(false),
        include_usage: false,
        continuous_usage: false,
        tools: offer,
        format,
    })
}

/// `output_config` (`effort`, accepted; `format`: `{"type": "json_schema", "schema"}`,
/// enforced as `response_format` is on chat), or count_tokens' `output_format`.
fn output_format(fields: &Fields<'_>) -> Result<OutputFormat> {
    let (format, base) = match fields.object("output_config")? {
        Some(config) => {
            let config = Fields::nested(config, "output_config".into());
            config.deny_unknown(&["effort", "format"])?;
            config.string("effort")?;
            (config.object("format")?, "output_config.format")
        }
        None => (fields.object("output_format")?, "output_format"),
    };
    let Some(format) = format else {
        return Ok(OutputFormat::Text);
    };
    let format = Fields::nested(format, base.into());
    format.deny_unknown(&["type", "schema"])?;
    match format.required_string("type")? {
        "json_schema" => {}
        other => return Err(one_of(&format.param("type"), other, "'json_schema'")),
    }
    let schema = format.object("schema")?.ok_or_else(|| {
        ApiError::invalid(
            format.param("schema"),
            format!("{}: Field required", format.param("schema")),
        )
    })?;
    Ok(OutputFormat::JsonSchema(tools::bounded_schema(
        &format.param("schema"),
        schema,
    )?))
}

/// `thinking`: `{"type": "enabled", "budget_tokens"}` or `{"type": "disabled"}`. Accepted:
/// these models think, if at all, in their text.
fn thinking(fields: &Fields<'_>) -> Result<()> {
    let Some(thinking) = fields.object("thinking")? else {
        return Ok(());
    };
    let thinking = Fields::nested(thinking, "thinking".into());
    thinking.deny_unknown(&["type", "budget_tokens"])?;
    match thinking.required_string("type")? {
        "enabled" | "disabled" | "adaptive" => {}
        other => {
            return Err(one_of(
                &thinking.param("type"),
                other,
                "'enabled', 'disabled'",
            ))
        }
    }
    thinking.integer("budget_tokens", 0, i64::from(u32::MAX))?;
    Ok(())
}

fn one_of(param: &str, got: &str, expected: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!("{param}: Input should be one of {expected}, but got '{got}'."),
    )
}

/// `system`: a string or an array of text blocks.
fn system(fields: &Fields<'_>) -> Result<Vec<ChatMessage>> {
    let text = match fields.get("system") {
        None => return Ok(Vec::new()),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let block = validate::object_item(block, format!("system[{i}]"))?;
                match block.required_string("type")? {
                    "text" => texts.push(text_block(&block)?),
                    other => return Err(block_type(&block, other, "'text'")),
                }
            }
            texts.join("\n")
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "system",
                format!(
                    "system: Input should be a string or a list of text blocks, but got {}.",
                    validate::kind(other)
                ),
            ))
        }
    };
    Ok(vec![ChatMessage::text("system", text)])
}

/// A text block's text (`cache_control` and `citations` accepted).
fn text_block(block: &Fields<'_>) -> Result<String> {
    block.deny_unknown(&["type", "text", "cache_control", "citations"])?;
    block.object("cache_control")?;
    Ok(block.required_string("text")?.to_owned())
}

fn block_type(block: &Fields<'_>, got: &str, expected: &str) -> ApiError {
    let param = block.param("type");
    ApiError::invalid(
        param.clone(),
        format!("{param}: blocks of type '{got}' are not supported here; expected {expected}."),
    )
}

/// `messages`: alternating `user` and `assistant` turns of text, `tool_use` and `tool_result`
/// blocks, flattened into chat messages.
fn conversation(fields: &Fields<'_>) -> Result<Vec<ChatMessage>> {
    let items = fields.required_array("messages")?;
    if items.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages: at least one message is required.",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut calls: HashSet<String> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let message = validate::object_item(item, format!("messages[{i}]"))?;
        message.deny_unknown(&["role", "content"])?;
        let role = message.required_string("role")?;
        if role != "user" && role != "assistant" {
            return Err(one_of(&message.param("role"), role, "'user', 'assistant'"));
        }
        let blocks = match message.required("content")? {
            Value::String(text) => {
                out.push(ChatMessage::text(role, text.clone()));
                continue;
            }
            Value::Array(blocks) => blocks,
            other => {
                let param = message.param("content");
                return Err(ApiError::invalid(
                    param.clone(),
                    format!(
                        "{param}: Input should be a string or a list of content blocks, but got {}.",
                        validate::kind(other)
                    ),
                ));
            }
        };
        let mut turn = Turn::default();
        for (j, block) in blocks.iter().enumerate() {
            let block = validate::object_item(block, format!("messages[{i}].content[{j}]"))?;
            turn.add(role, &block, &mut calls)?;
        }
        out.extend(turn.into_messages(role));
    }
    Ok(out)
}

/// One message's blocks on their way to chat messages.
#[derive(Default)]
struct Turn {
    texts: Vec<String>,
    calls: Vec<ToolCall>,
    results: Vec<ChatMessage>,
}

impl Turn {
    fn add(&mut self, role: &str, block: &Fields<'_>, calls: &mut HashSet<String>) -> Result<()> {
        let kind = block.required_string("type")?;
        match (role, kind) {
            (_, "text") => self.texts.push(text_block(block)?),
            ("assistant", "tool_use") => {
                block.deny_unknown(&["type", "id", "name", "input", "cache_control"])?;
                let id = block.required_string("id")?.to_owned();
                let name = block.required_string("name")?.to_owned();
                let input = match block.get("input") {
                    None => Value::Object(Default::default()),
                    Some(input @ Value::Object(_)) => input.clone(),
                    Some(other) => {
                        let param = block.param("input");
                        return Err(ApiError::invalid(
                            param.clone(),
                            format!(
                                "{param}: Input should be an object, but got {}.",
                                validate::kind(other)
                            ),
                        ));
                    }
                };
                calls.insert(id.clone());
                self.calls.push(ToolCall::function(id, name, input));
            }
            ("user", "tool_result") => {
                block.deny_unknown(&[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ])?;
                let id = block.required_string("tool_use_id")?;
                if !calls.contains(id) {
                    let param = block.param("tool_use_id");
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!("{param}: no earlier assistant message has a tool_use block with id '{id}'."),
                    ));
                }
                let is_error = block.bool("is_error")?.unwrap_or(false);
                let mut content = result_content(block)?;
                if is_error {
                    content = format!("Error: {content}");
                }
                self.results.push(ChatMessage {
                    role: "tool".into(),
                    content,
                    tool_call_id: Some(id.to_owned()),
                    ..ChatMessage::default()
                });
            }
            // Earlier turns' thinking comes back to the server; nothing here reads it.
            ("assistant", "thinking" | "redacted_thinking") => {}
            (_, "image" | "document" | "search_result") => {
                let param = block.param("type");
                return Err(ApiError::invalid(
                    param.clone(),
                    format!(
                        "{param}: '{kind}' blocks are not supported yet by this server; send text."
                    ),
                ));
            }
            (_, other) => {
                let expected = if role == "assistant" {
                    "'text', 'tool_use', 'thinking'"
                } else {
                    "'text', 'tool_result'"
                };
                return Err(block_type(block, other, expected));
            }
        }
        Ok(())
    }

    fn into_messages(self, role: &str) -> Vec<ChatMessage> {
        let mut out = self.results;
        if !self.texts.is_empty() || !self.calls.is_empty() || out.is_empty() {
            out.push(ChatMessage {
                role: role.into(),
                content: self.texts.join("\n"),
                tool_calls: self.calls,
                ..ChatMessage::default()
            });
        }
        out
    }
}

/// A `tool_result`'s content: a string or text blocks.
fn result_content(block: &Fields<'_>) -> Result<String> {
    match block.get("content") {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let base = block.param("content");
            let mut texts = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                let part = validate::object_item(part, format!("{base}[{k}]"))?;
                match part.required_string("type")? {
                    "text" => texts.push(text_block(&part)?),
                    other => return Err(block_type(&part, other, "'text'")),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => {
            let param = block.param("content");
            Err(ApiError::invalid(
                param.clone(),
                format!(
                    "{param}: Input should be a string or a list of text blocks, but got {}.",
                    validate::kind(other)
                ),
            ))
        }
    }
}

/// `tools` (custom tools: `name`, `description`, `input_schema`) and `tool_choice`.
fn offer(fields: &Fields<'_>) -> Result<Offer> {
    let mut declared = Vec::new();
    if let Some(items) = fields.array("tools")? {
        if items.len() > tools::MAX_TOOLS {
            return Err(ApiError::invalid(
                "tools",
                format!("tools: at most {} tools are allowed.", tools::MAX_TOOLS),
            ));
        }
        let mut names = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let tool = validate::object_item(item, format!("tools[{i}]"))?;
            match tool.string("type")? {
                None | Some("custom") => {}
                Some(other) => {
                    let param = tool.param("type");
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!("{param}: Anthropic's server tools ('{other}') are not available on this server; declare a custom tool with an input_schema."),
                    ));
                }
            }
            tool.deny_unknown(&[
                "type",
                "name",
                "description",
                "input_schema",
                "cache_control",
            ])?;
            tool.required("input_schema")?;
            declared.push(tools::declared(&tool, "input_schema", &mut names)?);
        }
    }
    let mut offer = Offer {
        tools: declared,
        ..Offer::default()
    };
    let Some(choice) = fields.object("tool_choice")? else {
        return Ok(offer);
    };
    let choice = Fields::nested(choice, "tool_choice".into());
    choice.deny_unknown(&["type", "name", "disable_parallel_tool_use"])?;
    offer.parallel = !choice.bool("disable_parallel_tool_use")?.unwrap_or(false);
    let kind = choice.required_string("type")?;
    if kind != "none" && offer.tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "tool_choice: a tool choice needs 'tools'.",
        ));
    }
    offer.choice = match kind {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => {
            offer.tools.clear();
            ToolChoice::Auto
        }
        "tool" => {
            let name = choice.required_string("name")?;
            if !offer.tools.iter().any(|t| t.function.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.name",
                    format!("tool_choice.name: no tool named '{name}' is in 'tools'."),
                ));
            }
            ToolChoice::Function(name.to_owned())
        }
        other => {
            return Err(one_of(
                &choice.param("type"),
                other,
                "'auto', 'any', 'tool', 'none'",
            ))
        }
    };
    Ok(offer)
}

#[cfg(test)]
mod tests;
