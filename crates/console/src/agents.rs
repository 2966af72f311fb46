//! What a tenant's agents and jobs use, read-only (they are made through the API): the MCP
//! servers its keys reach through `/mcp` (its own and those the operator granted, with the
//! tools allowed and whether the gateway is skipping one after errors), and its batches
//! (status, progress, output and error files). The same `mcp::Mcp` and `batch::Batches`
//! calls as `/v1/mcp/servers` and `/v1/batches`, for the session's own tenant only.

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;
use tenancy::Action;

use crate::layout::{self, count, Nav};
use crate::session::{PageError, PageResult, Signed};
use crate::Console;

/// Batches shown (the newest).
const BATCHES_SHOWN: u32 = 100;

pub async fn mcp(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::Read)?;
    let service = console.app.mcp().ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "This server runs no MCP gateway; ask the operator to enable it.",
        )
    })?;
    let servers = service
        .servers(Some(&tenant.id))
        .await
        .map_err(|e| PageError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let body = html! {
        p { "Your keys with the " code { "mcp" } " scope reach every tool below through one endpoint, "
            code { "/mcp" } "; tool names are prefixed with the server's name. Register servers with "
            code { "POST /v1/mcp/servers" } "." }
        div.scroll tabindex="0" role="region" aria-label="MCP servers table" {
            table #mcp-servers {
                caption { "MCP servers" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Owner" } th scope="col" { "Transport" }
                    th scope="col" { "Tools allowed" } th scope="col" { "Health" }
                } }
                tbody {
                    @for s in &servers {
                        tr data-name=(s.name) {
                            td { (s.name) }
                            td { @if s.tenant_id.as_deref() == Some(tenant.id.as_str()) { "yours" } @else { "granted by the operator" } }
                            td { @match (s.transport.as_str(), &s.url) {
                                ("http", Some(url)) => { "HTTP " code { (url) } },
                                ("stdio", _) => { "hosted by the operator" },
                                (other, _) => { (other) },
                            } }
                            td { @match &s.allowed_tools {
                                Some(tools) => { (tools.join(", ")) },
                                None => { "all it lists" },
                            } }
                            td { @match service.down(&s.id) {
                                Some(why) => { "skipped after an error: " (why) },
                                None => { "ok" },
                            } }
                        }
                    }
                    @if servers.is_empty() { tr { td colspan="5" { "No MCP server yet." } } }
                }
            }
        }
    };
    Ok(layout::page(
        "MCP servers",
        Nav::Session(&signed.0, "MCP"),
        &[],
        body,
    ))
}

pub async fn batches(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::Read)?;
    let batches = console.app.batches().ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "This server runs no Batch API; ask the operator to enable it.",
        )
    })?;
    let page = batches
        .list(&tenant.id, None, BATCHES_SHOWN)
        .await
        .map_err(|e| PageError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let body = html! {
        p { "Batches run a file of requests at a discount within their window; create them with "
            code { "POST /v1/batches" } " and fetch results with " code { "GET /v1/files/{id}/content" } "." }
        div.scroll tabindex="0" role="region" aria-label="Batches table" {
            table #batches {
                caption { "Batches, newest first" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Status" } th scope="col" { "Model" }
                    th scope="col" { "Done / total" } th scope="col" { "Progress" } th scope="col" { "Failed" }
                    th scope="col" { "Created (UTC)" } th scope="col" { "Output file" } th scope="col" { "Error file" }
                } }
                tbody {
                    @for b in &page.batches {
                        tr data-id=(b.id) data-status=(b.status) {
                            td { code { (b.id) } }
                            td { (b.status) }
                            td { (b.model.as_deref().unwrap_or("—")) }
                            td.num { (count(b.completed + b.failed)) " / " (count(b.total)) }
                            td { meter min="0" max=(b.total.max(1)) value=(b.completed + b.failed)
                                aria-label=(format!("{}: {} of {} lines done", b.id, b.completed + b.failed, b.total)) {} }
                            td.num { (count(b.failed)) }
                            td { (b.created_at.format("%Y-%m-%d %H:%M")) }
                            td { code { (b.output_file_id.as_deref().unwrap_or("—")) } }
                            td { code { (b.error_file_id.as_deref().unwrap_or("—")) } }
                        }
                    }
                    @if page.batches.is_empty() { tr { td colspan="9" { "No batch yet." } } }
                }
            }
        }
        @if page.has_more { p { "Showing the newest " (BATCHES_SHOWN) "; list the rest with the API." } }
    };
    Ok(layout::page(
        "Batches",
        Nav::Session(&signed.0, "Batches"),
        &[],
        body,
    ))
}
