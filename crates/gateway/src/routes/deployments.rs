//! `/admin/v1/deployments…` and `/admin/v1/node`: the control plane's admin API. Every handler
//! takes [`Admin`]. Bodies are read strictly: an unknown field is a 400 naming it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use control::ControlPlane;

use super::RawBody;
use crate::auth::Admin;
use crate::error::{ApiError, Code, Result};
use crate::wire::deployments::{
    parse_patch, parse_spec, DeletedView, DeploymentJson, NodeJson, ScaleEventView,
};
use crate::wire::tenancy::ListView;
use crate::AppState;

fn plane(state: &AppState) -> Result<&ControlPlane> {
    state.plane().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "This server runs no control plane; deployments are not available.",
        )
    })
}

pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let plane = plane(&state)?;
    let spec = parse_spec(&body)?;
    let view = plane.create(spec).await.map_err(ApiError::from_control)?;
    tracing::info!(deployment = %view.spec.name, model = %view.spec.model, "deployment created");
    Ok((StatusCode::CREATED, Json(DeploymentJson::from(view))))
}

pub async fn list(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<ListView<DeploymentJson>>> {
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
    Ok(Json(DeploymentJson::from(view)).into_response())
}

pub async fn patch(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<DeploymentJson>> {
    let patch = parse_patch(&body)?;
    let view = plane(&state)?
        .update(&name, &patch)
        .await
        .map_err(ApiError::from_control)?;
    tracing::info!(deployment = %name, ?patch, "deployment updated");
    Ok(Json(view.into()))
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

pub async fn node(State(state): State<AppState>, _: Admin) -> Result<Json<NodeJson>> {
    Ok(Json(plane(&state)?.node().into()))
}

/// `GET /admin/v1/cluster`: nodes, leases, capacity, replicas and the placement leader (a
/// single process shows itself as a one-node cluster).
pub async fn cluster(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<crate::wire::cluster::ClusterJson>> {
    Ok(Json(plane(&state)?.cluster_snapshot().await.into()))
}
