//! One deployment in detail (operator): its spec, each replica (state, slots, requests in
//! flight and done, age), the queue and its drain rate, and the event timeline (scale
//! decisions, replicas ready, stopped or refused, roll-outs, with their reasons), newest
//! first. And the node's capacity (memory and threads under the budgets the autoscaler
//! places replicas in). The same `control::ControlPlane` reads as `/admin/v1/deployments`.

use std::time::SystemTime;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use control::{EventKind, NodeView};
use maud::{html, Markup};

use crate::deployments::{control_error, plane};
use crate::layout::{self, count, Nav};
use crate::session::{PageResult, Signed};
use crate::Console;

/// Bytes as MiB, rounded.
pub fn mib(bytes: u64) -> String {
    count(i64::try_from(bytes / (1024 * 1024)).unwrap_or(i64::MAX))
}

/// The node's memory and threads: what replicas use of the budget.
pub fn capacity(node: &NodeView) -> Markup {
    html! {
        section #capacity aria-labelledby="capacity-title" {
            h2 #capacity-title { "This node's capacity" }
            div.scroll tabindex="0" role="region" aria-label="Capacity table" {
            table {
                thead { tr { th scope="col" { "Resource" } th scope="col" { "Used" } th scope="col" { "Budget" } th scope="col" { "Share" } } }
                tbody {
                    tr {
                        th scope="row" { "Memory (MiB)" }
                        td.num { (mib(node.memory_used_bytes)) }
                        td.num { (mib(node.memory_bytes)) }
                        td { meter min="0" max=(node.memory_bytes.max(1)) value=(node.memory_used_bytes)
                            aria-label="Memory used of the budget" {} }
                    }
                    tr {
                        th scope="row" { "Threads" }
                        td.num { (node.threads_used) }
                        td.num { (node.threads) }
                        td { meter min="0" max=(node.threads.max(1)) value=(node.threads_used)
                            aria-label="Threads used of the budget" {} }
                    }
                }
            }
            }
        }
    }
}

/// An event's API name, with spaces.
fn kind_name(kind: EventKind) -> String {
    kind.as_str().replace('_', " ")
}

fn utc(at: SystemTime) -> String {
    DateTime::<Utc>::from(at)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

pub async fn page(
    State(console): State<Console>,
    signed: Signed,
    Path(name): Path<String>,
) -> PageResult {
    signed.operator()?;
    let plane = plane(&console)?;
    let view = plane.describe(&name).await.map_err(control_error)?;
    let mut events = plane.events(&name).await.map_err(control_error)?;
    events.reverse();
    let spec = &view.spec;
    let body = html! {
        p { a href="/console/admin/deployments" { "← All deployments" } }
        section aria-labelledby="spec-title" {
            h2 #spec-title { "Deployment " (spec.name) }
            dl #deployment-spec {
                dt { "Model" } dd { (spec.model) }
                dt { "Replicas" } dd { (view.replicas.len()) " (bounds " (spec.min_replicas) "–" (spec.max_replicas) ")" }
                dt { "Per replica" } dd { (spec.slots_per_replica) " slots, " (view.replica_threads) " threads, " (mib(view.replica_memory_bytes)) " MiB" }
                dt { "Queue" } dd #queue-length { (count(view.queue_length as i64)) " waiting, " (count(view.in_flight as i64)) " running" }
                dt { "Drain rate" } dd { (format!("{:.2}", view.drain_per_sec)) " requests/s while work waited" }
                dt { "Generation speed" } dd { (format!("{:.1}", view.tokens_per_sec)) " tokens/s while busy" }
            }
        }
        div.scroll tabindex="0" role="region" aria-label="Replicas table" {
            table #replicas {
                caption { "Replicas" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "State" } th scope="col" { "Model" }
                    th scope="col" { "Slots" } th scope="col" { "Running" } th scope="col" { "Done" } th scope="col" { "Age (s)" }
                } }
                tbody {
                    @for r in &view.replicas {
                        tr {
                            td.num { (r.id) }
                            td { (r.state.as_str()) }
                            td { (r.model) }
                            td.num { (r.slots) }
                            td.num { (r.in_flight) }
                            td.num { (count(i64::try_from(r.completed).unwrap_or(i64::MAX))) }
                            td.num { (count(i64::try_from(r.age_secs).unwrap_or(i64::MAX))) }
                        }
                    }
                    @if view.replicas.is_empty() {
                        tr { td colspan="7" { "No replica: the next request starts one (scaled to zero)." } }
                    }
                }
            }
        }
        div.scroll tabindex="0" role="region" aria-label="Events table" {
            table #events {
                caption { "Events, newest first" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "Replicas" } th scope="col" { "Reason" }
                } }
                tbody {
                    @for e in &events {
                        tr data-kind=(kind_name(e.kind)) {
                            td { (utc(e.at)) }
                            td { (kind_name(e.kind)) }
                            td.num { @if e.kind == EventKind::Scale { (e.from) " → " (e.to) } @else { (e.to) } }
                            td { (e.reason) }
                        }
                    }
                    @if events.is_empty() { tr { td colspan="4" { "No events yet." } } }
                }
            }
        }
        (capacity(&plane.node()))
    };
    Ok(layout::page(
        &format!("Deployment {}", spec.name),
        Nav::Session(&signed.0, "Deployments"),
        &[],
        body,
    ))
}
