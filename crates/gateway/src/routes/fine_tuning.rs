//! The fine-tuning API (`/v1/fine_tuning/jobs`), a tenant key with `inference` scope on every
//! route (a job is billed to the tenant like its requests, and its model is used with the same
//! scope; no new scope).
//!
//! ```text
//! POST /v1/fine_tuning/jobs                     {model, training_file, validation_file,
//!                                                hyperparameters, suffix, seed, method, metadata}
//! GET  /v1/fine_tuning/jobs                     ?after=&limit=
//! GET  /v1/fine_tuning/jobs/{id}
//! GET  /v1/fine_tuning/jobs/{id}/events         ?after=&limit=
//! GET  /v1/fine_tuning/jobs/{id}/checkpoints    ?after=&limit=
//! POST /v1/fine_tuning/jobs/{id}/cancel
//! ```
//! The domain is `finetune::jobs`; [`PlaneModels`] is how it reaches the serving side: base
//! models are deployments of the control plane, a fine-tuned model is a deployment of
//! `BASE_SPEC+lora:ADAPTER` (scale-to-zero) whose name the catalog keeps private to its tenant.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use finetune::jobs::{BaseModel, FineTuning, JobError, Models, Published};
use serving::{Catalog, Private};

use super::RawBody;
use crate::auth::Inference;
use crate::error::{ApiError, Code, Result};
use crate::wire::fine_tuning::{
    self, CheckpointListView, EventListView, JobListView, JobView, ListQuery,
};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fine_tuning/jobs", post(create).get(list))
        .route("/v1/fine_tuning/jobs/{id}", get(retrieve))
        .route("/v1/fine_tuning/jobs/{id}/events", get(events))
        .route("/v1/fine_tuning/jobs/{id}/checkpoints", get(checkpoints))
        .route("/v1/fine_tuning/jobs/{id}/cancel", post(cancel))
}

/// Resolves a model SPEC to a local file (a `hub:` reference through the hub).
pub type Resolve = dyn Fn(&str) -> std::result::Result<PathBuf, String> + Send + Sync;

/// The serving side of fine-tuning: base models are the control plane's deployments, results
/// are deployments of `BASE_SPEC+lora:ADAPTER` with private names.
pub struct PlaneModels {
    catalog: Catalog,
    resolve: Arc<Resolve>,
}

impl PlaneModels {
    pub fn new(catalog: Catalog, resolve: Arc<Resolve>) -> Self {
        Self { catalog, resolve }
    }
}

#[async_trait::async_trait]
impl Models for PlaneModels {
    fn base(&self, name: &str) -> std::result::Result<BaseModel, String> {
        let missing =
            || format!("The model '{name}' does not exist or this API key may not use it.");
        if self.catalog.private(name).is_some() {
            return Err(format!(
                "'{name}' is a fine-tuned model; fine-tune its base model instead."
            ));
        }
        let plane = self.catalog.plane().ok_or_else(missing)?;
        let Some(spec) = plane.spec(name) else {
            return Err(match self.catalog.backend(name) {
                Some(_) => format!(
                    "'{name}' is not served from a local GGUF file on this server, so it \
                     cannot be fine-tuned here."
                ),
                None => missing(),
            });
        };
        if spec.model.contains(control::LORA_SEPARATOR) {
            return Err(format!(
                "'{name}' is served with a LoRA adapter; fine-tune its base model instead."
            ));
        }
        let path = (self.resolve)(&spec.model)?;
        if !path.is_file() {
            return Err(format!(
                "'{name}' is not served from a GGUF file, so it cannot be fine-tuned."
            ));
        }
        let context = spec
            .context_length
            .or_else(|| {
                self.catalog
                    .backend(name)
                    .and_then(|b| b.info().context_length)
            })
            .unwrap_or(2048);
        Ok(BaseModel {
            spec: spec.model,
            path,
            context_length: context,
        })
    }

    async fn publish(&self, model: &Published) -> std::result::Result<(), String> {
        let plane = self
            .catalog
            .plane()
            .ok_or("this server runs no deployments")?;
        if plane.spec(&model.name).is_none() {
            let base = plane
                .spec(&model.base)
                .ok_or_else(|| format!("the base model '{}' is no longer served", model.base))?;
            let mut spec = control::DeploymentSpec::new(
                model.name.clone(),
                format!("{}{}{}", base.model, control::LORA_SEPARATOR, model.adapter),
            );
            // The base's replica shape, scaled to zero when idle.
            spec.slots_per_replica = base.slots_per_replica;
            spec.threads_per_replica = base.threads_per_replica;
            spec.context_length = base.context_length;
            spec.step_tokens = base.step_tokens;
            match plane.create(spec).await {
                Ok(_) => {}
                // Created meanwhile (a restart publishing again).
                Err(_) if plane.spec(&model.name).is_some() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        self.catalog.set_private(
            &model.name,
            Private {
                tenant_id: model.tenant_id.clone(),
                base: model.base.clone(),
            },
        );
        Ok(())
    }

    async fn unpublish(&self, name: &str) {
        self.catalog.remove_private(name);
        if let Some(plane) = self.catalog.plane() {
            if plane.spec(name).is_some() {
                if let Err(e) = plane.delete(name).await {
                    tracing::warn!(model = %name, error = %e, "could not stop serving a fine-tuned model");
                }
            }
        }
    }

    fn busy(&self) -> bool {
        let Some(plane) = self.catalog.plane().cloned() else {
            return false;
        };
        // Called between training steps on the training thread (outside the runtime).
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        handle
            .block_on(plane.list())
            .iter()
            .any(|d| d.in_flight > 0 || d.queue_length > 0)
    }
}

/// The tenant key a fine-tuning request comes with (403 for the admin key, which has no jobs).
pub struct JobOwner(pub tenancy::Principal);

impl FromRequestParts<AppState> for JobOwner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Inference(caller) = Inference::from_request_parts(parts, state).await?;
        match caller.principal() {
            Some(principal) => Ok(JobOwner(principal.clone())),
            None => Err(ApiError::new(
                Code::PermissionDenied,
                "Fine-tuning jobs belong to a tenant: call /v1/fine_tuning/jobs with a \
                 tenant's API key.",
            )),
        }
    }
}

fn the_jobs(state: &AppState) -> Result<&FineTuning> {
    state.fine_tuning().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "This server runs without the fine-tuning API (it needs the Files API and \
             deployments).",
        )
    })
}

/// Maps a domain refusal, logging internal failures (their messages stay in the log).
fn refused(err: JobError) -> ApiError {
    if matches!(
        err,
        JobError::Store(_) | JobError::Internal(_) | JobError::Files(_)
    ) {
        tracing::error!(error = %err, "fine-tuning request failed");
    }
    ApiError::from_fine_tuning(err)
}

fn query(q: std::result::Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery> {
    q.map(|Query(q)| q).map_err(|r| {
        ApiError::invalid(
            "query",
            format!(
                "{}. This list takes limit (1 to 100) and after (an id).",
                r.body_text()
            ),
        )
    })
}

pub async fn create(
    State(state): State<AppState>,
    JobOwner(principal): JobOwner,
    RawBody(body): RawBody,
) -> Result<Json<JobView>> {
    let new = fine_tuning::create(&body)?;
    let job = the_jobs(&state)?
        .create(&principal, new)
        .await
        .map_err(refused)?;
    Ok(Json(job.into()))
}

pub async fn list(
    State(state): State<AppState>,
    JobOwner(principal): JobOwner,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobListView>> {
    let q = query(q)?;
    let page = the_jobs(&state)?
        .list(
            &principal.tenant.id,
            q.after.as_deref(),
            q.limit.unwrap_or(20),
        )
        .await
        .map_err(refused)?;
    Ok(Json(JobListView::new(page)))
}

pub async fn retrieve(
    State(state): State<AppState>,
    JobOwner(principal): JobOwner,
    Path(id): Path<String>,
) -> Result<Json<JobView>> {
    let job = the_jobs(&state)?
        .get(&principal.tenant.id, &id)
        .await
        .map_err(refused)?;
    Ok(Json(job.into()))
}

pub async fn events(
    State(state): State<AppState>,
    JobOwner(principal): JobOwner,
    Path(id): Path<String>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<EventListView>> {
    let q = query(q)?;
    let page = the_jobs(&state)?
        .events(
            &principal.tenant.id,
            &id,
            q.after.as_deref(),
            q.limit.unwrap_or(20),
        )
        .await
        .map_err(refused)?;
    Ok(Json(EventListView::new(&id, page)))
}

pub async fn checkpoints(
    State(state): State<AppState>,
    JobOwner(principal): JobOwner,
    Path(id): Path<String>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<CheckpointListView>> {
    let q = query(q)?;
    let jobs = the_jobs(&state)?;
    let job = jobs.get(&principal.tenant.id, &id).await.map_err(refused)?;
    let page = jobs
        .checkpoints(
            &principal.tenant.id,
            &id,
            q.after.as_deref(),
            q.limit.unwrap_or(10),
        )
        .await
        .map_err(refused)?;
    let model = finetune::jobs::validate::model_name(&job.model, job.suffix.as_deref(), &job.id)
        .unwrap_or_else(|_| job.id.clone());
    Ok(Json(CheckpointListView::new(&id, &model, page)))
}

pub async fn cancel(
    State(state): State<AppState>,
    JobOwner(principal): JobOwner,
    Path(id): Path<String>,
) -> Result<Json<JobView>> {
    let job = the_jobs(&state)?
        .cancel(&principal.tenant.id, &id)
        .await
        .map_err(refused)?;
    Ok(Json(job.into()))
}
