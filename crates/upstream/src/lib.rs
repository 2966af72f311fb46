//! A [`Backend`] that serves a model by proxying to an external OpenAI-compatible server.
//!
//! Requests always go upstream as streams (`stream: true`, `include_usage: true`), so one code
//! path serves both our streamed and non-streamed responses and usage is always known. Upstream
//! errors pass through (status, message, type, code, param, `Retry-After`); a server that
//! cannot be reached, or a stream that breaks off, is [`BackendError::Unreachable`].
//!
//! Nothing crosses to the upstream before the serving layer holds the request's reservation: the
//! stream starts with `Admitted` (an upper bound of the prompt and the completion limit), and
//! the upstream is called only when the next item is asked for, so its refusals arrive as that
//! item. `max_tokens` is always sent (the reserved limit when the client sent none) and
//! enforced: text past it is cut off and the stream ends there with `length`. What the tenant
//! sees of a failure never names the upstream's address or credentials; the details are
//! logged.

mod logprobs;
mod tools;

use std::collections::VecDeque;
use std::time::Duration;

use backend::{
    Backend, BackendError, Event, EventStream, FinishReason, GenerateRequest, ModelInfo, Prompt,
    UpstreamError, Usage,
};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{json, Map, Value};

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`UpstreamConfig::timeout_seconds`].
const DEFAULT_TIMEOUT_SECONDS: u64 = 600;
/// Longest excerpt of a non-JSON error body quoted in a message.
const MAX_QUOTED_BODY: usize = 500;
/// Default for [`UpstreamConfig::default_max_tokens`].
const DEFAULT_MAX_TOKENS: u32 = 4096;
/// What replaces the upstream's address in messages a tenant may see.
const REDACTED_ADDRESS: &str = "<upstream>";

/// One upstream-served model. `Debug` leaves the API key out.
#[derive(Clone, serde::Deserialize)]
pub struct UpstreamConfig {
    /// The served name.
    pub name: String,
    /// The upstream's OpenAI base URL, e.g. `http://host:port/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// The upstream's model id; defaults to `name`.
    pub model: Option<String>,
    /// Longest silence from the upstream (before its headers, or between two reads of the
    /// stream) before the request fails as unreachable. Defaults to 600 s.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Completion tokens asked for (and reserved) when a client sends no `max_tokens`.
    /// Defaults to 4096; lower it for an upstream whose context is smaller.
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("default_max_tokens", &self.default_max_tokens)
            .finish()
    }
}

pub struct UpstreamBackend {
    name: String,
    model: String,
    api_key: Option<String>,
    chat_url: reqwest::Url,
    completions_url: reqwest::Url,
    client: reqwest::Client,
    created: u64,
    default_max_tokens: u32,
    /// The upstream's base URL and `host[:port]`, never shown to tenants.
    secrets: Redactions,
}

impl UpstreamBackend {
    pub fn new(cfg: UpstreamConfig) -> Result<Self, String> {
        let base = cfg.base_url.trim_end_matches('/');
        let parse = |path: &str| {
            let url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| {
                format!(
                    "invalid base_url '{}' for upstream model '{}': {e}",
                    cfg.base_url, cfg.name
                )
            })?;
            match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(format!(
                    "invalid base_url '{}' for upstream model '{}': scheme '{other}' is not http or https",
                    cfg.base_url, cfg.name
                )),
            }
        };
        let chat_url = parse("/chat/completions")?;
        let completions_url = parse("/completions")?;
        let timeout = Duration::from_secs(cfg.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS));
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(timeout)
            .build()
            .map_err(|e| {
                format!(
                    "cannot build the HTTP client for upstream model '{}': {e}",
                    cfg.name
                )
            })?;
        let mut secrets = vec![base.to_string()];
        if let Some(host) = chat_url.host_str() {
            secrets.push(match chat_url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            });
        }
        secrets.extend(cfg.api_key.iter().filter(|k| !k.is_empty()).cloned());
        Ok(Self {
            model: cfg.model.unwrap_or_else(|| cfg.name.clone()),
            name: cfg.name,
            api_key: cfg.api_key,
            chat_url,
            completions_url,
            client,
            created: unix_now(),
            default_max_tokens: cfg.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1),
            secrets: Redactions(secrets),
        })
    }

    /// The upstream URL and OpenAI body for `request`, asking for at most `max_tokens`.
    fn upstream_request(
        &self,
        request: &GenerateRequest,
        max_tokens: u32,
    ) -> (reqwest::Url, Value) {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        let url = match &request.prompt {
            Prompt::Chat(messages) => {
                body.insert("messages".into(), tools::messages(messages));
                tools::offer(request, &mut body);
                self.chat_url.clone()
            }
            Prompt::Text(prompt) => {
                body.insert("prompt".into(), json!(prompt));
                self.completions_url.clone()
            }
        };
        let s = &request.sampling;
        body.insert("temperature".into(), json!(decimal(s.temperature)));
        body.insert("top_p".into(), json!(decimal(s.top_p)));
        if s.top_k > 0 {
            body.insert("top_k".into(), json!(s.top_k));
        }
        if s.ignore_eos {
            body.insert("ignore_eos".into(), json!(true));
        }
        if s.min_p > 0.0 {
            body.insert("min_p".into(), json!(decimal(s.min_p)));
        }
        if let Some(seed) = s.seed {
            body.insert("seed".into(), json!(seed));
        }
        if s.presence_penalty != 0.0 {
            body.insert(
                "presence_penalty".into(),
                json!(decimal(s.presence_penalty)),
            );
        }
        if s.frequency_penalty != 0.0 {
            body.insert(
                "frequency_penalty".into(),
                json!(decimal(s.frequency_penalty)),
            );
        }
        if let Some(top) = s.logprobs {
            let chat = matches!(request.prompt, Prompt::Chat(_));
            logprobs::request_fields(top, chat, &mut body);
        }
        if let Some(format) = tools::response_format(&request.format) {
            body.insert("response_format".into(), format);
        }
        body.insert("max_tokens".into(), json!(max_tokens));
        if !request.stop.is_empty() {
            body.insert("stop".into(), json!(request.stop));
        }
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({ "include_usage": true }));
        (url, Value::Object(body))
    }
}

/// An `f32` as the decimal a person wrote (0.7, not 0.699999988079071).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

#[async_trait::async_trait]
impl Backend for UpstreamBackend {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.name.clone(),
            owned_by: "upstream".into(),
            context_length: None,
            created: self.created,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        if request.sampling.n > 1 {
            return Err(BackendError::InvalidRequest {
                message: format!(
                    "'{}' is served by an upstream server, through which 'n' > 1 is not supported yet; send one request per answer.",
                    self.name
                ),
                field: Some(backend::Field::Choices),
            });
        }
        let limit = request.max_tokens.unwrap_or(self.default_max_tokens);
        // The serving layer reserved this same bound, so admission resizes nothing.
        let prompt_tokens = request.max_prompt_tokens(request.prompt.text_bytes());
        let admitted = Event::Admitted {
            prompt_tokens,
            max_tokens: limit,
            exact: false,
        };
        let (url, body) = self.upstream_request(&request, limit);
        let mut builder = self.client.post(url).json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let call = Call {
            builder,
            request_id: request.request_id,
            upstream_model: self.model.clone(),
            secrets: self.secrets.clone(),
            bounds: Bounds {
                limit,
                prompt_tokens,
            },
        };
        // The call is made only when the item after `Admitted` is asked for, i.e. once the
        // gateway has reserved the worst case.
        let answer = futures::stream::once(call.run()).flatten();
        Ok(Box::pin(
            futures::stream::iter([Ok(admitted)]).chain(answer),
        ))
    }
}

/// Strings of this server's configuration that tenants must not see in messages: the
/// upstream's base URL, its `host[:port]` and its API key.
#[derive(Clone)]
struct Redactions(Vec<String>);

impl Redactions {
    fn apply(&self, message: &str) -> String {
        self.0.iter().fold(message.to_string(), |m, secret| {
            m.replace(secret.as_str(), REDACTED_ADDRESS)
        })
    }

    fn error(&self, mut error: UpstreamError) -> UpstreamError {
        error.message = self.apply(&error.message);
        error
    }
}

/// What the gateway reserved for a request: its completion limit and its prompt's upper bound
/// (billed when the upstream does not report the prompt's tokens).
#[derive(Clone, Copy)]
struct Bounds {
    limit: u32,
    prompt_tokens: u32,
}

impl Bounds {
    /// The usage to bill: the upstream's report where it gave one, the completion at least
    /// what was delivered (`delivered` tokens) and never past the limit.
    fn usage(&self, reported: Option<Usage>, delivered: u32) -> Usage {
        let prompt_tokens = reported.map_or(self.prompt_tokens, |u| u.prompt_tokens);
        let completion = reported.map_or(0, |u| u.completion_tokens).max(delivered);
        Usage {
            prompt_tokens,
            completion_tokens: completion.min(self.limit),
            cached_tokens: reported.map_or(0, |u| u.cached_tokens.min(prompt_tokens)),
        }
    }
}

/// One upstream call, made when its stream is first polled.
struct Call {
    builder: reqwest::RequestBuilder,
    request_id: String,
    upstream_model: String,
    secrets: Redactions,
    bounds: Bounds,
}

impl Call {
    async fn run(self) -> EventStream {
        let fail =
            |err: BackendError| -> EventStream { Box::pin(futures::stream::iter([Err(err)])) };
        tracing::debug!(request_id = %self.request_id, upstream_model = %self.upstream_model, "sending upstream");
        let response = match self.builder.send().await {
            Ok(response) => response,
            Err(err) => return fail(unreachable(&self.request_id, &err)),
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = response.text().await.unwrap_or_default();
            if matches!(status.as_u16(), 401 | 403 | 407) {
                // About this server's credentials, not the tenant's.
                tracing::error!(request_id = %self.request_id, status = status.as_u16(), body = %text, "the upstream refused this server's credentials");
                return fail(BackendError::Upstream(UpstreamError {
                    status: 502,
                    message: "The upstream server refused this server's credentials; tell the \
                              operator. Retrying will not help until they fix it."
                        .into(),
                    r#type: Some("server_error".into()),
                    code: Some("upstream_error".into()),
                    param: None,
                    retry_after: None,
                }));
            }
            let error = error_from_body(status.as_u16(), &text, retry_after);
            return fail(BackendError::Upstream(self.secrets.error(error)));
        }
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            // A server that ignored `stream: true` and answered with one JSON object.
            return match response.json::<Value>().await {
                Ok(value) => Box::pin(futures::stream::iter(whole_response(
                    &value,
                    self.bounds,
                    &self.secrets,
                ))),
                Err(err) => fail(unreachable(&self.request_id, &err)),
            };
        }
        Box::pin(translate(
            response.bytes_stream().eventsource(),
            self.bounds,
            self.request_id,
            self.secrets,
        ))
    }
}

/// A failed call as tenants see it: what went wrong, without the upstream's address (reqwest
/// names the URL); the whole error is logged.
fn unreachable(request_id: &str, err: &reqwest::Error) -> BackendError {
    // The error's chain says what failed (connect refused, timed out, …).
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::warn!(request_id = %request_id, error = %chain, "the upstream call failed");
    let what = if err.is_timeout() {
        "it did not answer in time"
    } else if err.is_connect() {
        "the connection to it failed"
    } else if err.is_decode() || err.is_body() {
        "its answer could not be read"
    } else {
        "the request to it failed"
    };
    BackendError::Unreachable(what.into())
}

/// Reads an OpenAI-shaped (or not) error body.
pub fn error_from_body(status: u16, text: &str, retry_after: Option<u64>) -> UpstreamError {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut error = UpstreamError {
        status,
        message: String::new(),
        r#type: None,
        code: None,
        param: None,
        retry_after,
    };
    let field = |v: &Value, key: &str| match v.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match value.get("error") {
        Some(e @ Value::Object(_)) => {
            error.message = field(e, "message").unwrap_or_default();
            error.r#type = field(e, "type");
            error.code = field(e, "code");
            error.param = field(e, "param");
        }
        Some(Value::String(s)) => error.message = s.clone(),
        _ => {
            error.message = field(&value, "message")
                .or_else(|| field(&value, "detail"))
                .unwrap_or_default();
        }
    }
    if error.message.is_empty() {
        let excerpt: String = text.trim().chars().take(MAX_QUOTED_BODY).collect();
        error.message = if excerpt.is_empty() {
            format!("The upstream server answered with status {status}.")
        } else {
            format!("The upstream server answered with status {status}: {excerpt}")
        };
    }
    error
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn usage(value: &Value) -> Usage {
    let count = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Usage {
        prompt_tokens: count(value.get("prompt_tokens")),
        completion_tokens: count(value.get("completion_tokens")),
        cached_tokens: count(value.pointer("/prompt_tokens_details/cached_tokens")),
    }
}

/// The text of a choice: a chat delta's or message's content, or a completion's text.
fn choice_text(choice: &Value) -> Option<&str> {
    choice
        .pointer("/delta/content")
        .or_else(|| choice.pointer("/message/content"))
        .or_else(|| choice.get("text"))
        .and_then(Value::as_str)
}

/// The reasoning of a chat choice, as reasoning servers send it (vLLM and DeepSeek:
/// `reasoning_content`; newer vLLM and OpenRouter: `reasoning`).
fn choice_reasoning(choice: &Value) -> Option<&str> {
    let part = choice.get("delta").or_else(|| choice.get("message"))?;
    part.get("reasoning_content")
        .or_else(|| part.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// The events of a non-streamed response. Text past the limit (by the upstream's count, or
/// one token per byte when it reports none) is cut off in proportion.
fn whole_response(
    value: &Value,
    bounds: Bounds,
    secrets: &Redactions,
) -> Vec<backend::Result<Event>> {
    if let Some(err) = value.get("error") {
        let text = json!({ "error": err }).to_string();
        let error = secrets.error(error_from_body(502, &text, None));
        return vec![Err(BackendError::Upstream(error))];
    }
    let choice = value.pointer("/choices/0").unwrap_or(&Value::Null);
    let mut text = choice_text(choice).unwrap_or_default().to_string();
    let mut reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map_or(FinishReason::Stop, finish_reason);
    let reported = value.get("usage").map(usage);
    let produced = reported.map_or_else(
        || u32::try_from(text.len()).unwrap_or(u32::MAX),
        |u| u.completion_tokens,
    );
    if produced > bounds.limit {
        let chars = text.chars().count();
        let keep = (chars as u64 * u64::from(bounds.limit) / u64::from(produced)) as usize;
        if let Some((at, _)) = text.char_indices().nth(keep) {
            text.truncate(at);
        }
        reason = FinishReason::Length;
    }
    let usage = bounds.usage(reported, produced);
    let mut calls = tools::Calls::default();
    calls.absorb(choice);
    let mut events = Vec::new();
    if let Some(reasoning) = choice_reasoning(choice) {
        // Counted with the text below: the upstream reports one completion count.
        events.push(Ok(Event::Reasoning {
            text: reasoning.to_owned(),
            tokens: 0,
        }));
    }
    if let Some(tokens) = logprobs::of_choice(choice).filter(|t| !t.is_empty()) {
        events.push(Ok(Event::Logprobs(tokens)));
    }
    events.push(Ok(Event::text(text, usage.completion_tokens)));
    events.extend(calls.take_events().into_iter().map(Ok));
    events.push(Ok(Event::Finished { reason, usage }));
    events
}

/// Turns the upstream's SSE chunks into [`Event`]s, one token per chunk of text, ending the
/// stream (`length`) at the first chunk past the limit.
struct Translate<S> {
    inner: S,
    bounds: Bounds,
    request_id: String,
    secrets: Redactions,
    finish: Option<FinishReason>,
    /// The upstream's usage, once it reported one.
    usage: Option<Usage>,
    /// Chunks of text (and of tool calls) passed on.
    delivered: u32,
    /// Tool calls being streamed, sent whole before the answer finishes.
    calls: tools::Calls,
    /// Events ready to hand out before reading on.
    ready: VecDeque<backend::Result<Event>>,
    done: bool,
}

impl<S, E> Translate<S>
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Display,
{
    /// The gathered tool calls, then `Finished`: the first of these now, the rest queued.
    fn finished(&mut self, reason: FinishReason) -> backend::Result<Event> {
        self.done = true;
        let finished = Ok(Event::Finished {
            reason,
            usage: self.bounds.usage(self.usage, self.delivered),
        });
        let mut calls = self.calls.take_events().into_iter().map(Ok);
        match calls.next() {
            None => finished,
            Some(first) => {
                self.ready.extend(calls);
                self.ready.push_back(finished);
                first
            }
        }
    }

    fn fail(&mut self, err: BackendError) -> backend::Result<Event> {
        self.done = true;
        Err(err)
    }

    async fn next_event(&mut self) -> Option<backend::Result<Event>> {
        if let Some(event) = self.ready.pop_front() {
            return Some(event);
        }
        if self.done {
            return None;
        }
        loop {
            let sse = match self.inner.next().await {
                None => {
                    return Some(match self.finish {
                        Some(reason) => self.finished(reason),
                        None => self.fail(BackendError::Unreachable(
                            "the upstream stream ended before the generation finished".into(),
                        )),
                    })
                }
                Some(Err(e)) => {
                    tracing::warn!(request_id = %self.request_id, error = %e, "reading the upstream stream failed");
                    return Some(self.fail(BackendError::Unreachable(
                        "reading its stream failed".into(),
                    )));
                }
                Some(Ok(sse)) => sse,
            };
            let data = sse.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                let reason = self.finish.unwrap_or(FinishReason::Stop);
                return Some(self.finished(reason));
            }
            let chunk: Value = match serde_json::from_str(data) {
                Ok(chunk) => chunk,
                Err(e) => {
                    return Some(self.fail(BackendError::Upstream(UpstreamError {
                        status: 502,
                        message: format!("The upstream server sent an invalid stream chunk: {e}"),
                        r#type: Some("server_error".into()),
                        code: Some("upstream_error".into()),
                        param: None,
                        retry_after: None,
                    })))
                }
            };
            if chunk.get("error").is_some() {
                let error = self.secrets.error(error_from_body(502, data, None));
                return Some(self.fail(BackendError::Upstream(error)));
            }
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                self.usage = Some(usage(u));
            }
            if let Some(choice) = chunk.pointer("/choices/0") {
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    self.finish = Some(finish_reason(reason));
                }
                if self.calls.absorb(choice) {
                    if self.delivered >= self.bounds.limit {
                        tracing::warn!(request_id = %self.request_id, limit = self.bounds.limit, "the upstream sent more than max_tokens; cut off");
                        return Some(self.finished(FinishReason::Length));
                    }
                    self.delivered += 1;
                }
                let reasoning = choice_reasoning(choice).map(|text| Event::Reasoning {
                    text: text.to_owned(),
                    tokens: 1,
                });
                if let Some(tokens) = logprobs::of_choice(choice).filter(|t| !t.is_empty()) {
                    self.ready.push_back(Ok(Event::Logprobs(tokens)));
                }
                let text = choice_text(choice)
                    .filter(|t| !t.is_empty())
                    .map(|text| Event::text(text, 1));
                for event in reasoning.into_iter().chain(text) {
                    if self.delivered >= self.bounds.limit {
                        // Past the `max_tokens` it was sent: what was delivered is all there is.
                        tracing::warn!(request_id = %self.request_id, limit = self.bounds.limit, "the upstream sent more than max_tokens; cut off");
                        let delivered: Vec<_> = self.ready.drain(..).collect();
                        let first = self.finished(FinishReason::Length);
                        for (at, event) in delivered.into_iter().chain([first]).enumerate() {
                            self.ready.insert(at, event);
                        }
                        return self.ready.pop_front();
                    }
                    self.delivered += 1;
                    self.ready.push_back(Ok(event));
                }
                if let Some(event) = self.ready.pop_front() {
                    return Some(event);
                }
            }
        }
    }
}

fn translate<S, E>(
    inner: S,
    bounds: Bounds,
    request_id: String,
    secrets: Redactions,
) -> impl Stream<Item = backend::Result<Event>> + Send
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Unpin + Send,
    E: std::fmt::Display + Send,
{
    let state = Translate {
        inner,
        bounds,
        request_id,
        secrets,
        finish: None,
        usage: None,
        delivered: 0,
        calls: tools::Calls::default(),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let event = state.next_event().await?;
        Some((event, state))
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_all_shapes() {
        let e = error_from_body(
            400,
            r#"{"error":{"message":"bad","type":"invalid_request_error","code":"x","param":"messages"}}"#,
            None,
        );
        assert_eq!(e.message, "bad");
        assert_eq!(e.code.as_deref(), Some("x"));
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = error_from_body(500, r#"{"error":{"message":"m","code":500}}"#, None);
        assert_eq!(e.code.as_deref(), Some("500"));
        let e = error_from_body(422, r#"{"detail":"nope"}"#, None);
        assert_eq!(e.message, "nope");
        let e = error_from_body(503, "", Some(3));
        assert_eq!(e.retry_after, Some(3));
        assert!(e.message.contains("503"), "{}", e.message);
        let e = error_from_body(502, "<html>bad gateway</html>", None);
        assert!(e.message.contains("bad gateway"), "{}", e.message);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let cfg: UpstreamConfig = serde_json::from_value(json!({
            "name": "m", "base_url": "http://h/v1", "api_key": "sk-secret"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{cfg:?}").contains("sk-secret"));
        assert_eq!(cfg.timeout_seconds, None);
    }

    #[test]
    fn decimals_stay_readable() {
        assert_eq!(decimal(0.7), 0.7);
        assert_eq!(decimal(1.0), 1.0);
    }

    #[test]
    fn bad_base_urls_are_refused() {
        let cfg = |url: &str| UpstreamConfig {
            name: "m".into(),
            base_url: url.into(),
            api_key: None,
            model: None,
            timeout_seconds: None,
            default_max_tokens: None,
        };
        assert!(UpstreamBackend::new(cfg("not a url")).is_err());
        assert!(UpstreamBackend::new(cfg("ftp://host/v1")).is_err());
        let ok = UpstreamBackend::new(cfg("http://127.0.0.1:1/v1/"));
        assert!(ok.is_ok_and(|b| b.chat_url.as_str() == "http://127.0.0.1:1/v1/chat/completions"));
    }
}
