//! The outermost middleware: a request id on every response, a tracing span per request, and
//! the per-request metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use tracing::Instrument;

use crate::metrics::{self, DurationTimer, ModelLabel};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

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
        request_id = %id,
        method = %request.method(),
        endpoint = %endpoint,
        model = tracing::field::Empty,
        client = tracing::field::Empty,
    );
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
