//! What `/v1/messages` answers: the `message` object, its stream events and Anthropic's error
//! shape `{"type": "error", "error": {"type", "message"}}`.

use backend::{FinishReason, Usage};
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::sse::{named_frame, Encoder};
use crate::tools::ToolCallView;

/// Anthropic's `usage`: `input_tokens` excludes the prompt tokens read from the cache, which
/// `cache_read_input_tokens` counts (priced at the cached-input rate, as the ledger charges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageView {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_creation_input_tokens: u32,
    pub cache_read_input_tokens: u32,
}

impl From<Usage> for UsageView {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.prompt_tokens.saturating_sub(u.cached_tokens),
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: u.cached_tokens,
        }
    }
}

/// `stop_reason`. A stop sequence is reported as `end_turn` (the engine does not say which
/// stop ended a generation), `stop_sequence` stays `null`.
pub fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
    }
}

/// A `tool_use` block; arguments that are not a JSON object (an upstream's free text) come
/// back as `{}` with the text under `"_raw"`, never lost.
fn tool_use(call: &ToolCallView) -> Value {
    let input = match serde_json::from_str::<Value>(&call.function.arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => {
            let mut map = Map::new();
            map.insert("_raw".into(), json!(call.function.arguments));
            Value::Object(map)
        }
    };
    json!({ "type": "tool_use", "id": call.id, "name": call.function.name, "input": input })
}

/// A `thinking` block. Flywheel signs nothing (a thinking block sent back is dropped from the
/// prompt, as the chat templates drop past reasoning), so `signature` is empty.
fn thinking(text: &str) -> Value {
    json!({ "type": "thinking", "thinking": text, "signature": "" })
}

/// What the model answered: its thinking, its text and its tool calls.
pub struct Answer<'a> {
    pub thinking: &'a str,
    pub text: &'a str,
    pub calls: &'a [ToolCallView],
}

/// The non-streamed `message` object.
pub fn message(
    id: &str,
    model: &str,
    answer: &Answer<'_>,
    reason: FinishReason,
    usage: Usage,
) -> Value {
    let Answer {
        thinking: thought,
        text,
        calls,
    } = *answer;
    let mut content = Vec::with_capacity(calls.len() + 2);
    if !thought.is_empty() {
        content.push(thinking(thought));
    }
    if !text.is_empty() {
        content.push(json!({ "type": "text", "text": text }));
    }
    content.extend(calls.iter().map(tool_use));
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reason),
        "stop_sequence": null,
        "usage": UsageView::from(usage),
    })
}

/// `/v1/messages/count_tokens`'s answer.
pub fn token_count(input_tokens: u32) -> Value {
    json!({ "input_tokens": input_tokens })
}

/// The stream: `message_start`, then per content block `content_block_start`, its deltas
/// (`thinking_delta`, `text_delta`, `input_json_delta`) and `content_block_stop`, then `message_delta` with the
/// stop reason and usage, and `message_stop`. An error after the start is an `error` event.
pub struct MessageEvents {
    id: String,
    model: String,
    started: bool,
    /// The index of the open content block and its kind.
    open: Option<(u32, Block)>,
    next_index: u32,
}

impl MessageEvents {
    pub fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            started: false,
            open: None,
            next_index: 0,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, prompt_tokens: u32) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = UsageView::from(Usage {
            prompt_tokens,
            ..Usage::default()
        });
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage,
        });
        named_frame(
            out,
            "message_start",
            &json!({ "type": "message_start", "message": message }),
        );
        named_frame(out, "ping", &json!({ "type": "ping" }));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            named_frame(
                out,
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": index }),
            );
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Value, kind: Block) -> u32 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        named_frame(
            out,
            "content_block_start",
            &json!({ "type": "content_block_start", "index": index, "content_block": block }),
        );
        index
    }

    fn delta(out: &mut Vec<u8>, index: u32, delta: Value) {
        named_frame(
            out,
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": index, "delta": delta }),
        );
    }
}

/// The kinds of content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    ToolUse,
}

impl Encoder for MessageEvents {
    fn admitted(&mut self, out: &mut Vec<u8>, prompt_tokens: u32) {
        self.start(out, prompt_tokens);
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage) {
        self.start(out, so_far.prompt_tokens);
        let index = match self.open {
            Some((index, Block::Text)) => index,
            _ => self.open_block(out, json!({ "type": "text", "text": "" }), Block::Text),
        };
        Self::delta(out, index, json!({ "type": "text_delta", "text": text }));
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage) {
        self.start(out, so_far.prompt_tokens);
        let index = match self.open {
            Some((index, Block::Thinking)) => index,
            _ => self.open_block(out, thinking(""), Block::Thinking),
        };
        Self::delta(
            out,
            index,
            json!({ "type": "thinking_delta", "thinking": text }),
        );
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, _index: u32, call: ToolCallView, so_far: Usage) {
        self.start(out, so_far.prompt_tokens);
        let mut block = tool_use(&call);
        let input = block["input"].take();
        block["input"] = json!({});
        let index = self.open_block(out, block, Block::ToolUse);
        let partial_json = serde_json::to_string(&input).unwrap_or_else(|_| "{}".into());
        Self::delta(
            out,
            index,
            json!({ "type": "input_json_delta", "partial_json": partial_json }),
        );
        self.close_block(out);
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        self.start(out, usage.prompt_tokens);
        self.close_block(out);
        named_frame(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": { "stop_reason": stop_reason(reason), "stop_sequence": null },
                "usage": UsageView::from(usage),
            }),
        );
        named_frame(out, "message_stop", &json!({ "type": "message_stop" }));
    }

    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError) {
        named_frame(out, "error", &error_body(err));
    }
}

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(err: &ApiError) -> Value {
    json!({
        "type": "error",
        "error": { "type": error_type(err.status()), "message": err.message() },
    })
}
