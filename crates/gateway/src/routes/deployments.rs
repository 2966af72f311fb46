//! `/admin/v1/deployments…` and `/admin/v1/node`: the control plane's admin API. Every handler
//! takes [`Admin`]. Bodies are read strictly: an unknown field is a 400 naming it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use control::{
    ControlPlane, DeploymentPatch, DeploymentSpec, DeploymentView, NodeView, ScaleEvent,
};
use serde::Serialize;
use serde_json::Value;

use super::RawBody;
use crate::auth::Admin;
use crate::error::{ApiError, Code, Result};
use crate::wire::tenancy::ListView;
use crate::AppState;

/// Fields a deployment body may carry (`pinned` is the command line's, never the API's).
const SPEC_FIELDS: &[&str] = &[
    "name",
    "model",
    "min_replicas",
    "max_replicas",
    "slots_per_replica",
    "threads_per_replica",
    "context_length",
    "step_tokens",
    "idle_seconds",
    "queue",
    "tenant_weights",
];
const QUEUE_FIELDS: &[&str] = &["max_length", "max_wait_seconds", "tenant_share_percent"];

fn plane(state: &AppState) -> Result<&ControlPlane> {
    state.plane().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "This server runs no control plane; deployments are not available.",
        )
    })
}

/// The body as a JSON object whose keys are all in `allowed` (and `queue`'s in
/// [`QUEUE_FIELDS`]).
fn object(body: &[u8], allowed: &[&str]) -> Result<Value> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("The body is not valid JSON: {e}"),
        )
    })?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "The body must be a JSON object.",
        ));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            key.as_str(),
            format!(
                "Unknown field '{key}'. Accepted fields: {}.",
                allowed.join(", ")
            ),
        ));
    }
    if let Some(queue) = map.get("queue").and_then(Value::as_object) {
        if let Some(key) = queue.keys().find(|k| !QUEUE_FIELDS.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                format!("queue.{key}"),
                format!(
                    "Unknown field 'queue.{key}'. Accepted fields: {}.",
                    QUEUE_FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(value)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("Invalid deployment body: {e}."),
        )
    })
}

/// A scale event on the wire: its time in RFC 3339 UTC.
#[derive(Debug, Serialize)]
pub struct ScaleEventView {
    pub at: String,
    pub deployment: String,
    pub kind: control::EventKind,
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

impl From<ScaleEvent> for ScaleEventView {
    fn from(e: ScaleEvent) -> Self {
        Self {
            at: DateTime::<Utc>::from(e.at).to_rfc3339_opts(SecondsFormat::Millis, true),
            deployment: e.deployment,
            kind: e.kind,
            from: e.from,
            to: e.to,
            reason: e.reason,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeletedView {
    pub name: String,
    pub object: &'static str,
    pub deleted: bool,
}

pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let plane = plane(&state)?;
    let spec: DeploymentSpec = typed(object(&body, SPEC_FIELDS)?)?;
    let view = plane.create(spec).await.map_err(ApiError::from_control)?;
    tracing::info!(deployment = %view.spec.name, model = %view.spec.model, "deployment created");
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<ListView<DeploymentView>>> {
    Ok(Json(ListView::new(plane(&state)?.list().await)))
}

/// `GET /admin/v1/deployments/{name}` and `…/{name}/events` (served names may hold `/`).
pub async fn get(
    State(state): State<AppState>,
    admin: Admin,
    Path(path): Path<String>,
) -> Result<axum::response::Response> {
    if let Some(name) = path.strip_suffix("/events") {
        if state.plane().is_some_and(|p| p.get(name).is_some()) {
            return Ok(events(state, admin, name).await?.into_response());
        }
    }
    let view = plane(&state)?
        .describe(&path)
        .await
        .map_err(ApiError::from_control)?;
    Ok(Json(view).into_response())
}

pub async fn patch(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<DeploymentView>> {
    let fields: Vec<&str> = SPEC_FIELDS
        .iter()
        .copied()
        .filter(|f| !matches!(*f, "name" | "step_tokens"))
        .collect();
    let patch: DeploymentPatch = typed(object(&body, &fields)?)?;
    let view = plane(&state)?
        .update(&name, &patch)
        .await
        .map_err(ApiError::from_control)?;
    tracing::info!(deployment = %name, ?patch, "deployment updated");
    Ok(Json(view))
}

/// Drains first: answers once queued and running requests finished and replicas unloaded.
pub async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<DeletedView>> {
    plane(&state)?
        .delete(&name)
        .await
        .map_err(ApiError::from_control)?;
    tracing::info!(deployment = %name, "deployment deleted");
    Ok(Json(DeletedView {
        name,
        object: "deployment",
        deleted: true,
    }))
}

async fn events(state: AppState, _: Admin, name: &str) -> Result<Json<ListView<ScaleEventView>>> {
    let events = plane(&state)?
        .events(name)
        .await
        .map_err(ApiError::from_control)?;
    Ok(Json(ListView::new(events)))
}

pub async fn node(State(state): State<AppState>, _: Admin) -> Result<Json<NodeView>> {
    Ok(Json(plane(&state)?.node()))
}
