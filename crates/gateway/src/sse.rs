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
use serde_json::Value;
use serving::Served;

use crate::error::ApiError;
use crate::metrics;
use crate::observe::Streamed;
use crate::wire::tools::ToolCallView;
use crate::wire::{ChunkFormat, ChunkUsage, ResponseMeta, UsageView};

/// One `data: …` event.
fn frame(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    // Serializing a `Value` cannot fail.
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// What usage a stream's chunks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOptions {
    /// `stream_options.include_usage`: a last chunk with the usage (`null` on the others).
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats`: the usage so far on every chunk.
    pub continuous: bool,
}

struct State<F> {
    /// `None` once the stream is over, so the backend's stream is dropped at once.
    events: Option<Served>,
    prompt_param: &'static str,
    /// An event read before the response started (to set its headers), sent first.
    pending: Option<Event>,
    format: F,
    meta: ResponseMeta,
    usage: UsageOptions,
    opened: bool,
    /// Prompt tokens (from admission) and completion tokens sent so far.
    so_far: Usage,
}

impl<F: ChunkFormat> State<F> {
    fn chunk_usage(&self) -> ChunkUsage {
        if self.usage.continuous {
            ChunkUsage::Some(UsageView::from(self.so_far))
        } else if self.usage.include_usage {
            ChunkUsage::Null
        } else {
            ChunkUsage::Omit
        }
    }

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
            if let Some(opening) = self.format.opening(&self.meta, self.chunk_usage()) {
                frame(&mut out, &opening);
                return Some(out.into());
            }
        }
        self.events.as_ref()?;
        loop {
            match self.next_event().await {
                Some(Ok(Event::Queued { position, eta_ms })) => {
                    out.extend_from_slice(
                        format!(": queue position={position} eta_ms={eta_ms}\n\n").as_bytes(),
                    );
                    return Some(out.into());
                }
                Some(Ok(Event::Admitted { prompt_tokens, .. })) => {
                    self.so_far.prompt_tokens = prompt_tokens;
                }
                Some(Ok(Event::Text { text, tokens })) => {
                    self.so_far.completion_tokens =
                        self.so_far.completion_tokens.saturating_add(tokens);
                    if text.is_empty() {
                        continue;
                    }
                    frame(
                        &mut out,
                        &self.format.text(&self.meta, &text, self.chunk_usage()),
                    );
                    return Some(out.into());
                }
                Some(Ok(Event::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                })) => {
                    let call = ToolCallView::new(id, name, arguments);
                    let usage = self.chunk_usage();
                    if let Some(data) = self.format.tool_call(&self.meta, index, call, usage) {
                        frame(&mut out, &data);
                        return Some(out.into());
                    }
                }
                Some(Ok(Event::Finished { reason, usage })) => {
                    self.events = None;
                    metrics::record_usage(&self.meta.model, usage);
                    tracing::debug!(id = %self.meta.id, ?reason, ?usage, "stream finished");
                    self.so_far = usage;
                    frame(
                        &mut out,
                        &self.format.finish(&self.meta, reason, self.chunk_usage()),
                    );
                    if self.usage.include_usage {
                        frame(
                            &mut out,
                            &self.format.usage(&self.meta, UsageView::from(usage)),
                        );
                    }
                    out.extend_from_slice(DONE);
                    return Some(out.into());
                }
                Some(Err(err)) => return Some(self.fail(err)),
                None => {
                    return Some(self.fail(ApiError::from_backend(
                        BackendError::Internal(
                            "the backend's stream ended before the generation finished".into(),
                        ),
                        self.prompt_param,
                    )));
                }
            }
        }
    }

    /// One error event; the stream then ends without `[DONE]`.
    fn fail(&mut self, err: ApiError) -> Bytes {
        self.events = None;
        tracing::warn!(id = %self.meta.id, error = %err, "stream failed after it started");
        let mut out = Vec::new();
        let body = serde_json::to_value(err.body()).unwrap_or(Value::Null);
        frame(&mut out, &body);
        out.into()
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

/// Streams `stream`'s events to the client as SSE in `format`'s chunk shape.
pub fn response<F: ChunkFormat>(stream: Stream, format: F) -> Response {
    let Stream {
        events,
        first,
        meta,
        usage,
        prompt_param,
    } = stream;
    let queued = match first {
        Some(Event::Queued { position, eta_ms }) => Some((position, eta_ms)),
        _ => None,
    };
    let state = State {
        events: Some(events),
        prompt_param,
        pending: first,
        format,
        meta,
        usage,
        opened: false,
        so_far: Usage::default(),
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let bytes = state.next_frame().await?;
        Some((Ok::<_, Infallible>(bytes), state))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some((position, eta_ms)) = queued {
        headers.insert("x-flywheel-queue-position", HeaderValue::from(position));
        headers.insert("x-flywheel-queue-eta-ms", HeaderValue::from(eta_ms));
    }
    response.extensions_mut().insert(Streamed);
    response
}
