//! HTTP handlers, one module per group of routes.

pub mod account;
pub mod admin;
pub mod batches;
pub mod budgets;
pub mod deployments;
pub mod embeddings;
pub mod files;
pub mod fine_tuning;
pub mod generate;
pub mod groups;
pub mod hub;
pub mod logs;
pub mod mcp;
pub mod members;
pub mod messages;
pub mod models;
pub mod ops;
pub mod responses;
pub mod tenant_delete;
pub mod transcriptions;

use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, Uri};
use bytes::Bytes;

use crate::error::{ApiError, Code};

/// A request body read whole, within the router's body limit; too large a body is a 413 in
/// OpenAI's error shape.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    Code::RequestTooLarge,
                    "The request body is larger than this server accepts; shorten the prompt.",
                ))
            }
            Err(rejection) => Err(ApiError::new(
                Code::InvalidRequest,
                format!(
                    "We could not read the request body: {}",
                    rejection.body_text()
                ),
            )),
        }
    }
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!("Invalid URL ({method} {})", uri.path()),
    )
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("Method {method} is not allowed on {}", uri.path()),
    )
}
