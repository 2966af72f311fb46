//! The wire formats of the APIs Flywheel speaks: OpenAI's chat, completions and Responses,
//! Anthropic's Messages, MCP's JSON-RPC and the admin/tenancy JSON. Requests are parsed and
//! validated into the serving layer's domain requests ([`ValidRequest`]); answers leave as the
//! `*View` types and the SSE frames of [`sse`]; every refusal is an [`error::ApiError`], which
//! alone maps domain errors to statuses, error shapes and parameter names.
//!
//! No routes and no server: the gateway calls this crate. Only it (and `upstream`, which speaks
//! OpenAI to other servers) knows these JSON shapes.

pub mod anthropic;
pub mod audio;
pub mod batches;
pub mod budgets;
pub mod chat;
pub mod cluster;
pub mod completions;
pub mod deployments;
pub mod embeddings;
pub mod error;
pub mod files;
pub mod fine_tuning;
pub mod format;
pub mod logprobs;
pub mod mcp;
pub mod members;
pub mod responses;
pub mod routing;
pub mod sse;
pub mod tenancy;
pub mod tools;
pub mod validate;

use backend::{FinishReason, GenerateRequest, Prompt, SamplingParams, Usage};
use serde::Serialize;

use crate::error::Result;

/// A request that passed validation, for either endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub model: String,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Usage so far on every stream chunk (`stream_options.continuous_usage_stats`).
    pub continuous_usage: bool,
    /// Functions offered to the model (chat only), and whether it must call one.
    pub tools: tools::Offer,
    /// The shape the answer's text must have.
    pub format: backend::OutputFormat,
}

impl ValidRequest {
    pub fn generate_request(&self, request_id: String, tenant: Option<String>) -> GenerateRequest {
        GenerateRequest {
            request_id,
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            tenant,
            tools: self.tools.tools.clone(),
            tool_choice: self.tools.choice.clone(),
            parallel_tool_calls: self.tools.parallel,
            format: self.format.clone(),
            priority: Default::default(),
            resume: Vec::new(),
        }
    }

    /// The request field that holds the prompt, for errors about it.
    pub fn prompt_param(&self) -> &'static str {
        match self.prompt {
            Prompt::Chat(_) => "messages",
            Prompt::Text(_) => "prompt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageView {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl From<Usage> for UsageView {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_tokens,
            },
        }
    }
}

/// The wire string of a finish reason.
/// One streamed frame: `{"id","object","created","model","choices"[,"usage"]}`.
pub fn chunk(
    object: &str,
    meta: &ResponseMeta,
    choices: serde_json::Value,
    usage: ChunkUsage,
) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("id".into(), serde_json::json!(meta.id));
    map.insert("object".into(), serde_json::json!(object));
    map.insert("created".into(), serde_json::json!(meta.created));
    map.insert("model".into(), serde_json::json!(meta.model));
    map.insert("choices".into(), choices);
    if !usage.is_omit() {
        map.insert("usage".into(), serde_json::json!(usage));
    }
    serde_json::Value::Object(map)
}

pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
    }
}

/// Seconds since the Unix epoch, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a response is about: the same for every chunk of one stream.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// `usage` on stream chunks: absent unless `include_usage`, then `null` except on the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkUsage {
    Omit,
    Null,
    Some(UsageView),
}

impl ChunkUsage {
    pub fn is_omit(&self) -> bool {
        matches!(self, ChunkUsage::Omit)
    }
}

impl Serialize for ChunkUsage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ChunkUsage::Omit | ChunkUsage::Null => s.serialize_none(),
            ChunkUsage::Some(u) => u.serialize(s),
        }
    }
}

/// One frame of a streamed response, built by the endpoint's wire format. `answer` is the
/// choice's index (0 unless the request asked for several, `n`).
pub trait ChunkFormat: Send + 'static {
    /// Sent before any text (chat sends the assistant role), if anything.
    fn opening(&self, meta: &ResponseMeta, usage: ChunkUsage) -> Option<serde_json::Value>;
    /// A piece of the answer's text, with the log-probabilities of the tokens it releases
    /// (empty unless the request asked for them).
    fn text(
        &mut self,
        meta: &ResponseMeta,
        answer: u32,
        text: &str,
        logprobs: &[backend::TokenLogprob],
        usage: ChunkUsage,
    ) -> serde_json::Value;
    fn finish(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        reason: FinishReason,
        usage: ChunkUsage,
    ) -> serde_json::Value;
    /// The `include_usage` chunk, with no choices.
    fn usage(&self, meta: &ResponseMeta, usage: UsageView) -> serde_json::Value;
    /// A piece of reasoning; `None` for formats without it (raw completions are never split).
    fn reasoning(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        text: &str,
        usage: ChunkUsage,
    ) -> Option<serde_json::Value> {
        let _ = (meta, answer, text, usage);
        None
    }
    /// A whole tool call, the answer's `index`th; `None` for formats without tool calls (they
    /// are never offered tools).
    fn tool_call(
        &self,
        meta: &ResponseMeta,
        answer: u32,
        index: u32,
        call: tools::ToolCallView,
        usage: ChunkUsage,
    ) -> Option<serde_json::Value> {
        let _ = (meta, answer, index, call, usage);
        None
    }
}

#[cfg(test)]
mod proptests;
