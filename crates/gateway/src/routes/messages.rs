//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API over the
//! serving path chat completions take. Errors leave in Anthropic's shape (the route layer
//! [`errors`] rewrites them).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::generate::{run, Outcome, UNKNOWN_MODEL};
use super::RawBody;
use crate::auth::{Caller, Inference};
use crate::error::{ApiError, Result};
use crate::metrics::ModelLabel;
use crate::observe::RequestId;
use crate::sse;
use crate::wire::anthropic::{self, view, Route};
use crate::AppState;

pub async fn create(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = match anthropic::parse(&body, Route::Create) {
        Ok(request) => {
            let id = format!("msg_{}", request_id.0);
            let served = run(&state, &caller, &request, id.clone(), &mut label).await;
            match served.map_err(|err| err.map_param(rename)) {
                Ok(Outcome::Whole(mut whole)) => {
                    let first = whole.first();
                    let answer = view::Answer {
                        thinking: &first.reasoning,
                        text: &first.text,
                        calls: &first.calls,
                    };
                    let message =
                        view::message(&id, &request.model, &answer, first.reason, whole.usage);
                    Ok(Json(message).into_response())
                }
                Ok(Outcome::Stream(source)) => {
                    let events = view::MessageEvents::new(id, request.model.clone());
                    Ok(sse::respond(*source, events))
                }
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}

pub async fn count_tokens(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Result<Json<serde_json::Value>> {
    let request = anthropic::parse(&body, Route::CountTokens)?;
    let generate = request.generate_request(
        format!("count_{}", request_id.0),
        caller.tenant_id().map(str::to_owned),
    );
    count(&state, &caller, &generate).await
}

/// Anthropic's names for a tool's schema and the output format's.
fn rename(param: &str) -> Option<String> {
    if param.starts_with("response_format") {
        return Some("output_config.format.schema".into());
    }
    param
        .strip_suffix(".function.parameters")
        .map(|tool| format!("{tool}.input_schema"))
}

async fn count(
    state: &AppState,
    caller: &Caller,
    request: &backend::GenerateRequest,
) -> Result<Json<serde_json::Value>> {
    let tokens = state
        .serving()
        .count_prompt_tokens(caller.principal(), request)
        .await
        .map_err(|err| ApiError::from_serve(err, "messages").map_param(rename))?;
    Ok(Json(view::token_count(tokens)))
}

/// Middleware for Anthropic's routes: every error response (handlers', extractors', the
/// fallback's) leaves in Anthropic's shape, with its status and `Retry-After`.
pub async fn errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(err) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (parts, _) = response.into_parts();
    let mut reshaped = err.respond_with(view::error_body(&err));
    // What the layers outside read (the metrics label) stays.
    reshaped.extensions_mut().extend(parts.extensions);
    reshaped
}
