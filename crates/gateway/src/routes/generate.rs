//! `POST /v1/chat/completions` and `POST /v1/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use backend::{BackendError, Event, EventStream, FinishReason};
use futures::StreamExt;

use super::RawBody;
use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::metrics::{self, ModelLabel};
use crate::observe::RequestId;
use crate::sse;
use crate::wire::chat::{self, ChatChunks, ChatCompletionView};
use crate::wire::completions::{self, CompletionChunks, CompletionView};
use crate::wire::{unix_now, ResponseMeta, UsageView, ValidRequest};
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
}

pub async fn chat_completions(
    State(state): State<AppState>,
    _caller: Caller,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Result<Response> {
    let request = chat::parse(&body)?;
    Ok(serve(&state, request_id, request, Endpoint::Chat).await)
}

pub async fn completions(
    State(state): State<AppState>,
    _caller: Caller,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Result<Response> {
    let request = completions::parse(&body)?;
    Ok(serve(&state, request_id, request, Endpoint::Completions).await)
}

/// Runs a validated request against its model; the response (success or error) is labelled
/// with the model for metrics.
async fn serve(
    state: &AppState,
    request_id: RequestId,
    request: ValidRequest,
    endpoint: Endpoint,
) -> Response {
    let backend = match state.backend(&request.model) {
        Ok(backend) => backend,
        Err(err) => return err.into_response(),
    };
    tracing::Span::current().record("model", request.model.as_str());
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let meta = ResponseMeta {
        id: format!("{prefix}-{}", request_id.0),
        created: unix_now(),
        model: request.model.clone(),
    };
    let prompt_param = request.prompt_param();
    let mut response = match backend
        .generate(request.generate_request(meta.id.clone()))
        .await
    {
        Err(err) => ApiError::from_backend(err, prompt_param).into_response(),
        Ok(events) if request.stream => match endpoint {
            Endpoint::Chat => sse::response(
                events,
                ChatChunks,
                meta,
                request.include_usage,
                prompt_param,
            ),
            Endpoint::Completions => sse::response(
                events,
                CompletionChunks,
                meta,
                request.include_usage,
                prompt_param,
            ),
        },
        Ok(events) => match collect(events, &meta.model).await {
            Err(err) => ApiError::from_backend(err, prompt_param).into_response(),
            Ok((text, reason, usage)) => match endpoint {
                Endpoint::Chat => {
                    Json(ChatCompletionView::new(meta, text, reason, usage)).into_response()
                }
                Endpoint::Completions => {
                    Json(CompletionView::new(meta, text, reason, usage)).into_response()
                }
            },
        },
    };
    response.extensions_mut().insert(ModelLabel(request.model));
    response
}

/// Gathers a whole generation. If the client goes away meanwhile, this future is dropped with
/// the stream, which cancels the generation.
async fn collect(
    mut events: EventStream,
    model: &str,
) -> Result<(String, FinishReason, UsageView), BackendError> {
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event? {
            Event::Text(piece) => text.push_str(&piece),
            Event::Finished { reason, usage } => {
                metrics::record_usage(model, usage);
                return Ok((text, reason, UsageView::from(usage)));
            }
        }
    }
    Err(BackendError::Internal(
        "the backend's stream ended before the generation finished".into(),
    ))
}
