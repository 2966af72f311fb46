//! `POST /v1/completions` (legacy text completions): request parsing and response shapes.

use backend::{FinishReason, Prompt};
use serde::Serialize;
use serde_json::{json, Value};

use super::{ChunkFormat, ChunkUsage, ResponseMeta, UsageView, ValidRequest};
use crate::error::{ApiError, Result};
use crate::validate::{self, is_empty_object, is_false, Fields, Refused};

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
    "logprobs",
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
    let n = validate::n(&fields)?;
    fields.string("user")?;
    let mut generation = validate::generation(&fields, &["max_tokens"])?;
    // The legacy API's `logprobs` is the number of alternatives (at most 5) or null.
    generation.sampling.logprobs = fields.integer("logprobs", 0, 5)?.map(|n| n as u8);
    generation.sampling.n = n;

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
    pub choices: Vec<CompletionChoiceView>,
    pub usage: UsageView,
}

#[derive(Debug, Serialize)]
pub struct CompletionChoiceView {
    pub index: u32,
    pub text: String,
    pub finish_reason: &'static str,
    pub logprobs: Option<Value>,
}

impl CompletionView {
    /// `answers`: each answer's text, finish reason and (if asked for) log-probabilities.
    pub fn new(meta: ResponseMeta, answers: Vec<super::chat::Answer>, usage: UsageView) -> Self {
        let choices = answers
            .into_iter()
            .zip(0..)
            .map(|(answer, index)| CompletionChoiceView {
                index,
                finish_reason: super::finish_reason(answer.reason),
                logprobs: answer
                    .logprobs
                    .as_deref()
                    .map(|l| super::logprobs::Completion::default().render(l)),
                text: answer.text,
            })
            .collect();
        Self {
            id: meta.id,
            object: "text_completion",
            created: meta.created,
            model: meta.model,
            choices,
            usage,
        }
    }
}

/// Streamed `text_completion` frames.
pub struct CompletionChunks {
    /// Whether the request asked for log-probabilities.
    pub logprobs: bool,
    /// Per answer, its log-probabilities so far (for their text offsets).
    pub rendered: Vec<super::logprobs::Completion>,
}

fn chunk(meta: &ResponseMeta, choices: Value, usage: ChunkUsage) -> Value {
    super::chunk("text_completion", meta, choices, usage)
}

fn choice(answer: u32, text: &str, finish_reason: Option<&str>) -> Value {
    json!([{ "index": answer, "text": text, "logprobs": null, "finish_reason": finish_reason }])
}

impl ChunkFormat for CompletionChunks {
    fn opening(&self, _: &ResponseMeta, _: ChunkUsage) -> Option<Value> {
        None
    }

    fn text(
        &mut self,
        meta: &ResponseMeta,
        answer: u32,
        text: &str,
        logprobs: &[backend::TokenLogprob],
        usage: ChunkUsage,
    ) -> Value {
        let mut choices = choice(answer, text, None);
        if self.logprobs {
            let at = answer as usize;
            if self.rendered.len() <= at {
                self.rendered
                    .resize_with(at + 1, super::logprobs::Completion::default);
            }
            choices[0]["logprobs"] = self.rendered[at].render(logprobs);
        }
        chunk(meta, choices, usage)
    }

    fn finish(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        reason: FinishReason,
        usage: ChunkUsage,
    ) -> Value {
        let reason = super::finish_reason(reason);
        chunk(meta, choice(answer, "", Some(reason)), usage)
    }

    fn usage(&self, meta: &ResponseMeta, usage: UsageView) -> Value {
        chunk(meta, json!([]), ChunkUsage::Some(usage))
    }
}
