//! Server-sent events for streamed completions.
//!
//! The response body owns the request's [`Served`] events and nothing else holds them, so when
//! the client disconnects and hyper drops the body, they are dropped: generation stops and the
//! serving layer settles what was delivered.
//!
//! A request waiting in a queue gets its headers at once (`x-flywheel-queue-position`,
//! `x-flywheel-queue-eta-ms`), then an SSE comment line `: queue position=N eta_ms=M` whenever
//! its place changes.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use backend::{BackendError, Event, FinishReason, TokenLogprob, Usage};
use bytes::Bytes;
use serde_json::Value;
use serving::Served;

use crate::error::ApiError;
use crate::metrics;
use crate::observe::Streamed;
use crate::wire::tools::ToolCallView;
use crate::wire::{ChunkFormat, ChunkUsage, ResponseMeta, UsageView};

/// One `data: …` event.
pub fn frame(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    // Serializing a `Value` cannot fail.
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

/// One `event: NAME` + `data: …` event (Anthropic's and the Responses API's streams).
pub fn named_frame(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    frame(out, data);
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// The comment a queued request's stream carries when its place changes.
pub fn queue_comment(out: &mut Vec<u8>, position: usize, eta_ms: u64) {
    out.extend_from_slice(format!(": queue position={position} eta_ms={eta_ms}\n\n").as_bytes());
}

/// What usage a stream's chunks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOptions {
    /// `stream_options.include_usage`: a last chunk with the usage (`null` on the others).
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats`: the usage so far on every chunk.
    pub continuous: bool,
}

/// Writes one API's SSE frames for a stream's events. The driver ([`respond`]) reads the
/// events, keeps the usage so far, sends queue comments and stops reading at the end.
pub trait Encoder: Send + 'static {
    /// Frames sent before any event is read (OpenAI's chat sends the assistant role).
    fn open(&mut self, out: &mut Vec<u8>) {
        let _ = out;
    }
    /// The backend counted the prompt.
    fn admitted(&mut self, out: &mut Vec<u8>, prompt_tokens: u32) {
        let _ = (out, prompt_tokens);
    }
    /// A piece of the answer's text (never empty); `so_far` counts it.
    fn text(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage);
    /// The events that follow are answer `index`'s (a request for several answers, `n`).
    fn select(&mut self, index: u32) {
        let _ = index;
    }
    /// The selected answer ended (a request for several answers; the stream's own `finish`
    /// follows once all have).
    fn answer_finished(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        let _ = (out, reason, usage);
    }
    /// Log-probabilities of the tokens the next text releases (only when asked for).
    fn logprobs(&mut self, tokens: Vec<TokenLogprob>) {
        let _ = tokens;
    }
    /// A piece of the model's reasoning (never empty); `so_far` counts it.
    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage);
    /// A whole tool call, the `index`th of the answer.
    fn tool_call(&mut self, out: &mut Vec<u8>, index: u32, call: ToolCallView, so_far: Usage);
    /// The end of the answer; the stream ends after this.
    fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage);
    /// An error after the stream started; the stream ends after this.
    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError);
    /// Work that must be done after `finish` and before its frames are sent (a stored
    /// response is saved before the client reads `response.completed`).
    fn settle(&mut self) -> Option<futures::future::BoxFuture<'static, ()>> {
        None
    }
}

struct State<E> {
    /// `None` once the stream is over, so the backend's stream is dropped at once.
    events: Option<Served>,
    prompt_param: &'static str,
    /// An event read before the response started (to set its headers), sent first.
    pending: Option<Event>,
    encoder: E,
    /// For logs and metrics.
    id: String,
    model: String,
    opened: bool,
    /// Prompt tokens (from admission) and completion tokens sent so far.
    so_far: Usage,
}

impl<E: Encoder> State<E> {
    async fn next_event(&mut self) -> Option<Result<Event, ApiError>> {
        if let Some(event) = self.pending.take() {
            return Some(Ok(event));
        }
        let next = self.events.as_mut()?.next().await?;
        Some(next.map_err(|err| ApiError::from_serve(err, self.prompt_param)))
    }

    /// The next bytes to send, or `None` when the stream is over.
    async fn next_frame(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        if !self.opened {
            self.opened = true;
            self.encoder.open(&mut out);
            if !out.is_empty() {
                return Some(out.into());
            }
        }
        self.events.as_ref()?;
        loop {
            match self.next_event().await {
                Some(Ok(Event::Queued { position, eta_ms })) => {
                    queue_comment(&mut out, position, eta_ms);
                }
                Some(Ok(Event::Admitted { prompt_tokens, .. })) => {
                    self.so_far.prompt_tokens = prompt_tokens;
                    self.encoder.admitted(&mut out, prompt_tokens);
                }
                Some(Ok(
                    event @ (Event::Text { .. }
                    | Event::Reasoning { .. }
                    | Event::Logprobs(_)
                    | Event::ToolCall { .. }),
                )) => self.answer_event(&mut out, event),
                Some(Ok(Event::Choice { index, event })) => {
                    self.encoder.select(index);
                    match *event {
                        Event::Finished { reason, usage } => {
                            self.encoder.answer_finished(&mut out, reason, usage);
                        }
                        event => self.answer_event(&mut out, event),
                    }
                }
                Some(Ok(Event::Finished { reason, usage })) => {
                    self.events = None;
                    metrics::record_usage(&self.model, usage);
                    tracing::debug!(id = %self.id, ?reason, ?usage, "stream finished");
                    self.so_far = usage;
                    self.encoder.finish(&mut out, reason, usage);
                    if let Some(work) = self.encoder.settle() {
                        work.await;
                    }
                }
                Some(Err(err)) => self.fail(&mut out, &err),
                None => {
                    let err = ApiError::from_backend(
                        BackendError::Internal(
                            "the backend's stream ended before the generation finished".into(),
                        ),
                        self.prompt_param,
                    );
                    self.fail(&mut out, &err);
                }
            }
            if !out.is_empty() || self.events.is_none() {
                return (!out.is_empty()).then(|| out.into());
            }
        }
    }

    /// A piece of the (selected) answer.
    fn answer_event(&mut self, out: &mut Vec<u8>, event: Event) {
        match event {
            Event::Text { text, tokens } => {
                self.so_far.completion_tokens =
                    self.so_far.completion_tokens.saturating_add(tokens);
                if !text.is_empty() {
                    self.encoder.text(out, &text, self.so_far);
                }
            }
            Event::Reasoning { text, tokens } => {
                self.so_far.completion_tokens =
                    self.so_far.completion_tokens.saturating_add(tokens);
                if !text.is_empty() {
                    self.encoder.reasoning(out, &text, self.so_far);
                }
            }
            Event::Logprobs(tokens) => self.encoder.logprobs(tokens),
            Event::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let call = ToolCallView::new(id, name, arguments);
                self.encoder.tool_call(out, index, call, self.so_far);
            }
            // Not pieces of an answer (a backend never wraps them in `Choice`).
            Event::Queued { .. }
            | Event::Admitted { .. }
            | Event::Finished { .. }
            | Event::Choice { .. } => {}
        }
    }

    /// An error event; the stream then ends.
    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError) {
        self.events = None;
        tracing::warn!(id = %self.id, error = %err, "stream failed after it started");
        self.encoder.fail(out, err);
    }
}

/// OpenAI's streams: `data:` chunks in `F`'s shape, then `data: [DONE]` (not after an error).
pub struct OpenAi<F> {
    format: F,
    meta: ResponseMeta,
    usage: UsageOptions,
    /// The answer the events are about (`n` > 1), and whether there are several.
    index: u32,
    several: bool,
    /// Per answer, log-probabilities of tokens whose text has not been sent yet.
    logprobs: Vec<Vec<TokenLogprob>>,
}

impl<F: ChunkFormat> OpenAi<F> {
    fn pending_logprobs(&mut self) -> &mut Vec<TokenLogprob> {
        let index = self.index as usize;
        if self.logprobs.len() <= index {
            self.logprobs.resize_with(index + 1, Vec::new);
        }
        &mut self.logprobs[index]
    }

    fn chunk_usage(&self, so_far: Usage) -> ChunkUsage {
        if self.usage.continuous {
            ChunkUsage::Some(UsageView::from(so_far))
        } else if self.usage.include_usage {
            ChunkUsage::Null
        } else {
            ChunkUsage::Omit
        }
    }
}

impl<F: ChunkFormat> Encoder for OpenAi<F> {
    fn open(&mut self, out: &mut Vec<u8>) {
        let usage = self.chunk_usage(Usage::default());
        if let Some(opening) = self.format.opening(&self.meta, usage) {
            frame(out, &opening);
        }
    }

    fn select(&mut self, index: u32) {
        self.index = index;
        self.several = true;
    }

    fn answer_finished(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        let chunk_usage = self.chunk_usage(usage);
        let data = self
            .format
            .finish(&self.meta, self.index, reason, chunk_usage);
        frame(out, &data);
    }

    fn logprobs(&mut self, tokens: Vec<TokenLogprob>) {
        self.pending_logprobs().extend(tokens);
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage) {
        let usage = self.chunk_usage(so_far);
        let logprobs = std::mem::take(self.pending_logprobs());
        let data = self
            .format
            .text(&self.meta, self.index, text, &logprobs, usage);
        frame(out, &data);
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage) {
        // Log-probabilities are reported for the answer's tokens only.
        self.pending_logprobs().clear();
        let usage = self.chunk_usage(so_far);
        if let Some(data) = self.format.reasoning(&self.meta, self.index, text, usage) {
            frame(out, &data);
        }
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, index: u32, call: ToolCallView, so_far: Usage) {
        self.pending_logprobs().clear();
        let usage = self.chunk_usage(so_far);
        let data = self
            .format
            .tool_call(&self.meta, self.index, index, call, usage);
        if let Some(data) = data {
            frame(out, &data);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        let chunk_usage = self.chunk_usage(usage);
        // Several answers finished one by one (`answer_finished`).
        if !self.several {
            frame(out, &self.format.finish(&self.meta, 0, reason, chunk_usage));
        }
        if self.usage.include_usage {
            frame(out, &self.format.usage(&self.meta, UsageView::from(usage)));
        }
        out.extend_from_slice(DONE);
    }

    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError) {
        let body = serde_json::to_value(err.body()).unwrap_or(Value::Null);
        frame(out, &body);
    }
}

/// A request's events, ready to stream.
pub struct Stream {
    pub events: Served,
    /// An event already read from `events` (a `Queued` one sets the queue headers).
    pub first: Option<Event>,
    pub meta: ResponseMeta,
    pub usage: UsageOptions,
    /// The request field that holds the prompt, for errors about it.
    pub prompt_param: &'static str,
}

/// Streams `stream`'s events to the client as OpenAI SSE in `format`'s chunk shape.
pub fn response<F: ChunkFormat>(stream: Stream, format: F) -> Response {
    let Stream {
        events,
        first,
        meta,
        usage,
        prompt_param,
    } = stream;
    let (id, model) = (meta.id.clone(), meta.model.clone());
    let encoder = OpenAi {
        format,
        meta,
        usage,
        index: 0,
        several: false,
        logprobs: Vec::new(),
    };
    respond(
        Source {
            events,
            first,
            id,
            model,
            prompt_param,
        },
        encoder,
    )
}

/// What [`respond`] streams: a request's events and what names it.
pub struct Source {
    pub events: Served,
    /// An event already read from `events` (a `Queued` one sets the queue headers).
    pub first: Option<Event>,
    /// The response id, for logs.
    pub id: String,
    /// The served model, for metrics.
    pub model: String,
    /// The request field that holds the prompt, for errors about it.
    pub prompt_param: &'static str,
}

/// Streams `source`'s events to the client as SSE written by `encoder`.
pub fn respond<E: Encoder>(source: Source, encoder: E) -> Response {
    let Source {
        events,
        first,
        id,
        model,
        prompt_param,
    } = source;
    let queued = match first {
        Some(Event::Queued { position, eta_ms }) => Some((position, eta_ms)),
        _ => None,
    };
    let state = State {
        events: Some(events),
        prompt_param,
        pending: first,
        encoder,
        id,
        model,
        opened: false,
        so_far: Usage::default(),
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let bytes = state.next_frame().await?;
        Some((Ok::<_, Infallible>(bytes), state))
    });
    let mut response = event_stream(Body::from_stream(stream));
    let headers = response.headers_mut();
    if let Some((position, eta_ms)) = queued {
        headers.insert("x-flywheel-queue-position", HeaderValue::from(position));
        headers.insert("x-flywheel-queue-eta-ms", HeaderValue::from(eta_ms));
    }
    response
}

/// A 200 carrying `body` as server-sent events (not cached, not buffered by proxies), marked
/// [`Streamed`] for the request's logs.
pub fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.extensions_mut().insert(Streamed);
    response
}
