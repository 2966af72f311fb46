//! `POST /v1/embeddings` and `POST /v1/rerank`: parsed by the wire crate, served (admitted and
//! metered) by `Serving::embed` / `Serving::rerank`, rendered back by the wire crate.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use backend::Usage;

use super::generate::UNKNOWN_MODEL;
use super::RawBody;
use crate::auth::{Caller, Inference};
use crate::error::{ApiError, Result};
use crate::metrics::{self, ModelLabel};
use crate::observe::RequestId;
use crate::wire::embeddings::{self, EmbeddingsView};
use crate::AppState;

pub async fn embeddings(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = embed(&state, &caller, &request_id, &body, &mut label).await;
    labelled(result, label)
}

async fn embed(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    body: &[u8],
    label: &mut ModelLabel,
) -> Result<Response> {
    let request = embeddings::parse(body)?;
    let tenant = caller.tenant_id().map(str::to_owned);
    let embed = request.embed_request(format!("embd-{}", request_id.0), tenant);
    let served = state.serving().embed(caller.principal(), embed).await;
    label_served(state, &request.model, &served, label);
    let out = served.map_err(|err| ApiError::from_serve(err, "input"))?;
    record(&request.model, out.prompt_tokens);
    Ok(Json(EmbeddingsView::new(
        request.model,
        out.vectors,
        out.prompt_tokens,
        request.encoding,
    ))
    .into_response())
}

pub async fn rerank(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = score(&state, &caller, &request_id, &body, &mut label).await;
    labelled(result, label)
}

async fn score(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    body: &[u8],
    label: &mut ModelLabel,
) -> Result<Response> {
    let request = embeddings::parse_rerank(body)?;
    let tenant = caller.tenant_id().map(str::to_owned);
    let id = format!("rerank-{}", request_id.0);
    let rerank = request.rerank_request(id.clone(), tenant);
    let served = state.serving().rerank(caller.principal(), rerank).await;
    label_served(state, &request.model, &served, label);
    let out = served.map_err(|err| ApiError::from_serve(err, "documents"))?;
    record(&request.model, out.prompt_tokens);
    Ok(Json(embeddings::rerank_view(id, &request, &out)).into_response())
}

/// Only served names become metric labels.
fn label_served<T>(
    state: &AppState,
    model: &str,
    served: &std::result::Result<T, serving::ServeError>,
    label: &mut ModelLabel,
) {
    let served_name = match served {
        Ok(_) => true,
        Err(serving::ServeError::ModelNotFound { .. }) => false,
        Err(_) => state.serving().catalog().backend(model).is_some(),
    };
    if served_name {
        label.0 = model.to_owned();
        tracing::Span::current().record("model", model);
    }
}

fn record(model: &str, prompt_tokens: u32) {
    metrics::record_usage(
        model,
        Usage {
            prompt_tokens,
            completion_tokens: 0,
            cached_tokens: 0,
        },
    );
}

fn labelled(result: Result<Response>, label: ModelLabel) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}
