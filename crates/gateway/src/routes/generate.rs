//! `POST /v1/chat/completions` and `POST /v1/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use backend::{BackendError, Event, FinishReason};
use tenancy::Scope;

use super::RawBody;
use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::meter::{preadmit, MeterSpec, Metered};
use crate::metrics::{self, ModelLabel};
use crate::observe::RequestId;
use crate::sse::{self, UsageOptions};
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
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let request = caller
        .require(Scope::Inference)
        .and_then(|()| chat::parse(&body));
    serve(&state, caller, request_id, request, Endpoint::Chat).await
}

pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let request = caller
        .require(Scope::Inference)
        .and_then(|()| completions::parse(&body));
    serve(&state, caller, request_id, request, Endpoint::Completions).await
}

/// The metric label of responses for a model name this server does not serve: labels must
/// not grow with what clients send.
const UNKNOWN_MODEL: &str = "unknown";

/// Runs a validated request against its model. The response (success or error) is labelled
/// for metrics with the model's name if it is served, else [`UNKNOWN_MODEL`].
async fn serve(
    state: &AppState,
    caller: Caller,
    request_id: RequestId,
    request: Result<ValidRequest>,
    endpoint: Endpoint,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = match request {
        Ok(request) => generate(state, caller, request_id, request, endpoint, &mut label).await,
        Err(err) => Err(err),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}

async fn generate(
    state: &AppState,
    caller: Caller,
    request_id: RequestId,
    request: ValidRequest,
    endpoint: Endpoint,
    label: &mut ModelLabel,
) -> Result<Response> {
    let backend = state.backend(&request.model);
    if backend.is_ok() {
        label.0.clone_from(&request.model);
    }
    if let Some(principal) = caller.principal() {
        principal
            .require_model(&request.model)
            .map_err(ApiError::from_tenancy)?;
    }
    let backend = backend?;
    tracing::Span::current().record("model", request.model.as_str());
    // Bounds that need no tokenizer come first: nothing below may cost the backend work for a
    // request that cannot fit, or that its tenant cannot pay for or may not send now.
    request.check_prompt_fits(backend.info().context_length)?;
    let counted = match &caller {
        Caller::Admin => None,
        Caller::Tenant(principal) => Some(
            preadmit(
                state.tenancy(),
                principal,
                &request.model,
                request.min_prompt_tokens(),
            )
            .await?,
        ),
    };
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
    let tenant = caller.tenant_id().map(str::to_owned);
    let events = backend
        .generate(request.generate_request(meta.id.clone(), tenant))
        .await
        .map_err(|err| ApiError::from_backend(err, prompt_param))?;
    let meter = match (caller, counted) {
        (Caller::Tenant(principal), Some(counted)) => Some(state.meter(MeterSpec {
            principal,
            counted,
            model: request.model.clone(),
            request_id: meta.id.clone(),
            streaming: request.stream,
        })),
        _ => None,
    };
    let mut events = Metered::new(events, meter, prompt_param);
    if !request.stream {
        let (text, reason, usage) = collect(&mut events, &meta.model).await?;
        return Ok(match endpoint {
            Endpoint::Chat => {
                Json(ChatCompletionView::new(meta, text, reason, usage)).into_response()
            }
            Endpoint::Completions => {
                Json(CompletionView::new(meta, text, reason, usage)).into_response()
            }
        });
    }
    // Answer with a status while one can: admission refusals (402, 429, 403) come before the
    // first byte unless the request had to queue first. Once admitted (and reserved) or
    // queued, the stream starts at once, so a client waiting for a slot already has its id.
    // An estimated admission (`exact: false`: an upstream server, called only once the
    // reservation is held) is not yet an answer: the upstream may still refuse, so its first
    // answer is awaited too.
    let first = match events.next().await {
        Some(Ok(event)) => Some(event),
        Some(Err(err)) => return Err(err),
        None => None,
    };
    if let Some(Event::Admitted { exact: false, .. }) = first {
        match events.next().await {
            Some(Ok(event)) => events.unread(event),
            Some(Err(err)) => return Err(err),
            None => {}
        }
    }
    let usage = UsageOptions {
        include_usage: request.include_usage,
        continuous: request.continuous_usage,
    };
    Ok(match endpoint {
        Endpoint::Chat => sse::response(events, first, ChatChunks, meta, usage),
        Endpoint::Completions => sse::response(events, first, CompletionChunks, meta, usage),
    })
}

/// Gathers a whole generation. If the client goes away meanwhile, this future is dropped with
/// the stream, which cancels the generation.
async fn collect(events: &mut Metered, model: &str) -> Result<(String, FinishReason, UsageView)> {
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event? {
            Event::Text { text: piece, .. } => text.push_str(&piece),
            Event::Queued { .. } | Event::Admitted { .. } => {}
            Event::Finished { reason, usage } => {
                metrics::record_usage(model, usage);
                return Ok((text, reason, UsageView::from(usage)));
            }
        }
    }
    Err(ApiError::from_backend(
        BackendError::Internal("the backend's stream ended before the generation finished".into()),
        events.prompt_param(),
    ))
}
