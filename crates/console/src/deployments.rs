//! The operator's deployments: status, replicas, queue, the node's capacity (each deployment's
//! details and event timeline: `deployment_detail.rs`); one form to deploy a hub model
//! (`hub:org/name`) and one to set a deployment's scale bounds (down to zero). The same
//! `control::ControlPlane` calls as `/admin/v1/deployments`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use control::{ControlPlane, DeploymentPatch, DeploymentSpec};
use maud::html;

use crate::layout::{self, count, csrf, Nav};
use crate::session::{Mutation, PageError, PageResult, Signed};
use crate::Console;

const MAX_REPLICAS: i64 = 64;

pub(crate) fn plane(console: &Console) -> PageResult<&ControlPlane> {
    console.app.plane().ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "This server runs no control plane; deployments are not available.",
        )
    })
}

pub(crate) fn control_error(e: control::Error) -> PageError {
    let status = match &e {
        control::Error::NotFound(_) => StatusCode::NOT_FOUND,
        control::Error::AlreadyExists(_) => StatusCode::CONFLICT,
        control::Error::InvalidSpec { .. } | control::Error::Model(_) => StatusCode::BAD_REQUEST,
        control::Error::NoRoom(_) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    PageError::new(status, e.to_string())
}

pub async fn page(State(console): State<Console>, signed: Signed) -> PageResult {
    signed.operator()?;
    let plane = plane(&console)?;
    let deployments = plane.list().await;
    let node = plane.node();
    let repos = match console.app.hub() {
        Some(hub) => hub
            .search(&hub::Access::Admin, hub::SearchQuery::default())
            .await
            .map_err(|e| PageError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?,
        None => Vec::new(),
    };
    let body = html! {
        div.scroll tabindex="0" role="region" aria-label="Deployments table" {
            table #deployments {
                caption { "Deployments" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Model" } th scope="col" { "Replicas (min–max)" }
                    th scope="col" { "Replica states" } th scope="col" { "Queue" } th scope="col" { "Running" }
                } }
                tbody {
                    @for d in &deployments {
                        tr data-name=(d.spec.name) {
                            td { a href=(format!("/console/admin/deployments/{}", d.spec.name)) { (d.spec.name) } }
                            td { (d.spec.model) }
                            td.num { (d.replicas.len()) " (" (d.spec.min_replicas) "–" (d.spec.max_replicas) ")" }
                            td.states {
                                @if d.replicas.is_empty() { "none" }
                                @for r in &d.replicas { (r.state.as_str()) " " }
                            }
                            td.num { (count(d.queue_length as i64)) }
                            td.num { (count(d.in_flight as i64)) }
                        }
                    }
                }
            }
        }
        (crate::deployment_detail::capacity(&node))
        h2 { "Deploy a hub model" }
        form.card #create-deployment method="post" action="/console/admin/deployments" {
            (csrf(&signed.0))
            label for="dep-name" { "Served name" }
            input #dep-name type="text" name="name" required;
            label for="dep-model" { "Hub repository" }
            select #dep-model name="repo" required {
                @for r in &repos { option value=(r.full_name()) { (r.full_name()) } }
            }
            div.row {
                div { label for="dep-min" { "Min replicas" } input #dep-min type="number" name="min_replicas" min="0" max=(MAX_REPLICAS) value="0"; }
                div { label for="dep-max" { "Max replicas" } input #dep-max type="number" name="max_replicas" min="1" max=(MAX_REPLICAS) value="1"; }
                div { label for="dep-idle" { "Idle seconds before scaling down" } input #dep-idle type="number" name="idle_seconds" min="1" max="86400"; }
            }
            button type="submit" { "Deploy" }
        }
        h2 { "Scale" }
        form.card #scale-deployment method="post" action="/console/admin/deployments/scale" {
            (csrf(&signed.0))
            label for="scale-name" { "Deployment" }
            select #scale-name name="name" required {
                @for d in &deployments { option value=(d.spec.name) { (d.spec.name) } }
            }
            div.row {
                div { label for="scale-min" { "Min replicas (0: scales to zero when idle)" } input #scale-min type="number" name="min_replicas" min="0" max=(MAX_REPLICAS) required; }
                div { label for="scale-max" { "Max replicas" } input #scale-max type="number" name="max_replicas" min="1" max=(MAX_REPLICAS) required; }
                div { label for="scale-idle" { "Idle seconds (empty: unchanged)" } input #scale-idle type="number" name="idle_seconds" min="1" max="86400"; }
            }
            button type="submit" { "Apply" }
        }
    };
    Ok(layout::page(
        "Deployments",
        Nav::Session(&signed.0, "Deployments"),
        &[],
        body,
    ))
}

fn replicas(form: &Mutation, name: &str) -> PageResult<usize> {
    let n = form
        .fields
        .integer(name, 0, MAX_REPLICAS)?
        .ok_or_else(|| PageError::bad_request(format!("{name}: fill it in")))?;
    usize::try_from(n).map_err(|_| PageError::bad_request(format!("{name}: out of range")))
}

fn idle(form: &Mutation) -> PageResult<Option<u64>> {
    Ok(form
        .fields
        .integer("idle_seconds", 1, 86_400)?
        .and_then(|n| u64::try_from(n).ok()))
}

pub async fn create(State(console): State<Console>, form: Mutation) -> PageResult {
    form.signed.operator()?;
    let name = form.fields.required("name")?;
    let repo = form.fields.required("repo")?;
    let patch = DeploymentPatch {
        min_replicas: Some(replicas(&form, "min_replicas")?),
        max_replicas: Some(replicas(&form, "max_replicas")?),
        idle_seconds: idle(&form)?,
        ..DeploymentPatch::default()
    };
    let spec = patch.apply(&DeploymentSpec::new(name, format!("hub:{repo}")));
    let view = plane(&console)?.create(spec).await.map_err(control_error)?;
    tracing::info!(deployment = %view.spec.name, model = %view.spec.model, "deployment created from the console");
    Ok(Redirect::to("/console/admin/deployments").into_response())
}

pub async fn scale(State(console): State<Console>, form: Mutation) -> PageResult {
    form.signed.operator()?;
    let name = form.fields.required("name")?;
    let patch = DeploymentPatch {
        min_replicas: Some(replicas(&form, "min_replicas")?),
        max_replicas: Some(replicas(&form, "max_replicas")?),
        idle_seconds: idle(&form)?,
        ..DeploymentPatch::default()
    };
    plane(&console)?
        .update(name, &patch)
        .await
        .map_err(control_error)?;
    tracing::info!(deployment = %name, ?patch, "deployment scaled from the console");
    Ok(Redirect::to("/console/admin/deployments").into_response())
}
