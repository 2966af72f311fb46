//! The node agent's internal API, for gateways only (every call carries the cluster secret;
//! one without it is 401):
//! - `POST /internal/v1/generate` — a [`proto::Request`]; answers a stream of newline-delimited
//!   [`proto::Frame`]s (200), or the refusal before the stream as `{"error": ErrorJson}` (422),
//!   or 404 when this node runs no replica of the model. Dropping the connection cancels the
//!   request (it leaves the node's queue or frees its slot).
//! - `POST /internal/v1/count` — the prompt's token count, `{"prompt_tokens": N}`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use backend::{Backend, GenerateRequest};
use control::ControlPlane;
use futures::StreamExt;
use serde_json::json;

use crate::proto::{self, ErrorJson, Frame};
use crate::secret::ClusterSecret;

/// Largest internal request (a gateway's own limit is lower).
const MAX_BODY_BYTES: usize = 64 << 20;

#[derive(Clone)]
struct Internal {
    secret: ClusterSecret,
    /// What runs on this node.
    local: ControlPlane,
}

/// The internal routes, to merge into the node's HTTP server.
pub fn router(secret: ClusterSecret, local: ControlPlane) -> Router {
    Router::new()
        .route("/internal/v1/generate", post(generate))
        .route("/internal/v1/count", post(count))
        // Gateways have already bounded the request's body; prompts may be large.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Internal { secret, local })
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": null}})),
    )
        .into_response()
}

/// The secret checked, the body parsed, the deployment found; else the response to send.
fn admit(
    state: &Internal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(GenerateRequest, control::Deployment), Box<Response>> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.secret.accepts(auth) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_cluster_secret",
            "This is a node's internal API: calls need the cluster secret (Authorization: Bearer SECRET), which only gateways hold.".into(),
        )));
    }
    let wire: proto::Request = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("not an internal generate request: {e}"),
        ))
    })?;
    let request = GenerateRequest::try_from(wire)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid_request", e)))?;
    let deployment = state.local.get(&request.model).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("this node runs no replica of '{}'", request.model),
        ))
    })?;
    Ok((request, deployment))
}

fn refusal(e: &backend::BackendError) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": ErrorJson::from(e) })),
    )
        .into_response()
}

fn line(frame: &Frame) -> Bytes {
    let mut bytes = serde_json::to_vec(frame).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn generate(State(state): State<Internal>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, deployment) = match admit(&state, &headers, &body) {
        Ok(x) => x,
        Err(response) => return *response,
    };
    match deployment.generate(request).await {
        Err(e) => refusal(&e),
        Ok(stream) => {
            let lines = stream.map(|item| {
                let frame = match &item {
                    Ok(event) => Frame::from(event),
                    Err(e) => Frame::Error {
                        error: ErrorJson::from(e),
                    },
                };
                Ok::<_, std::convert::Infallible>(line(&frame))
            });
            (
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(lines),
            )
                .into_response()
        }
    }
}

async fn count(State(state): State<Internal>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, deployment) = match admit(&state, &headers, &body) {
        Ok(x) => x,
        Err(response) => return *response,
    };
    match deployment.count_prompt_tokens(&request).await {
        Ok(n) => Json(proto::Count { prompt_tokens: n }).into_response(),
        Err(e) => refusal(&e),
    }
}
