//! The Batch API (`/v1/batches`), a tenant key with `inference` scope on every route (a batch
//! runs inference billed to the tenant, as the interactive routes do; no new scope).
//!
//! ```text
//! POST /v1/batches               {input_file_id, endpoint, completion_window: "24h", metadata}
//! GET  /v1/batches               ?after=&limit=
//! GET  /v1/batches/{id}
//! POST /v1/batches/{id}/cancel
//! ```
//! The domain is the `batch` crate; `execute.rs` is how it runs a line: the interactive
//! routes' parsers and serving call, at batch priority.

mod execute;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};

pub use execute::LineExecutor;

use super::RawBody;
use crate::auth::Inference;
use crate::error::{ApiError, Code, Result};
use crate::wire::batches::{self, BatchListView, BatchView, ListQuery};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", post(create).get(list))
        .route("/v1/batches/{id}", get(retrieve))
        .route("/v1/batches/{id}/cancel", post(cancel))
}

/// The tenant key a batch request comes with (403 for the admin key, which has no batches).
pub struct BatchOwner(pub tenancy::Principal);

impl FromRequestParts<AppState> for BatchOwner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Inference(caller) = Inference::from_request_parts(parts, state).await?;
        match caller.principal() {
            Some(principal) => Ok(BatchOwner(principal.clone())),
            None => Err(ApiError::new(
                Code::PermissionDenied,
                "Batches belong to a tenant: call /v1/batches with a tenant's API key.",
            )),
        }
    }
}

fn the_batches(state: &AppState) -> Result<&batch::Batches> {
    state.batches().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "This server runs without the Batch API (it needs the Files API).",
        )
    })
}

/// Maps a domain refusal, logging internal failures (their messages stay in the log).
fn refused(err: batch::BatchError) -> ApiError {
    if matches!(
        err,
        batch::BatchError::Store(_) | batch::BatchError::Internal(_)
    ) || matches!(&err, batch::BatchError::Files(e) if !matches!(e, files::FilesError::NotFound(_) | files::FilesError::Invalid { .. }))
    {
        tracing::error!(error = %err, "batch request failed");
    }
    ApiError::from_batch(err)
}

pub async fn create(
    State(state): State<AppState>,
    BatchOwner(principal): BatchOwner,
    RawBody(body): RawBody,
) -> Result<Json<BatchView>> {
    let new = batches::create(&body)?;
    let batch = the_batches(&state)?
        .create(&principal, new)
        .await
        .map_err(refused)?;
    Ok(Json(batch.into()))
}

pub async fn list(
    State(state): State<AppState>,
    BatchOwner(principal): BatchOwner,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<BatchListView>> {
    let Query(query) = query.map_err(|r| {
        ApiError::invalid(
            "query",
            format!(
                "{}. GET /v1/batches takes limit (1 to 100) and after (a batch id).",
                r.body_text()
            ),
        )
    })?;
    let page = the_batches(&state)?
        .list(
            &principal.tenant.id,
            query.after.as_deref(),
            query.limit.unwrap_or(20),
        )
        .await
        .map_err(refused)?;
    Ok(Json(BatchListView::new(page)))
}

pub async fn retrieve(
    State(state): State<AppState>,
    BatchOwner(principal): BatchOwner,
    Path(id): Path<String>,
) -> Result<Json<BatchView>> {
    let batch = the_batches(&state)?
        .get(&principal.tenant.id, &id)
        .await
        .map_err(refused)?;
    Ok(Json(batch.into()))
}

pub async fn cancel(
    State(state): State<AppState>,
    BatchOwner(principal): BatchOwner,
    Path(id): Path<String>,
) -> Result<Json<BatchView>> {
    let batch = the_batches(&state)?
        .cancel(&principal.tenant.id, &id)
        .await
        .map_err(refused)?;
    Ok(Json(batch.into()))
}
