//! The playground: a chat with any served text model, streamed from the public
//! `/v1/chat/completions` with an API key minted for this session (`inference` only, expiring
//! with the session, revoked at sign-out), so it is admitted and billed like any request. The
//! answer is written as text (`textContent`), never as HTML. `GET /console/api/bill/{id}`
//! tells the page what the answer cost, for the session's own tenant only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use backend::ModelKind;
use maud::html;
use serde_json::{json, Value};
use tenancy::Action;

use crate::layout::{self, money, Nav};
use crate::session::{PageError, PageResult, Signed};
use crate::Console;

pub async fn page(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::Infer)?;
    let models: Vec<_> = console
        .app
        .models()
        .into_iter()
        .filter(|m| m.kind == ModelKind::Generate)
        .collect();
    let key = console.tenancy().members.playground_key(&signed.0).await?;
    tracing::debug!(tenant = %tenant.id, key = %key.key.id, "playground key minted");
    let body = html! {
        @if models.is_empty() {
            p { "No text model is served right now; ask the operator to deploy one." }
        }
        form.card #playground data-key=(key.secret) {
            label for="pg-model" { "Model" }
            select #pg-model name="model" required {
                @for m in &models { option value=(m.id) { (m.id) } }
            }
            label for="pg-system" { "System prompt" }
            textarea #pg-system name="system" rows="2" {}
            div.row {
                div {
                    label for="pg-temperature" { "Temperature" }
                    input #pg-temperature type="number" name="temperature" min="0" max="2" step="0.1" value="0.7";
                }
                div {
                    label for="pg-max" { "Max tokens" }
                    input #pg-max type="number" name="max_tokens" min="1" max="4096" value="128";
                }
            }
            label for="pg-message" { "Message" }
            textarea #pg-message name="message" rows="3" required {}
            button #pg-send type="submit" { "Send" }
        }
        h2 { "Answer" }
        pre #pg-answer.answer aria-live="polite" {}
        p #pg-usage role="status" {}
    };
    Ok(layout::page(
        "Playground",
        Nav::Session(&signed.0, "Playground"),
        &["/console/assets/console.js"],
        body,
    ))
}

/// The bill of one of this tenant's requests: `state` stays `open` until it is settled.
pub async fn bill(
    State(console): State<Console>,
    signed: Signed,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let refuse = |e: PageError| {
        let (status, message) = match e {
            PageError::SignIn => (StatusCode::UNAUTHORIZED, "sign in again".to_owned()),
            PageError::Shown { status, message } => (status, message),
        };
        (status, Json(json!({ "error": { "message": message } })))
    };
    let (_, tenant) = signed.member(Action::Read).map_err(refuse)?;
    let not_found = || {
        refuse(PageError::new(
            StatusCode::NOT_FOUND,
            format!("request '{request_id}' not found"),
        ))
    };
    let reservation = match console.tenancy().ledger.reservation(&request_id).await {
        Ok(r) if r.tenant_id == tenant.id => r,
        Ok(_) | Err(tenancy::Error::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(refuse(e.into())),
    };
    let billed = reservation.billed.unwrap_or_default();
    let charged = reservation.charged.unwrap_or_default();
    Ok(Json(json!({
        "request_id": reservation.request_id,
        "state": reservation.state.as_str(),
        "prompt_tokens": billed.prompt_tokens,
        "completion_tokens": billed.completion_tokens,
        "grant_tokens": charged.grant_tokens,
        "cost": charged.amount,
        "cost_display": money(charged.amount),
    })))
}
