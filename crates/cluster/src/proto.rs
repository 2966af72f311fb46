//! The internal protocol's messages: a `backend::GenerateRequest` and its events and errors as
//! JSON, mirrored field by field (the domain types stay free of wire concerns). A stream is
//! newline-delimited JSON, one [`Frame`] a line.

use backend::{
    BackendError, ChatMessage, Event, FinishReason, FunctionSpec, GenerateRequest, Logprob,
    OutputFormat, Priority, Prompt, SamplingParams, SchemaSite, TokenLogprob, Tool, ToolCall,
    ToolChoice, UpstreamError, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<Call>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub parameters: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptJson {
    Chat(Vec<Message>),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    pub seed: Option<u64>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub ignore_eos: bool,
    pub logprobs: Option<u8>,
    pub n: u32,
}

/// `GenerateRequest` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    pub model: String,
    pub prompt: PromptJson,
    pub sampling: Sampling,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub tenant: Option<String>,
    pub tools: Vec<ToolSpec>,
    /// `auto`, `required`, or `function:NAME`.
    pub tool_choice: String,
    pub parallel_tool_calls: bool,
    /// `text`, `json_object`, or `json_schema` with `schema`.
    pub format: String,
    #[serde(default)]
    pub schema: Option<Value>,
    pub batch: bool,
    /// Token ids generated before, elsewhere: the node goes on after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<u32>,
}

impl From<&GenerateRequest> for Request {
    fn from(r: &GenerateRequest) -> Self {
        let s = &r.sampling;
        Self {
            request_id: r.request_id.clone(),
            model: r.model.clone(),
            prompt: match &r.prompt {
                Prompt::Text(t) => PromptJson::Text(t.clone()),
                Prompt::Chat(messages) => PromptJson::Chat(
                    messages
                        .iter()
                        .map(|m| Message {
                            role: m.role.clone(),
                            content: m.content.clone(),
                            tool_calls: m
                                .tool_calls
                                .iter()
                                .map(|c| Call {
                                    id: c.id.clone(),
                                    name: c.function.name.clone(),
                                    arguments: c.function.arguments.clone(),
                                })
                                .collect(),
                            tool_call_id: m.tool_call_id.clone(),
                            name: m.name.clone(),
                        })
                        .collect(),
                ),
            },
            sampling: Sampling {
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
                min_p: s.min_p,
                seed: s.seed,
                presence_penalty: s.presence_penalty,
                frequency_penalty: s.frequency_penalty,
                ignore_eos: s.ignore_eos,
                logprobs: s.logprobs,
                n: s.n,
            },
            max_tokens: r.max_tokens,
            stop: r.stop.clone(),
            tenant: r.tenant.clone(),
            tools: r
                .tools
                .iter()
                .map(|t| ToolSpec {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    parameters: t.function.parameters.clone(),
                })
                .collect(),
            tool_choice: match &r.tool_choice {
                ToolChoice::Auto => "auto".into(),
                ToolChoice::Required => "required".into(),
                ToolChoice::Function(name) => format!("function:{name}"),
            },
            parallel_tool_calls: r.parallel_tool_calls,
            format: match &r.format {
                OutputFormat::Text => "text".into(),
                OutputFormat::JsonObject => "json_object".into(),
                OutputFormat::JsonSchema(_) => "json_schema".into(),
            },
            schema: match &r.format {
                OutputFormat::JsonSchema(s) => Some(s.clone()),
                _ => None,
            },
            batch: r.priority == Priority::Batch,
            resume: r.resume.clone(),
        }
    }
}

impl TryFrom<Request> for GenerateRequest {
    type Error = String;

    fn try_from(r: Request) -> Result<Self, String> {
        let s = r.sampling;
        Ok(Self {
            request_id: r.request_id,
            model: r.model,
            prompt: match r.prompt {
                PromptJson::Text(t) => Prompt::Text(t),
                PromptJson::Chat(messages) => Prompt::Chat(
                    messages
                        .into_iter()
                        .map(|m| ChatMessage {
                            role: m.role,
                            content: m.content,
                            tool_calls: m
                                .tool_calls
                                .into_iter()
                                .map(|c| ToolCall::function(c.id, c.name, c.arguments))
                                .collect(),
                            tool_call_id: m.tool_call_id,
                            name: m.name,
                        })
                        .collect(),
                ),
            },
            sampling: SamplingParams {
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
                min_p: s.min_p,
                seed: s.seed,
                presence_penalty: s.presence_penalty,
                frequency_penalty: s.frequency_penalty,
                ignore_eos: s.ignore_eos,
                logprobs: s.logprobs,
                n: s.n,
            },
            max_tokens: r.max_tokens,
            stop: r.stop,
            tenant: r.tenant,
            tools: r
                .tools
                .into_iter()
                .map(|t| Tool {
                    r#type: "function",
                    function: FunctionSpec {
                        name: t.name,
                        description: t.description,
                        parameters: t.parameters,
                    },
                })
                .collect(),
            tool_choice: match r.tool_choice.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => match other.strip_prefix("function:") {
                    Some(name) => ToolChoice::Function(name.to_owned()),
                    None => return Err(format!("unknown tool_choice '{other}'")),
                },
            },
            parallel_tool_calls: r.parallel_tool_calls,
            format: match (r.format.as_str(), r.schema) {
                ("text", _) => OutputFormat::Text,
                ("json_object", _) => OutputFormat::JsonObject,
                ("json_schema", Some(schema)) => OutputFormat::JsonSchema(schema),
                (other, _) => return Err(format!("unknown or incomplete format '{other}'")),
            },
            priority: if r.batch {
                Priority::Batch
            } else {
                Priority::Interactive
            },
            resume: r.resume,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogprobJson {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenLogprobJson {
    pub chosen: LogprobJson,
    pub top: Vec<LogprobJson>,
}

fn lp_out(l: &Logprob) -> LogprobJson {
    LogprobJson {
        token: l.token.clone(),
        bytes: l.bytes.clone(),
        logprob: l.logprob,
    }
}

fn lp_in(l: LogprobJson) -> Logprob {
    Logprob {
        token: l.token,
        bytes: l.bytes,
        logprob: l.logprob,
    }
}

/// One line of a stream: an event, or the error that ends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Queued {
        position: usize,
        eta_ms: u64,
    },
    Admitted {
        prompt_tokens: u32,
        max_tokens: u32,
        exact: bool,
    },
    Text {
        text: String,
        tokens: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ids: Vec<u32>,
    },
    Reasoning {
        text: String,
        tokens: u32,
    },
    Logprobs {
        tokens: Vec<TokenLogprobJson>,
    },
    ToolCall {
        index: u32,
        id: String,
        name: String,
        arguments: String,
    },
    Finished {
        reason: String,
        prompt_tokens: u32,
        completion_tokens: u32,
        cached_tokens: u32,
    },
    Choice {
        index: u32,
        event: Box<Frame>,
    },
    Error {
        error: ErrorJson,
    },
}

impl From<&Event> for Frame {
    fn from(e: &Event) -> Self {
        match e {
            Event::Queued { position, eta_ms } => Frame::Queued {
                position: *position,
                eta_ms: *eta_ms,
            },
            Event::Admitted {
                prompt_tokens,
                max_tokens,
                exact,
            } => Frame::Admitted {
                prompt_tokens: *prompt_tokens,
                max_tokens: *max_tokens,
                exact: *exact,
            },
            Event::Text { text, tokens, ids } => Frame::Text {
                text: text.clone(),
                tokens: *tokens,
                ids: ids.clone(),
            },
            Event::Reasoning { text, tokens } => Frame::Reasoning {
                text: text.clone(),
                tokens: *tokens,
            },
            Event::Logprobs(list) => Frame::Logprobs {
                tokens: list
                    .iter()
                    .map(|t| TokenLogprobJson {
                        chosen: lp_out(&t.chosen),
                        top: t.top.iter().map(lp_out).collect(),
                    })
                    .collect(),
            },
            Event::ToolCall {
                index,
                id,
                name,
                arguments,
            } => Frame::ToolCall {
                index: *index,
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            },
            Event::Finished { reason, usage } => Frame::Finished {
                reason: match reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                    FinishReason::ToolCalls => "tool_calls",
                }
                .into(),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_tokens: usage.cached_tokens,
            },
            Event::Choice { index, event } => Frame::Choice {
                index: *index,
                event: Box::new(Frame::from(event.as_ref())),
            },
        }
    }
}

impl Frame {
    /// The event or error this line carries.
    pub fn into_item(self) -> Result<Event, BackendError> {
        Ok(match self {
            Frame::Queued { position, eta_ms } => Event::Queued { position, eta_ms },
            Frame::Admitted {
                prompt_tokens,
                max_tokens,
                exact,
            } => Event::Admitted {
                prompt_tokens,
                max_tokens,
                exact,
            },
            Frame::Text { text, tokens, ids } => Event::Text { text, tokens, ids },
            Frame::Reasoning { text, tokens } => Event::Reasoning { text, tokens },
            Frame::Logprobs { tokens } => Event::Logprobs(
                tokens
                    .into_iter()
                    .map(|t| TokenLogprob {
                        chosen: lp_in(t.chosen),
                        top: t.top.into_iter().map(lp_in).collect(),
                    })
                    .collect(),
            ),
            Frame::ToolCall {
                index,
                id,
                name,
                arguments,
            } => Event::ToolCall {
                index,
                id,
                name,
                arguments,
            },
            Frame::Finished {
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => Event::Finished {
                reason: match reason.as_str() {
                    "stop" => FinishReason::Stop,
                    "length" => FinishReason::Length,
                    "tool_calls" => FinishReason::ToolCalls,
                    other => {
                        return Err(BackendError::Internal(format!(
                            "a node sent an unknown finish reason '{other}'"
                        )))
                    }
                },
                usage: Usage {
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                },
            },
            Frame::Choice { index, event } => Event::Choice {
                index,
                event: Box::new(event.into_item()?),
            },
            Frame::Error { error } => return Err(error.into()),
        })
    }
}

/// A `BackendError` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorJson {
    ContextLengthExceeded {
        prompt_tokens: u32,
        context_length: u32,
    },
    InvalidPrompt {
        message: String,
    },
    ToolsUnsupported {
        message: String,
    },
    UnsupportedSchema {
        tool: Option<usize>,
        message: String,
    },
    InvalidRequest {
        message: String,
        field: Option<backend::Field>,
    },
    Overloaded {
        queued: usize,
        retry_after: u64,
    },
    QueueShareExceeded {
        waiting: usize,
        limit: usize,
        retry_after: u64,
    },
    QueueTimeout {
        waited_secs: u64,
        retry_after: u64,
    },
    Upstream {
        status: u16,
        message: String,
        r#type: Option<String>,
        code: Option<String>,
        param: Option<String>,
        retry_after: Option<u64>,
    },
    Unreachable {
        message: String,
    },
    ShuttingDown,
    Unavailable {
        message: String,
    },
    Internal {
        message: String,
    },
}

impl From<&BackendError> for ErrorJson {
    fn from(e: &BackendError) -> Self {
        use BackendError as B;
        match e.clone() {
            B::ContextLengthExceeded {
                prompt_tokens,
                context_length,
            } => Self::ContextLengthExceeded {
                prompt_tokens,
                context_length,
            },
            B::InvalidPrompt(message) => Self::InvalidPrompt { message },
            B::ToolsUnsupported(message) => Self::ToolsUnsupported { message },
            B::UnsupportedSchema { site, message } => Self::UnsupportedSchema {
                tool: match site {
                    SchemaSite::Tool(i) => Some(i),
                    SchemaSite::Format => None,
                },
                message,
            },
            B::InvalidRequest { message, field } => Self::InvalidRequest { message, field },
            B::Overloaded {
                queued,
                retry_after,
            } => Self::Overloaded {
                queued,
                retry_after,
            },
            B::QueueShareExceeded {
                waiting,
                limit,
                retry_after,
            } => Self::QueueShareExceeded {
                waiting,
                limit,
                retry_after,
            },
            B::QueueTimeout {
                waited_secs,
                retry_after,
            } => Self::QueueTimeout {
                waited_secs,
                retry_after,
            },
            B::Upstream(u) => Self::Upstream {
                status: u.status,
                message: u.message,
                r#type: u.r#type,
                code: u.code,
                param: u.param,
                retry_after: u.retry_after,
            },
            B::Unreachable(message) => Self::Unreachable { message },
            B::ShuttingDown => Self::ShuttingDown,
            B::Unavailable(message) => Self::Unavailable { message },
            B::Internal(message) => Self::Internal { message },
        }
    }
}

impl From<ErrorJson> for BackendError {
    fn from(e: ErrorJson) -> Self {
        use ErrorJson as J;
        match e {
            J::ContextLengthExceeded {
                prompt_tokens,
                context_length,
            } => Self::ContextLengthExceeded {
                prompt_tokens,
                context_length,
            },
            J::InvalidPrompt { message } => Self::InvalidPrompt(message),
            J::ToolsUnsupported { message } => Self::ToolsUnsupported(message),
            J::UnsupportedSchema { tool, message } => Self::UnsupportedSchema {
                site: tool.map_or(SchemaSite::Format, SchemaSite::Tool),
                message,
            },
            J::InvalidRequest { message, field } => Self::InvalidRequest { message, field },
            J::Overloaded {
                queued,
                retry_after,
            } => Self::Overloaded {
                queued,
                retry_after,
            },
            J::QueueShareExceeded {
                waiting,
                limit,
                retry_after,
            } => Self::QueueShareExceeded {
                waiting,
                limit,
                retry_after,
            },
            J::QueueTimeout {
                waited_secs,
                retry_after,
            } => Self::QueueTimeout {
                waited_secs,
                retry_after,
            },
            J::Upstream {
                status,
                message,
                r#type,
                code,
                param,
                retry_after,
            } => Self::Upstream(UpstreamError {
                status,
                message,
                r#type,
                code,
                param,
                retry_after,
            }),
            J::Unreachable { message } => Self::Unreachable(message),
            J::ShuttingDown => Self::ShuttingDown,
            J::Unavailable { message } => Self::Unavailable(message),
            J::Internal { message } => Self::Internal(message),
        }
    }
}

/// A count of prompt tokens (`POST /internal/v1/count`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    pub prompt_tokens: u32,
}
