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
use backend::{BackendError, Event, Usage};
use bytes::Bytes;
use serving::Served;

use crate::error::ApiError;
use crate::metrics;
use crate::observe::Streamed;
use crate::wire::tools::ToolCallView;
use crate::wire::{ChunkFormat, ResponseMeta};

pub use wire::sse::{frame, named_frame, queue_comment, Encoder, OpenAi, UsageOptions, DONE};

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
            Event::Text { text, tokens, .. } => {
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
    let encoder = OpenAi::new(format, meta, usage);
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
