//! `POST /v1/chat/completions`: request parsing and response shapes.

use backend::{ChatMessage, FinishReason, Prompt};
use serde::Serialize;
use serde_json::{json, Value};

use super::tools::ToolCallView;
use super::{ChunkFormat, ChunkUsage, ResponseMeta, UsageView, ValidRequest};
use crate::error::{ApiError, Result};
use crate::validate::{self, is_empty_array, is_empty_object, is_false, never, Fields, Refused};

const ACCEPTED: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "ignore_eos",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
    "n",
    "user",
    "logprobs",
    "top_logprobs",
    "store",
    "metadata",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    // Documented no-ops here: every prompt prefix is cached without a key, there is one
    // service tier, a prediction only ever saves time, and a model that thinks does so as its
    // template says (its reasoning comes back split from the answer).
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "prediction",
    "reasoning_effort",
    "verbosity",
];

const REFUSED: &[Refused] = &[
    Refused {
        key: "functions",
        is_noop: never,
    },
    Refused {
        key: "function_call",
        is_noop: never,
    },
    Refused {
        key: "logit_bias",
        is_noop: is_empty_object,
    },
    Refused {
        key: "store",
        is_noop: is_false,
    },
    Refused {
        key: "audio",
        is_noop: never,
    },
    Refused {
        key: "modalities",
        is_noop: is_text_only,
    },
    Refused {
        key: "web_search_options",
        is_noop: never,
    },
];

/// `modalities: ["text"]` asks for what every answer is.
fn is_text_only(v: &Value) -> bool {
    v.as_array().is_some_and(|m| m.iter().all(|x| x == "text"))
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

const MESSAGE_FIELDS: &[&str] = &[
    "role",
    "content",
    "name",
    "tool_calls",
    "function_call",
    "tool_call_id",
    "refusal",
    "reasoning_content",
];

/// `logprobs` (a bool) and `top_logprobs` (0–20 alternatives, only with `logprobs`).
fn logprobs(fields: &Fields<'_>) -> Result<Option<u8>> {
    let wanted = fields.bool("logprobs")?.unwrap_or(false);
    let top = fields.integer("top_logprobs", 0, i64::from(backend::MAX_TOP_LOGPROBS))?;
    match (wanted, top) {
        (false, Some(_)) => Err(ApiError::invalid(
            "top_logprobs",
            "'top_logprobs' needs 'logprobs': true; set both, or leave 'top_logprobs' out.",
        )),
        (false, None) => Ok(None),
        (true, top) => Ok(Some(top.map_or(0, |n| n as u8))),
    }
}

/// Parses and validates a chat completion request body.
pub fn parse(body: &[u8]) -> Result<ValidRequest> {
    let map = validate::parse_object(body)?;
    let fields = Fields::root(&map);
    validate::deny_refused(&fields, REFUSED)?;
    let refused_keys: Vec<&str> = REFUSED.iter().map(|r| r.key).collect();
    let allowed: Vec<&str> = ACCEPTED.iter().copied().chain(refused_keys).collect();
    fields.deny_unknown(&allowed)?;

    let model = fields.required_string("model")?.to_string();
    let messages = messages(&fields)?;
    let tools = super::tools::parse(&fields)?;
    let format = super::format::parse(&fields)?;
    let n = validate::n(&fields)?;
    fields.string("user")?;
    fields.object("metadata")?;
    fields.strings(&[
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "reasoning_effort",
        "verbosity",
    ])?;
    fields.object("prediction")?;
    let mut generation = validate::generation(&fields, &["max_completion_tokens", "max_tokens"])?;
    generation.sampling.logprobs = logprobs(&fields)?;
    generation.sampling.n = n;

    Ok(ValidRequest {
        model,
        prompt: Prompt::Chat(messages),
        sampling: generation.sampling,
        max_tokens: generation.max_tokens,
        stop: generation.stop,
        stream: generation.stream,
        include_usage: generation.include_usage,
        continuous_usage: generation.continuous_usage,
        tools,
        format,
    })
}

fn messages(fields: &Fields<'_>) -> Result<Vec<ChatMessage>> {
    let items = fields.required_array("messages")?;
    if items.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    let messages: Vec<ChatMessage> = items
        .iter()
        .enumerate()
        .map(|(i, item)| message(item, format!("messages[{i}]")))
        .collect::<Result<_>>()?;
    // A tool message answers a call an earlier assistant message made.
    let mut calls = std::collections::HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        calls.extend(m.tool_calls.iter().map(|c| c.id.as_str()));
        if m.role == "tool" {
            let param = format!("messages[{i}].tool_call_id");
            match m.tool_call_id.as_deref() {
                Some(id) if calls.contains(id) => {}
                Some(id) => {
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!("Invalid '{param}': no earlier assistant message made a tool call with id '{id}'."),
                    ))
                }
                None => return Err(ApiError::invalid(param, "A 'tool' message needs the 'tool_call_id' of the call it answers.")),
            }
        }
    }
    Ok(messages)
}

fn message(item: &Value, path: String) -> Result<ChatMessage> {
    let map = item.as_object().ok_or_else(|| {
        ApiError::invalid(
            path.clone(),
            format!(
                "Invalid type for '{path}': expected an object, but got {} instead.",
                validate::kind(item)
            ),
        )
    })?;
    let fields = Fields::nested(map, path);
    fields.deny_unknown(MESSAGE_FIELDS)?;

    let role = fields.required_string("role")?;
    if !ROLES.contains(&role) {
        let param = fields.param("role");
        return Err(ApiError::invalid(
            param.clone(),
            format!("Invalid value for '{param}': '{role}'. Supported values are: 'system', 'developer', 'user', 'assistant', and 'tool'."),
        ));
    }
    if fields
        .get("function_call")
        .is_some_and(|v| !is_empty_array(v))
    {
        return Err(validate::unsupported(&fields.param("function_call")));
    }
    let tool_calls = super::tools::message_calls(&fields)?;
    let name = fields.string("name")?.map(str::to_owned);
    let tool_call_id = fields.string("tool_call_id")?.map(str::to_owned);
    fields.string("refusal")?;
    fields.string("reasoning_content")?;

    let content = match fields.get("content") {
        None if role == "assistant" => String::new(),
        None => {
            fields.required("content")?;
            String::new()
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => text_parts(&fields, parts)?,
        Some(other) => {
            let param = fields.param("content");
            return Err(ApiError::invalid(
                param.clone(),
                format!(
                    "Invalid type for '{param}': expected a string or an array of content parts, but got {} instead.",
                    validate::kind(other)
                ),
            ));
        }
    };
    // Chat templates know `system`; `developer` is OpenAI's newer name for it.
    let role = if role == "developer" { "system" } else { role };
    Ok(ChatMessage {
        role: role.to_string(),
        content,
        tool_calls,
        tool_call_id,
        name,
    })
}

/// Joins `{"type": "text", "text": …}` parts with newlines; any other part type is refused.
fn text_parts(fields: &Fields<'_>, parts: &[Value]) -> Result<String> {
    let base = fields.param("content");
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{base}[{j}]");
        let map = part.as_object().ok_or_else(|| {
            ApiError::invalid(
                path.clone(),
                format!(
                    "Invalid type for '{path}': expected a content part object, but got {} instead.",
                    validate::kind(part)
                ),
            )
        })?;
        let part = Fields::nested(map, path);
        let kind = part.required_string("type")?;
        if kind != "text" {
            let param = part.param("type");
            return Err(ApiError::invalid(
                param,
                format!("Content parts of type '{kind}' are not supported yet by this server; only 'text' parts are."),
            ));
        }
        part.deny_unknown(&["type", "text"])?;
        texts.push(part.required_string("text")?);
    }
    Ok(texts.join("\n"))
}

/// The non-streamed `chat.completion` object.
#[derive(Debug, Serialize)]
pub struct ChatCompletionView {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoiceView>,
    pub usage: UsageView,
}

#[derive(Debug, Serialize)]
pub struct ChatChoiceView {
    pub index: u32,
    pub message: AssistantMessageView,
    pub finish_reason: &'static str,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessageView {
    pub role: &'static str,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    /// The model's thinking, split from `content` (vLLM's and DeepSeek's field), when it thought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallView>,
}

impl ChatCompletionView {
    pub fn new(meta: ResponseMeta, answers: Vec<Answer>, usage: UsageView) -> Self {
        Self {
            id: meta.id,
            object: "chat.completion",
            created: meta.created,
            model: meta.model,
            choices: answers.into_iter().zip(0..).map(choice_view).collect(),
            usage,
        }
    }
}

fn choice_view((answer, index): (Answer, u32)) -> ChatChoiceView {
    let Answer {
        reasoning,
        text,
        calls: tool_calls,
        reason,
        logprobs,
    } = answer;
    let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
    ChatChoiceView {
        index,
        message: AssistantMessageView {
            role: "assistant",
            content,
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls,
        },
        finish_reason: super::finish_reason(reason),
        logprobs: logprobs.as_deref().map(super::logprobs::chat),
    }
}

/// What a whole generation answered.
pub struct Answer {
    /// The model's thinking, split from the text (empty if it did not think).
    pub reasoning: String,
    pub text: String,
    pub calls: Vec<ToolCallView>,
    pub reason: FinishReason,
    /// The answer's tokens' log-probabilities, if the request asked for them.
    pub logprobs: Option<Vec<backend::TokenLogprob>>,
}

impl Answer {
    /// An empty answer (stopped), with log-probabilities to fill if `logprobs` is `Some`.
    pub fn new(logprobs: Option<Vec<backend::TokenLogprob>>) -> Self {
        Self {
            reasoning: String::new(),
            text: String::new(),
            calls: Vec::new(),
            reason: FinishReason::Stop,
            logprobs,
        }
    }
}

/// `chat.completion.chunk` frames.
pub struct ChatChunks {
    /// The request asked for log-probabilities.
    pub logprobs: bool,
}

fn chunk(meta: &ResponseMeta, choices: Value, usage: ChunkUsage) -> Value {
    super::chunk("chat.completion.chunk", meta, choices, usage)
}

fn choice(answer: u32, delta: Value, finish_reason: Option<&str>) -> Value {
    json!([{ "index": answer, "delta": delta, "logprobs": null, "finish_reason": finish_reason }])
}

impl ChunkFormat for ChatChunks {
    fn opening(&self, meta: &ResponseMeta, usage: ChunkUsage) -> Option<Value> {
        let delta = json!({ "role": "assistant", "content": "" });
        Some(chunk(meta, choice(0, delta, None), usage))
    }

    fn text(
        &mut self,
        meta: &ResponseMeta,
        answer: u32,
        text: &str,
        logprobs: &[backend::TokenLogprob],
        usage: ChunkUsage,
    ) -> Value {
        let mut choices = choice(answer, json!({ "content": text }), None);
        if self.logprobs {
            choices[0]["logprobs"] = super::logprobs::chat(logprobs);
        }
        chunk(meta, choices, usage)
    }

    fn reasoning(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        text: &str,
        usage: ChunkUsage,
    ) -> Option<Value> {
        let delta = json!({ "reasoning_content": text });
        Some(chunk(meta, choice(answer, delta, None), usage))
    }

    fn finish(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        reason: FinishReason,
        usage: ChunkUsage,
    ) -> Value {
        let reason = super::finish_reason(reason);
        chunk(meta, choice(answer, json!({}), Some(reason)), usage)
    }

    fn usage(&self, meta: &ResponseMeta, usage: UsageView) -> Value {
        chunk(meta, json!([]), ChunkUsage::Some(usage))
    }

    fn tool_call(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        index: u32,
        call: ToolCallView,
        usage: ChunkUsage,
    ) -> Option<Value> {
        let delta = json!({ "tool_calls": [{
            "index": index,
            "id": call.id,
            "type": call.r#type,
            "function": { "name": call.function.name, "arguments": call.function.arguments },
        }] });
        Some(chunk(meta, choice(answer, delta, None), usage))
    }
}
