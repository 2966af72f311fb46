//! The seam between the gateway and whatever generates text.
//!
//! The gateway parses and validates OpenAI requests into a [`GenerateRequest`] and talks to an
//! `Arc<dyn Backend>` per served model. The in-process llama.cpp engine (`engine` crate) and an
//! external OpenAI-compatible server (`gateway::upstream`) both implement [`Backend`]; a remote
//! node agent can later. This crate knows neither HTTP nor llama.cpp.
//!
//! Cancellation is by drop: dropping the [`EventStream`] tells the backend the client is gone, and
//! the backend stops generating for it (the engine within one decode step).

mod embed;
mod transcribe;

use std::pin::Pin;

use serde::Serialize;

pub use embed::{EmbedInput, EmbedRequest, Embeddings, ModelKind, EMBED_SPECIAL_TOKENS};
pub use transcribe::{TranscribeRequest, TranscriptSegment, Transcription};

/// One message of a chat prompt. Content is plain text (the gateway flattens text parts).
/// Serialized as chat templates read it (Hugging Face's message dicts): tool calls and the
/// tool-call id only where present.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// The calls an assistant message made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the function that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A call an assistant made, as a template reads it: `{"id", "type": "function", "function":
/// {"name", "arguments"}}` with the arguments as a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub r#type: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: serde_json::Value,
}

impl ToolCall {
    pub fn function(id: String, name: String, arguments: serde_json::Value) -> Self {
        Self {
            id,
            r#type: "function",
            function: FunctionCall { name, arguments },
        }
    }
}

/// A function the model may call, in the shape chat templates read (`{"type": "function",
/// "function": {"name", "description", "parameters"}}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub r#type: &'static str,
    pub function: FunctionSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object.
    pub parameters: serde_json::Value,
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Rendered with the model's own chat template, generation prompt appended.
    Chat(Vec<ChatMessage>),
    /// Used as is (`/v1/completions`).
    Text(String),
}

/// Tokens a chat template adds once at most, in common models' templates (a default system
/// prompt, the generation prompt, BOS); see [`GenerateRequest::max_prompt_tokens`].
pub const TEMPLATE_TOKENS: u32 = 96;
/// Tokens a chat template adds around each message at most (role markers, separators).
pub const TEMPLATE_TOKENS_PER_MESSAGE: u32 = 8;
/// Special tokens around a raw completion prompt (BOS, EOS).
pub const RAW_PROMPT_TOKENS: u32 = 8;
/// Tokens a chat template adds to explain tools when some are offered (Qwen 2.5's and Llama
/// 3.1's instructions are about 100–150), besides the tools' own JSON.
pub const TOOLS_TEMPLATE_TOKENS: u32 = 512;

impl Prompt {
    /// Bytes of text: the raw prompt, or every message's role and content.
    pub fn text_bytes(&self) -> usize {
        match self {
            Prompt::Chat(messages) => messages
                .iter()
                .map(|m| {
                    let calls: usize = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            c.id.len()
                                + c.function.name.len()
                                + c.function.arguments.to_string().len()
                        })
                        .sum();
                    let extra = m.tool_call_id.as_ref().map_or(0, String::len)
                        + m.name.as_ref().map_or(0, String::len);
                    m.role
                        .len()
                        .saturating_add(m.content.len())
                        .saturating_add(calls)
                        .saturating_add(extra)
                })
                .fold(0, usize::saturating_add),
            Prompt::Text(text) => text.len(),
        }
    }

    /// Tokens the chat template (or the tokenizer, for raw text) adds to the prompt's own text,
    /// at most ([`TEMPLATE_TOKENS`], [`TEMPLATE_TOKENS_PER_MESSAGE`], [`RAW_PROMPT_TOKENS`]).
    pub fn template_tokens(&self) -> u32 {
        match self {
            Prompt::Chat(messages) => TEMPLATE_TOKENS.saturating_add(
                TEMPLATE_TOKENS_PER_MESSAGE
                    .saturating_mul(u32::try_from(messages.len()).unwrap_or(u32::MAX)),
            ),
            Prompt::Text(_) => RAW_PROMPT_TOKENS,
        }
    }
}

/// Sampling parameters, already validated by the gateway (ranges as OpenAI documents them).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0 disables.
    pub top_k: i32,
    /// 0.0 disables.
    pub min_p: f32,
    /// `None` draws a seed per request.
    pub seed: Option<u64>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Keep generating past end-of-sequence tokens (benchmarks; vLLM's and llama-server's
    /// `ignore_eos`).
    pub ignore_eos: bool,
    /// Report each generated token's log-probability ([`Event::Logprobs`]) with this many of
    /// the most likely alternatives (at most [`MAX_TOP_LOGPROBS`]); `None`: none.
    pub logprobs: Option<u8>,
    /// Answers to draw for the one prompt (OpenAI's `n`, at most [`MAX_CHOICES`]). With more
    /// than one, the answers' events come as [`Event::Choice`]; they share the prompt's KV, and
    /// the prompt is counted once.
    pub n: u32,
}

/// The most answers one request may ask for.
pub const MAX_CHOICES: u32 = 16;

/// The most alternatives a token's [`TokenLogprob`] lists (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// A token and its log-probability under the model (before sampling's temperature and
/// truncation, as OpenAI reports them).
#[derive(Debug, Clone, PartialEq)]
pub struct Logprob {
    /// The token's text (invalid UTF-8 of a partial character replaced).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// A generated token's log-probability and the most likely tokens at its place.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub chosen: Logprob,
    /// Most likely first.
    pub top: Vec<Logprob>,
}

impl Event {
    /// A `Text` event whose token ids are not known.
    pub fn text(text: impl Into<String>, tokens: u32) -> Self {
        Self::Text {
            text: text.into(),
            tokens,
            ids: Vec::new(),
        }
    }

    /// A `Text` event of these token ids.
    pub fn text_of(text: impl Into<String>, ids: Vec<u32>) -> Self {
        Self::Text {
            text: text.into(),
            tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            ids,
        }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            ignore_eos: false,
            logprobs: None,
            n: 1,
        }
    }
}

/// A validated generation request for one served model.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Id for logs and tracing (the gateway's `chatcmpl-…`/`cmpl-…` id).
    pub request_id: String,
    /// The served name the request addressed.
    pub model: String,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens; `None` means "until the context is full".
    pub max_tokens: Option<u32>,
    /// Stop strings; generation ends before the first occurrence, which is not returned.
    pub stop: Vec<String>,
    /// The tenant the request is for (`None`: the admin or an unauthenticated deployment);
    /// queues use it to share capacity fairly between tenants.
    pub tenant: Option<String>,
    /// Functions the model may call (chat only; empty: none offered).
    pub tools: Vec<Tool>,
    /// Whether the model must call one of `tools` (ignored without tools).
    pub tool_choice: ToolChoice,
    /// Whether one answer may hold several calls (ignored without tools).
    pub parallel_tool_calls: bool,
    /// The shape the answer's text must have.
    pub format: OutputFormat,
    /// The request's priority class: batch work takes only capacity interactive requests leave.
    pub priority: Priority,
    /// Token ids this request already generated and delivered elsewhere (a stream moved off a
    /// lost node): the backend reads them after the prompt and continues from there, so the
    /// stream goes on with no token repeated or missing. Its `Admitted` and usage count them
    /// as prompt; `max_tokens` still bounds them and the new tokens together. Empty: a fresh
    /// request. Only backends that report [`Event::Text`]'s ids accept it.
    pub resume: Vec<u32>,
}

/// A request's priority class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// A client waits for the answer (the default).
    #[default]
    Interactive,
    /// A line of a batch: served only with the slots and prefill budget interactive requests
    /// leave free, and the first to yield when they need them.
    Batch,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (a call it makes is still a valid call of an offered tool where the
    /// backend can constrain it).
    #[default]
    Auto,
    /// The answer is one or more calls of offered tools, and nothing else.
    Required,
    /// The answer is a call of this tool.
    Function(String),
}

/// The shape of the answer's text.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    /// One JSON object.
    JsonObject,
    /// One JSON document valid against this JSON Schema.
    JsonSchema(serde_json::Value),
}

/// Where in a request a JSON Schema sits (the wire names the parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaSite {
    /// The parameters of the tool at this index of [`GenerateRequest::tools`].
    Tool(usize),
    /// [`OutputFormat::JsonSchema`].
    Format,
}

impl GenerateRequest {
    /// An upper bound of the prompt's tokens, known before tokenizing, for a prompt of
    /// `text_bytes` ([`Prompt::text_bytes`], passed in because callers need it too): a token
    /// covers at least one byte of the text it was cut from, so a prompt has at most as many
    /// tokens as its bytes, plus what the template adds ([`Prompt::template_tokens`]) and the
    /// offered tools' JSON with the template's explanation of them. A template that adds more
    /// is the exception the serving layer corrects once the backend has counted.
    pub fn max_prompt_tokens(&self, text_bytes: usize) -> u32 {
        let mut tokens = u32::try_from(text_bytes)
            .unwrap_or(u32::MAX)
            .saturating_add(self.prompt.template_tokens());
        if !self.tools.is_empty() {
            let tools = serde_json::to_string(&self.tools).map_or(usize::MAX, |json| json.len());
            tokens = tokens
                .saturating_add(u32::try_from(tools).unwrap_or(u32::MAX))
                .saturating_add(TOOLS_TEMPLATE_TOKENS);
        }
        tokens
    }
}

/// Token counts of one request. `cached_tokens` ≤ `prompt_tokens` counts prompt tokens served
/// from reused KV instead of being recomputed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The model called one or more tools (reported as `ToolCall` events).
    ToolCalls,
}

/// What a backend streams back. A well-formed stream is any number of `Queued` events, one
/// `Admitted`, any number of `Text`, `Reasoning` and `ToolCall` events, then exactly one `Finished`; an `Err` item ends the stream
/// early.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request waits for capacity: its place in line (1 = next) and the estimated wait.
    Queued {
        position: usize,
        eta_ms: u64,
    },
    /// The request has its prompt tokenized and a place to run: sent once, before any `Text`,
    /// so the gateway can reserve the worst case (`prompt_tokens + max_tokens`) before
    /// anything is delivered. `exact` is false where the prompt count is an upper-bound
    /// estimate (an upstream server that has not answered yet).
    Admitted {
        prompt_tokens: u32,
        max_tokens: u32,
        exact: bool,
    },
    /// Newly generated text (valid UTF-8, stop strings already removed) and how many generated
    /// tokens it completes. Tokens whose text is held back (an incomplete UTF-8 sequence, a
    /// possible stop string) are counted in the chunk that releases it; tokens never released
    /// (a matched stop string, end of sequence) are counted only in `Finished`'s usage. The
    /// sum over a stream's chunks is therefore ≤ `usage.completion_tokens`. Upstream servers
    /// that do not say count one token per chunk.
    Text {
        text: String,
        tokens: u32,
        /// The ids of those tokens, where the backend knows them (the in-process engine: then
        /// `ids.len() == tokens`); empty otherwise. A stream can be resumed elsewhere from
        /// them ([`GenerateRequest::resume`]).
        ids: Vec<u32>,
    },
    /// Newly generated reasoning (the model's thinking, `<think>…</think>` in the templates of
    /// DeepSeek-R1 distills and Qwen 3), split from the answer's text; counted like `Text`.
    Reasoning {
        text: String,
        tokens: u32,
    },
    /// The log-probabilities of the tokens the next `Text` or `Reasoning` event releases, in
    /// order (only when [`SamplingParams::logprobs`] asked for them). An end-of-sequence token
    /// has none; the tokens of a matched stop string ride with the text released before it.
    Logprobs(Vec<TokenLogprob>),
    /// A whole tool call the model made (its text is not sent as `Text`). `index` counts the
    /// request's calls from 0; `arguments` is JSON text.
    ToolCall {
        index: u32,
        id: String,
        name: String,
        arguments: String,
    },
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
    /// With [`SamplingParams::n`] > 1: an event of answer `index` (`Text`, `Reasoning`,
    /// `Logprobs`, `ToolCall`, then its own `Finished` with its reason and usage). The stream's
    /// own `Admitted` reserves for all answers, and its own `Finished`, last, counts the prompt
    /// once and the completion tokens of all answers.
    Choice {
        index: u32,
        event: Box<Event>,
    },
}

pub type EventStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Event, BackendError>> + Send>>;

/// Information about a served model, for `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The served name.
    pub id: String,
    /// Who serves it: "flywheel" for in-process models, the upstream's name otherwise.
    pub owned_by: String,
    /// Tokens per sequence, if known.
    pub context_length: Option<u32>,
    /// Unix seconds when the model was loaded or registered.
    pub created: u64,
    /// What the model does.
    pub kind: ModelKind,
}

/// An error as an upstream OpenAI-compatible server reported it, passed through unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub status: u16,
    pub message: String,
    pub r#type: Option<String>,
    pub code: Option<String>,
    pub param: Option<String>,
    /// `Retry-After` seconds the upstream sent, if any.
    pub retry_after: Option<u64>,
}

/// The field of a domain request an [`BackendError::InvalidRequest`] is about; each wire API
/// names it its own way (the gateway's error mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The served model asked for.
    Model,
    /// The inputs of an [`EmbedRequest`].
    Input,
    /// [`EmbedRequest::dimensions`].
    Dimensions,
    /// [`TranscribeRequest::language`].
    Language,
    /// [`SamplingParams::n`], the number of answers.
    Choices,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("This model's maximum context length is {context_length} tokens. However, your prompt has {prompt_tokens} tokens. Shorten the prompt or start a new conversation.")]
    ContextLengthExceeded {
        prompt_tokens: u32,
        context_length: u32,
    },
    /// The prompt cannot be used as sent (the wire names its own prompt field).
    #[error("{0}")]
    InvalidPrompt(String),
    /// The request offers tools to a model that cannot call them.
    #[error("{0}")]
    ToolsUnsupported(String),
    /// A JSON Schema the backend cannot enforce (or that is not a schema).
    #[error("{message}")]
    UnsupportedSchema { site: SchemaSite, message: String },
    #[error("{message}")]
    InvalidRequest {
        message: String,
        field: Option<Field>,
    },
    #[error("The server is overloaded: {queued} requests are waiting for this model. Retry after {retry_after} s.")]
    Overloaded { queued: usize, retry_after: u64 },
    /// The tenant already holds its share of the model's queue (others may still queue).
    #[error("You already have {waiting} requests waiting for this model, your share of its queue ({limit}). Retry after {retry_after} s, when the first of them has been served, or wait for a response before sending more.")]
    QueueShareExceeded {
        waiting: usize,
        limit: usize,
        retry_after: u64,
    },
    #[error("The request waited {waited_secs} s in the queue for this model, longer than its maximum wait. Retry after {retry_after} s.")]
    QueueTimeout { waited_secs: u64, retry_after: u64 },
    #[error("{}", .0.message)]
    Upstream(UpstreamError),
    #[error("The upstream server could not be reached: {0}. Check that it is running and that its base URL is right.")]
    Unreachable(String),
    #[error("The server is shutting down and takes no new requests; retry on another instance.")]
    ShuttingDown,
    /// The model cannot answer this now (a deployment scaled to zero has no tokenizer
    /// loaded); retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    #[error("Internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Something that generates text for one served model.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    fn info(&self) -> ModelInfo;

    /// Admit a request. Errors that can be known before generation starts (context length,
    /// overload, upstream refusal) come back here, so the gateway can answer with a status code
    /// before it sends any SSE bytes.
    async fn generate(&self, request: GenerateRequest) -> Result<EventStream>;

    /// The number of tokens `request`'s prompt (with its tools) would have, without generating
    /// anything. Backends that cannot count refuse by default.
    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> Result<u32> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "'{}' cannot count tokens without generating: it is served by a server that \
                 has no token-counting endpoint.",
                request.model
            ),
            field: Some(Field::Model),
        })
    }

    /// Embeds `request`'s inputs (or scores its pairs, on a cross-encoder). Backends that make
    /// no embeddings refuse by default.
    async fn embed(&self, request: EmbedRequest) -> Result<Embeddings> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "'{}' makes no embeddings: it is a text-generation model. Use an embedding model \
                 (GET /v1/models lists each model's capabilities).",
                request.model
            ),
            field: Some(Field::Model),
        })
    }

    /// Transcribes `request`'s audio. Backends that are not speech models refuse by default.
    async fn transcribe(&self, request: TranscribeRequest) -> Result<Transcription> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "'{}' is not a speech-to-text model. Use a speech model (GET /v1/models lists \
                 each model's capabilities).",
                request.model
            ),
            field: Some(Field::Model),
        })
    }

    /// Shutdown: end every request now (streams still running end with `ShuttingDown`), take
    /// no new ones, and release what the backend runs on (an engine joins its thread);
    /// returns once that is done. Nothing to do by default.
    async fn stop(&self) {}
}

/// JSON Schema keywords that are assertions a decoding grammar cannot enforce: the engine
/// refuses a schema that uses them, and a schema offered to a model on someone's behalf (an
/// MCP tool's, whose server checks the arguments itself) loses them.
pub const UNENFORCEABLE_SCHEMA_KEYWORDS: &[&str] = &[
    "pattern",
    "patternProperties",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
    "$dynamicRef",
    "$recursiveRef",
];
