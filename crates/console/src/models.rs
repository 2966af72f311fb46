//! Models: what this server serves (with prices and context length) and the hub's
//! repositories the session may read, searchable; one repository's card, files and revisions.
//! A card is written by whoever owns the repository (another tenant, for a public one): it is
//! rendered as Markdown and sanitized (`markdown.rs`), never trusted as HTML.

use std::io::Read;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use hub::{Access, SearchQuery};
use maud::{html, Markup};
use serde::Deserialize;
use tenancy::{Action, Subject};

use crate::layout::{self, count, money, Nav};
use crate::session::{PageError, PageResult, Signed};
use crate::Console;

/// The most of a card shown.
const MAX_CARD_BYTES: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
pub struct Params {
    search: Option<String>,
    repo: Option<String>,
}

fn access(signed: &Signed) -> PageResult<Access> {
    match &signed.0.subject {
        Subject::Operator => Ok(Access::Admin),
        Subject::Member { .. } => {
            let (_, tenant) = signed.member(Action::Read)?;
            Ok(Access::Tenant {
                tenant_id: tenant.id.clone(),
                tenant_name: tenant.name.clone(),
                read: true,
                write: false,
            })
        }
    }
}

fn hub_error(status: StatusCode, e: hub::HubError) -> PageError {
    PageError::new(status, e.to_string())
}

pub async fn page(
    State(console): State<Console>,
    signed: Signed,
    Query(params): Query<Params>,
) -> PageResult {
    let access = access(&signed)?;
    let served = console.app.models();
    let mut rates = Vec::new();
    for model in &served {
        rates.push(console.tenancy().prices.rates(&model.id).await?);
    }
    let repos = match console.app.hub() {
        Some(hub) => {
            let query = SearchQuery {
                search: params.search.clone().filter(|s| !s.trim().is_empty()),
                limit: Some(50),
                ..SearchQuery::default()
            };
            hub.search(&access, query)
                .await
                .map_err(|e| hub_error(StatusCode::BAD_REQUEST, e))?
        }
        None => Vec::new(),
    };
    let detail = match (&params.repo, console.app.hub()) {
        (Some(id), Some(hub)) => Some(repo_detail(hub, &access, id).await?),
        _ => None,
    };
    let body = html! {
        h2 { "Served models" }
        div.scroll tabindex="0" role="region" aria-label="Served models table" {
            table {
                caption { "Models this server serves; prices in currency units per million tokens" }
                thead { tr {
                    th scope="col" { "Model" } th scope="col" { "Kind" } th scope="col" { "Context" }
                    th scope="col" { "Input" } th scope="col" { "Output" }
                } }
                tbody {
                    @for (model, rate) in served.iter().zip(&rates) {
                        tr {
                            td { (model.id) }
                            td { (format!("{:?}", model.kind).to_lowercase()) }
                            td.num { (model.context_length.map_or("—".to_owned(), |c| count(i64::from(c)))) }
                            td.num { (money(rate.input_per_million)) }
                            td.num { (money(rate.output_per_million)) }
                        }
                    }
                }
            }
        }
        @if let Some(detail) = detail { (detail) }
        h2 { "Hub repositories" }
        form.filters method="get" action="/console/models" {
            label for="search" { "Search" }
            input #search type="search" name="search" value=(params.search.as_deref().unwrap_or(""));
            button type="submit" { "Search" }
        }
        div.scroll tabindex="0" role="region" aria-label="Hub repositories table" {
            table #repos {
                caption { "Repositories you may read" }
                thead { tr {
                    th scope="col" { "Repository" } th scope="col" { "Task" } th scope="col" { "License" }
                    th scope="col" { "Downloads" } th scope="col" { "Visibility" }
                } }
                tbody {
                    @for repo in &repos {
                        tr {
                            td { a href=(format!("/console/models?repo={}", repo.full_name())) { (repo.full_name()) } }
                            td { (repo.card.pipeline_tag.as_deref().unwrap_or("—")) }
                            td { (repo.card.license.as_deref().unwrap_or("—")) }
                            td.num { (count(repo.downloads)) }
                            td { @if repo.private { "private" } @else { "public" } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        "Models",
        Nav::Session(&signed.0, "Models"),
        &[],
        body,
    ))
}

async fn repo_detail(hub: &hub::Hub, access: &Access, id: &str) -> PageResult<Markup> {
    let not_found = |e| hub_error(StatusCode::NOT_FOUND, e);
    let repo_id = hub::path::RepoId::parse(id).map_err(not_found)?;
    let repo = hub.repo(access, &repo_id).await.map_err(not_found)?;
    let refs = hub.refs(&repo).await.map_err(not_found)?;
    let commit = hub.resolve(&repo, "main").await.ok();
    let tree = match &commit {
        Some(c) => hub.tree(&repo, c).await.map_err(not_found)?,
        None => Vec::new(),
    };
    let card = match tree.iter().any(|e| e.path == "README.md") {
        true => hub
            .file(access, &repo_id, "main", "README.md")
            .await
            .ok()
            .and_then(|f| read_card(&f.blob_path)),
        false => None,
    };
    Ok(html! {
        section #repo-detail aria-labelledby="repo-title" {
            h2 #repo-title { (repo.full_name()) }
            p { (count(repo.downloads)) " downloads · " (if repo.private { "private" } else { "public" }) }
            h3 { "Model card" }
            @if let Some(text) = &card {
                div.card-text #model-card { (crate::markdown::render(text)) }
            } @else {
                p { "No README.md at main." }
            }
            h3 { "Files at main" }
            ul { @for entry in &tree { li { (entry.path) " — " (count(entry.size)) " bytes" } } }
            h3 { "Revisions" }
            ul { @for r in &refs { li { (r.name) " → " code { (r.commit_id.get(..12).unwrap_or(&r.commit_id)) } } } }
        }
    })
}

/// The card's first [`MAX_CARD_BYTES`], as text (invalid UTF-8 replaced).
fn read_card(path: &std::path::Path) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_CARD_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
