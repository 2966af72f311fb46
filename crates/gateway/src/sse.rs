//! Server-sent events for streamed completions.
//!
//! The response body owns the backend's [`EventStream`] and nothing else holds it, so when the
//! client disconnects and hyper drops the body, the stream is dropped and generation stops.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use backend::{BackendError, Event, EventStream};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;
use crate::metrics;
use crate::observe::Streamed;
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

struct State<F> {
    /// `None` once the stream is over, so the backend's stream is dropped at once.
    events: Option<EventStream>,
    format: F,
    meta: ResponseMeta,
    include_usage: bool,
    opened: bool,
    prompt_param: &'static str,
}

impl<F: ChunkFormat> State<F> {
    fn chunk_usage(&self) -> ChunkUsage {
        if self.include_usage {
            ChunkUsage::Null
        } else {
            ChunkUsage::Omit
        }
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
        let events = self.events.as_mut()?;
        loop {
            match events.next().await {
                Some(Ok(Event::Text(text))) if text.is_empty() => continue,
                Some(Ok(Event::Text(text))) => {
                    frame(
                        &mut out,
                        &self.format.text(&self.meta, &text, self.chunk_usage()),
                    );
                    return Some(out.into());
                }
                Some(Ok(Event::Finished { reason, usage })) => {
                    self.events = None;
                    metrics::record_usage(&self.meta.model, usage);
                    tracing::debug!(id = %self.meta.id, ?reason, ?usage, "stream finished");
                    frame(
                        &mut out,
                        &self.format.finish(&self.meta, reason, self.chunk_usage()),
                    );
                    if self.include_usage {
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
                    return Some(self.fail(BackendError::Internal(
                        "the backend's stream ended before the generation finished".into(),
                    )))
                }
            }
        }
    }

    /// One error event; the stream then ends without `[DONE]`.
    fn fail(&mut self, err: BackendError) -> Bytes {
        self.events = None;
        let err = ApiError::from_backend(err, self.prompt_param);
        tracing::warn!(id = %self.meta.id, error = %err, "stream failed after it started");
        let mut out = Vec::new();
        let body = serde_json::to_value(err.body()).unwrap_or(Value::Null);
        frame(&mut out, &body);
        out.into()
    }
}

/// Streams `events` to the client as SSE in `format`'s chunk shape.
pub fn response<F: ChunkFormat>(
    events: EventStream,
    format: F,
    meta: ResponseMeta,
    include_usage: bool,
    prompt_param: &'static str,
) -> Response {
    let state = State {
        events: Some(events),
        format,
        meta,
        include_usage,
        opened: false,
        prompt_param,
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
    response.extensions_mut().insert(Streamed);
    response
}
