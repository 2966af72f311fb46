//! `GET /health` (liveness: the process answers), `GET /ready` (readiness: the database answers
//! and every pinned deployment has a ready replica) and `GET /metrics`.

use axum::extract::State;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::MetricsReader;
use crate::AppState;

pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// How long a readiness check may take before it counts as failed.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// 200 when this process can serve: its database answers within 2 s and every pinned
/// deployment (`--model`) has a ready replica; else 503 with `Retry-After`. The body says which
/// check failed. Deployments that scale to zero are not waited for: a request starts them.
pub async fn ready(State(state): State<AppState>) -> Response {
    let database =
        match tokio::time::timeout(CHECK_WITHIN, state.tenancy().database_reachable()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the database does not answer");
                "failing: the database does not answer (see the server's log)".to_owned()
            }
            Err(_) => format!("failing: no answer within {} s", CHECK_WITHIN.as_secs()),
        };
    let mut ready = database == "ok";
    let mut models = serde_json::Map::new();
    if let Some(plane) = state.plane() {
        for view in plane.list().await {
            if !view.spec.pinned {
                continue;
            }
            let up = view
                .replicas
                .iter()
                .any(|r| r.state == control::ReplicaState::Ready);
            ready &= up;
            let status = if up { "ready" } else { "loading" };
            models.insert(view.spec.name, json!(status));
        }
    }
    let body = Json(json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "database": database, "models": models },
    }));
    if ready {
        body.into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            body,
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<AppState>, _: MetricsReader) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.render_metrics(),
    )
}
