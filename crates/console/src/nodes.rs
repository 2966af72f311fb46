//! The operator's nodes and capacity: every live process of the cluster (a single process is a
//! one-node cluster of its own) with its role, address and lease, what the replicas placed on
//! it take of its memory and thread budgets, and what it reports running per deployment; then
//! which node holds each deployment's replicas. The same `ControlPlane::cluster_snapshot` as
//! `GET /admin/v1/cluster`.

use axum::extract::State;
use control::cluster::gateway::ClusterSnapshot;
use control::cluster::Member;
use maud::{html, Markup};

use crate::deployment_detail::mib;
use crate::deployments::plane;
use crate::layout::{self, count, Nav};
use crate::session::{PageResult, Signed};
use crate::Console;

fn badges(snapshot: &ClusterSnapshot, m: &Member) -> Markup {
    html! {
        @if m.id == snapshot.me { " " span.badge { "this process" } }
        @if snapshot.placement.leader.as_deref() == Some(m.id.as_str()) { " " span.badge { "placement leader" } }
    }
}

fn lease(m: &Member) -> String {
    if m.ttl_secs == 0 {
        "none (in process)".to_owned()
    } else {
        format!("{:x}, {} s to live", m.lease, m.ttl_secs)
    }
}

fn node_row(snapshot: &ClusterSnapshot, m: &Member) -> Markup {
    let used = snapshot.used_by(&m.id);
    let placed = snapshot.placed_on(&m.id);
    let runs = m.role.runs_replicas();
    html! {
        tr data-node=(m.id) data-role=(m.role.as_str()) data-memory-used=(used.memory_bytes) data-placed=(placed) {
            th scope="row" { (m.id) (badges(snapshot, m)) }
            td { (m.role.as_str()) }
            td { @if m.address.is_empty() { "—" } @else { (m.address) } }
            td { (lease(m)) }
            @if runs {
                td.num { (mib(used.memory_bytes)) " / " (mib(m.memory_bytes)) " "
                    meter min="0" max=(m.memory_bytes.max(1)) value=(used.memory_bytes)
                        aria-label=(format!("Memory used on {}", m.id)) {} }
                td.num { (used.threads) " / " (m.threads) " "
                    meter min="0" max=(m.threads.max(1)) value=(used.threads)
                        aria-label=(format!("Threads used on {}", m.id)) {} }
                td.num { (placed) }
            } @else {
                td colspan="3" { "runs no replica (gateway)" }
            }
        }
    }
}

fn loads_table(snapshot: &ClusterSnapshot) -> Markup {
    let rows: Vec<_> = snapshot
        .members
        .iter()
        .flat_map(|m| m.replicas.iter().map(move |r| (m, r)))
        .collect();
    html! {
        div.scroll tabindex="0" role="region" aria-label="Running replicas table" {
            table #loads {
                caption { "What each node reports running" }
                thead { tr {
                    th scope="col" { "Node" } th scope="col" { "Deployment" } th scope="col" { "Ready" }
                    th scope="col" { "Loading" } th scope="col" { "Slots" } th scope="col" { "Running" } th scope="col" { "Queued" }
                } }
                tbody {
                    @for (m, r) in &rows {
                        tr data-node=(m.id) data-deployment=(r.deployment) {
                            td { (m.id) }
                            td { a href=(format!("/console/admin/deployments/{}", r.deployment)) { (r.deployment) } }
                            td.num { (r.ready) } td.num { (r.loading) } td.num { (r.slots) }
                            td.num { (count(r.running as i64)) } td.num { (count(r.queued as i64)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" { "No replica is running on any node." } } }
                }
            }
        }
    }
}

fn placements_table(snapshot: &ClusterSnapshot) -> Markup {
    let assignments = &snapshot.placement.assignments;
    html! {
        div.scroll tabindex="0" role="region" aria-label="Placements table" {
            table #placements {
                caption { "Placements: which node holds each replica" }
                thead { tr { th scope="col" { "Deployment" } th scope="col" { "Replicas" } th scope="col" { "Nodes" } } }
                tbody {
                    @for (deployment, list) in assignments {
                        tr data-deployment=(deployment) {
                            td { (deployment) }
                            td.num { (list.len()) }
                            td { @for a in list { span.badge { "#" (a.index) " on " (a.node) } " " } }
                        }
                    }
                    @if assignments.is_empty() { tr { td colspan="3" { "Nothing is placed." } } }
                }
            }
        }
    }
}

pub async fn page(State(console): State<Console>, signed: Signed) -> PageResult {
    signed.operator()?;
    let snapshot = plane(&console)?.cluster_snapshot().await;
    let runners = snapshot
        .members
        .iter()
        .filter(|m| m.role.runs_replicas())
        .count();
    let body = html! {
        p #cluster-summary {
            (snapshot.members.len()) " live " (if snapshot.members.len() == 1 { "process" } else { "processes" })
            " (" (runners) " of them may run replicas). Placement leader: "
            (snapshot.placement.leader.as_deref().unwrap_or("none elected"))
            ". Answered by " (snapshot.me) " at revision " (snapshot.placement.revision) "."
        }
        div.scroll tabindex="0" role="region" aria-label="Nodes table" {
            table #nodes {
                caption { "Nodes and their capacity" }
                thead { tr {
                    th scope="col" { "Node" } th scope="col" { "Role" } th scope="col" { "Address" } th scope="col" { "Lease" }
                    th scope="col" { "Memory MiB (used / budget)" } th scope="col" { "Threads (used / budget)" } th scope="col" { "Replicas placed" }
                } }
                tbody {
                    @for m in &snapshot.members { (node_row(&snapshot, m)) }
                }
            }
        }
        (loads_table(&snapshot))
        (placements_table(&snapshot))
    };
    Ok(layout::page(
        "Nodes",
        Nav::Session(&signed.0, "Nodes"),
        &[],
        body,
    ))
}
