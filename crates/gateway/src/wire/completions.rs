//! `POST /v1/completions` (legacy text completions): request parsing and response shapes.

use backend::{FinishReason, Prompt};
use serde::Serialize;
use serde_json::{json, Value};

use super::{ChunkFormat, ChunkUsage, ResponseMeta, UsageView, ValidRequest};
use crate::error::{ApiError, Result};
use crate::validate::{self, is_empty_object, is_false, never, Fields, Refused};

const ACCEPTED: &[&str] = &[
    "model",
    "prompt",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "ignore_eos",
    "seed",
    "max_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
    "n",
    "user",
    "response_format",
];

fn is_one(v: &Value) -> bool {
    v.as_u64() == Some(1)
}

fn is_empty_string(v: &Value) -> bool {
    v.as_str() == Some("")
}

const REFUSED: &[Refused] = &[
    Refused {
        key: "echo",
        is_noop: is_false,
    },
    Refused {
        key: "suffix",
        is_noop: is_empty_string,
    },
    Refused {
        key: "best_of",
        is_noop: is_one,
    },
    Refused {
        key: "logprobs",
        is_noop: never,
    },
    Refused {
        key: "logit_bias",
        is_noop: is_empty_object,
    },
];

/// Parses and validates a text completion request body.
pub fn parse(body: &[u8]) -> Result<ValidRequest> {
    let map = validate::parse_object(body)?;
    let fields = Fields::root(&map);
    validate::deny_refused(&fields, REFUSED)?;
    let allowed: Vec<&str> = ACCEPTED
        .iter()
        .copied()
        .chain(REFUSED.iter().map(|r| r.key))
        .collect();
    fields.deny_unknown(&allowed)?;

    let model = fields.required_string("model")?.to_string();
    let prompt = prompt(&fields)?;
    validate::n(&fields)?;
    fields.string("user")?;
    let generation = validate::generation(&fields, &["max_tokens"])?;

    Ok(ValidRequest {
        model,
        prompt: Prompt::Text(prompt),
        sampling: generation.sampling,
        max_tokens: generation.max_tokens,
        stop: generation.stop,
        stream: generation.stream,
        include_usage: generation.include_usage,
        continuous_usage: generation.continuous_usage,
        tools: super::tools::Offer::default(),
        format: super::format::parse(&fields)?,
    })
}

/// `prompt`: a string, or an array holding exactly one string.
fn prompt(fields: &Fields<'_>) -> Result<String> {
    match fields.required("prompt")? {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => match items.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            [] => Err(ApiError::invalid(
                "prompt",
                "Invalid 'prompt': empty array. Send the prompt as a string.",
            )),
            items if items.iter().all(Value::is_number) || items.iter().all(Value::is_array) => {
                Err(ApiError::invalid(
                    "prompt",
                    "Token-array prompts are not supported yet by this server; send the prompt as a string.",
                ))
            }
            items if items.iter().all(Value::is_string) => Err(ApiError::invalid(
                "prompt",
                format!(
                    "Only one prompt per request is supported yet by this server, but got {}; send one request per prompt.",
                    items.len()
                ),
            )),
            _ => Err(ApiError::invalid(
                "prompt",
                "Invalid type for 'prompt': expected a string or an array holding one string.",
            )),
        },
        other => Err(ApiError::invalid(
            "prompt",
            format!(
                "Invalid type for 'prompt': expected a string, but got {} instead.",
                validate::kind(other)
            ),
        )),
    }
}

/// The non-streamed `text_completion` object.
#[derive(Debug, Serialize)]
pub struct CompletionView {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: [CompletionChoiceView; 1],
    pub usage: UsageView,
}

#[derive(Debug, Serialize)]
pub struct CompletionChoiceView {
    pub index: u32,
    pub text: String,
    pub finish_reason: &'static str,
    pub logprobs: Option<()>,
}

impl CompletionView {
    pub fn new(meta: ResponseMeta, text: String, reason: FinishReason, usage: UsageView) -> Self {
        Self {
            id: meta.id,
            object: "text_completion",
            created: meta.created,
            model: meta.model,
            choices: [CompletionChoiceView {
                index: 0,
                text,
                finish_reason: super::finish_reason(reason),
                logprobs: None,
            }],
            usage,
        }
    }
}

/// Streamed `text_completion` frames.
pub struct CompletionChunks;

fn chunk(meta: &ResponseMeta, choices: Value, usage: ChunkUsage) -> Value {
    super::chunk("text_completion", meta, choices, usage)
}

fn choice(text: &str, finish_reason: Option<&str>) -> Value {
    json!([{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason }])
}

impl ChunkFormat for CompletionChunks {
    fn opening(&self, _: &ResponseMeta, _: ChunkUsage) -> Option<Value> {
        None
    }

    fn text(&self, meta: &ResponseMeta, text: &str, usage: ChunkUsage) -> Value {
        chunk(meta, choice(text, None), usage)
    }

    fn finish(&self, meta: &ResponseMeta, reason: FinishReason, usage: ChunkUsage) -> Value {
        chunk(meta, choice("", Some(super::finish_reason(reason))), usage)
    }

    fn usage(&self, meta: &ResponseMeta, usage: UsageView) -> Value {
        chunk(meta, json!([]), ChunkUsage::Some(usage))
    }
}
