//! The outermost middleware: a request id on every response, a tracing span per request, and
//! the per-request metrics.
//!
//! The request's span is the root of its trace (`--otlp-endpoint` exports it; the serving
//! layer adds `admission`, `queue`, `generation` and `settlement` children). An incoming W3C
//! `traceparent` makes it a child of the caller's span, so it joins the caller's trace. The
//! trace id is a field of the span (so of every log line inside it) and, when there is one
//! (traces exported, or a `traceparent` received), the `x-trace-id` response header.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{self, DurationTimer, ModelLabel};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The response header naming the request's trace.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// A request's headers, as the W3C trace-context propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// This request's id (a UUID), available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The address the request comes from, set by the server on every request: the connection's
/// peer, or, behind a trusted proxy, the client the proxy names. Logged with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Marks a response whose body is a stream, so its duration is measured to the body's end.
#[derive(Debug, Clone, Copy)]
pub struct Streamed;

pub async fn observe(mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {endpoint}", request.method()),
        otel.kind = "server",
        request_id = %id,
        trace_id = tracing::field::Empty,
        method = %request.method(),
        endpoint = %endpoint,
        model = tracing::field::Empty,
        client = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let caller = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let caller_trace = caller.span().span_context().trace_id();
    if caller_trace != TraceId::INVALID {
        let _ = span.set_parent(caller);
    }
    // The exported span's trace (the caller's when it sent one); without an exporter, the
    // caller's.
    let trace_id = Some(span.context().span().span_context().trace_id())
        .filter(|t| *t != TraceId::INVALID)
        .or(Some(caller_trace).filter(|t| *t != TraceId::INVALID))
        .map(|t| t.to_string());
    if let Some(trace_id) = &trace_id {
        span.record("trace_id", trace_id.as_str());
    }
    if let Some(ClientAddr(ip)) = request.extensions().get::<ClientAddr>() {
        span.record("client", tracing::field::display(ip));
    }
    request.extensions_mut().insert(RequestId(id.clone()));

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let model = response
        .extensions()
        .get::<ModelLabel>()
        .map_or("", |m| m.0.as_str());
    metrics::record_request(&endpoint, model, status.as_u16());
    span.record("http.response.status_code", i64::from(status.as_u16()));
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                elapsed_ms = start.elapsed().as_millis() as u64,
                "answered"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = start.elapsed().as_millis() as u64,
                "answered"
            );
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(value) = trace_id.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }

    let timer = DurationTimer::new(endpoint, start);
    if response.extensions().get::<Streamed>().is_some() {
        // The timer lives as long as the body: it records when the stream ends or the client
        // goes away.
        response.map(|body| {
            Body::from_stream(body.into_data_stream().map(move |chunk| {
                let _ = &timer;
                chunk
            }))
        })
    } else {
        drop(timer);
        response
    }
}
