//! A tenant's API keys: the list (every member), creating one with scopes, a model allow-list,
//! an expiry and limits (shown once), and revoking (developers and owners).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use maud::{html, Markup};
use tenancy::{Action, ApiKey, CreatedKey, KeySpec, Scope};

use crate::layout::{self, csrf, Nav};
use crate::session::{Mutation, PageError, PageResult, Signed};
use crate::Console;

const MAX_LIMIT: i64 = 1_000_000_000_000;

fn status(key: &ApiKey) -> &'static str {
    if key.revoked_at.is_some() {
        "revoked"
    } else if key.expires_at.is_some_and(|t| t <= Utc::now()) {
        "expired"
    } else {
        "active"
    }
}

fn body(signed: &Signed, keys: &[ApiKey], created: Option<&CreatedKey>) -> Markup {
    let may_manage = signed.0.member_for(Action::ManageKeys).is_ok();
    html! {
        @if let Some(created) = created {
            div.notice role="status" {
                p { "Key " strong { (created.key.name) } " created. Copy it now: it is shown only once." }
                p { code #new-secret { (created.secret) } }
            }
        }
        div.scroll tabindex="0" role="region" aria-label="API keys table" {
            table {
                caption { "API keys of this tenant" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Scopes" }
                    th scope="col" { "Models" } th scope="col" { "Expires" } th scope="col" { "Status" }
                    @if may_manage { th scope="col" { "Action" } }
                } }
                tbody {
                    @for key in keys {
                        tr {
                            td { (key.name) }
                            td { code { (key.prefix) "…" } }
                            td { (key.scopes.join(", ")) }
                            td { (key.models.as_ref().map_or("all".to_owned(), |m| m.join(", "))) }
                            td { (key.expires_at.map_or("never".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())) }
                            td { (status(key)) }
                            @if may_manage {
                                td {
                                    @if key.revoked_at.is_none() {
                                        form method="post" action=(format!("/console/keys/{}/revoke", key.id)) {
                                            (csrf(&signed.0))
                                            button.danger type="submit" aria-label=(format!("Revoke {}", key.name)) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if may_manage {
            h2 { "Create a key" }
            form.card #create-key method="post" action="/console/keys" {
                (csrf(&signed.0))
                label for="key-name" { "Name" }
                input #key-name type="text" name="name" maxlength="128" required;
                fieldset {
                    legend { "Scopes" }
                    @for scope in Scope::ALL {
                        label.check {
                            input type="checkbox" name="scopes" value=(scope.as_str())
                                checked[Scope::DEFAULT.contains(&scope)];
                            " " (scope.as_str())
                        }
                    }
                }
                label for="key-models" { "Allowed models (comma-separated; empty allows all)" }
                input #key-models type="text" name="models";
                label for="key-days" { "Expires in days (empty: never)" }
                input #key-days type="number" name="expires_in_days" min="1" max="3650";
                label for="key-rpm" { "Requests per minute (empty: no limit)" }
                input #key-rpm type="number" name="rpm" min="1";
                label for="key-tpm" { "Tokens per minute (empty: no limit)" }
                input #key-tpm type="number" name="tpm" min="1";
                button type="submit" { "Create key" }
            }
        } @else {
            p { "Your role can see keys but not create or revoke them." }
        }
    }
}

pub async fn page(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::Read)?;
    let keys = console.tenancy().directory.keys(&tenant.id).await?;
    Ok(layout::page(
        "API keys",
        Nav::Session(&signed.0, "Keys"),
        &[],
        body(&signed, &keys, None),
    ))
}

pub async fn create(State(console): State<Console>, form: Mutation) -> PageResult {
    let (_, tenant) = form.signed.member(Action::ManageKeys)?;
    let f = &form.fields;
    let scopes = f
        .all("scopes")
        .into_iter()
        .map(str::parse)
        .collect::<Result<Vec<Scope>, _>>()?;
    if scopes.is_empty() {
        return Err(PageError::bad_request("scopes: tick at least one scope"));
    }
    let models = f.get("models").map(|text| {
        text.split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
    });
    let spec = KeySpec {
        name: f.required("name")?.to_owned(),
        scopes: Some(scopes),
        models: models.filter(|m| !m.is_empty()),
        rpm: f.integer("rpm", 1, MAX_LIMIT)?,
        tpm: f.integer("tpm", 1, MAX_LIMIT)?,
        expires_at: f
            .integer("expires_in_days", 1, 3650)?
            .map(|days| Utc::now() + Duration::days(days)),
    };
    let directory = &console.tenancy().directory;
    let created = directory.create_key(&tenant.id, &spec).await?;
    tracing::info!(tenant = %tenant.id, key = %created.key.id, "key created from the console");
    let keys = directory.keys(&tenant.id).await?;
    let mut response: Response = layout::page(
        "API keys",
        Nav::Session(&form.signed.0, "Keys"),
        &[],
        body(&form.signed, &keys, Some(&created)),
    );
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

pub async fn revoke(
    State(console): State<Console>,
    Path(id): Path<String>,
    form: Mutation,
) -> PageResult {
    let (_, tenant) = form.signed.member(Action::ManageKeys)?;
    let directory = &console.tenancy().directory;
    // Another tenant's key is not found, as the API answers.
    directory.key_of(&tenant.id, &id).await?;
    directory.revoke_key(&id).await?;
    tracing::info!(tenant = %tenant.id, key = %id, "key revoked from the console");
    Ok(Redirect::to("/console/keys").into_response())
}
