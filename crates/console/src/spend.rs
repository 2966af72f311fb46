//! What a tenant's requests did and what it may still spend, read-only: the request log
//! (newest first, filtered by model and status, paged; the same store query as `GET /v1/logs`)
//! and the budgets the operator set on the tenant and its keys, with this period's spend and
//! the alerts they fired (the same `tenancy::Budgets` calls as `GET /v1/budget` and
//! `/v1/budget/events`). For the session's own tenant only.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::{html, Markup};
use serde::Deserialize;
use tenancy::{Action, BudgetStatus};

use crate::layout::{self, count, money, Nav};
use crate::session::{PageError, PageResult, Signed};
use crate::Console;

/// Log rows on one page.
const LOG_PAGE: i64 = 50;
/// Budget alerts shown (the newest).
const EVENTS_SHOWN: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct LogParams {
    model: Option<String>,
    status: Option<String>,
    after: Option<String>,
}

fn non_empty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn status_filter(text: Option<&String>) -> PageResult<Option<i64>> {
    let Some(text) = non_empty(text) else {
        return Ok(None);
    };
    match text.parse::<i64>() {
        Ok(n) if (100..=599).contains(&n) => Ok(Some(n)),
        _ => Err(PageError::bad_request(format!(
            "status: expected an HTTP status (100 to 599), got '{text}'"
        ))),
    }
}

/// The link to the next (older) page, with the same filters.
fn older_link(model: Option<&str>, status: Option<i64>, after: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("after", after);
    if let Some(m) = model {
        query.append_pair("model", m);
    }
    if let Some(s) = status {
        query.append_pair("status", &s.to_string());
    }
    format!("/console/logs?{}", query.finish())
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "—".to_owned(), count)
}

pub async fn logs(
    State(console): State<Console>,
    signed: Signed,
    Query(params): Query<LogParams>,
) -> PageResult {
    let (_, tenant) = signed.member(Action::Read)?;
    let setup = console.app.routing().ok_or_else(|| {
        PageError::new(StatusCode::NOT_FOUND, "This server keeps no request log.")
    })?;
    let model = non_empty(params.model.as_ref());
    let status = status_filter(params.status.as_ref())?;
    let query = store::LogQuery {
        tenant_id: tenant.id.clone(),
        model: model.clone(),
        status,
        since: None,
        until: None,
        limit: LOG_PAGE,
        after: non_empty(params.after.as_ref()),
    };
    let page =
        setup.store.request_logs(&query).await.map_err(|e| {
            match e {
        store::StoreError::NotFound { .. } => PageError::new(
            StatusCode::NOT_FOUND,
            "That page of the log starts at a request that is not yours; start from the newest.",
        ),
        e => PageError::from(tenancy::Error::from(e)),
    }
        })?;
    let body = html! {
        p { "Every request your keys and members made, newest first, as " code { "GET /v1/logs" } " lists them." }
        form.filters method="get" action="/console/logs" {
            div { label for="log-model" { "Model" } input #log-model type="text" name="model" value=(model.as_deref().unwrap_or("")); }
            div { label for="log-status" { "HTTP status" } input #log-status type="number" name="status" min="100" max="599"
                value=(status.map(|s| s.to_string()).unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        div.scroll tabindex="0" role="region" aria-label="Request log table" {
            table #logs {
                caption { "Requests, newest first" }
                thead { tr {
                    th scope="col" { "Time (UTC)" } th scope="col" { "Request" } th scope="col" { "Model" }
                    th scope="col" { "Key" } th scope="col" { "Member" } th scope="col" { "Status" }
                    th scope="col" { "Prompt tokens" } th scope="col" { "Completion tokens" } th scope="col" { "Cost" }
                    th scope="col" { "First token (ms)" } th scope="col" { "Total (ms)" } th scope="col" { "Retries" }
                } }
                tbody {
                    @for r in &page.logs {
                        tr data-id=(r.request_id) data-status=(r.status) data-cost=(r.cost)
                            data-prompt-tokens=(r.prompt_tokens) data-completion-tokens=(r.completion_tokens) {
                            td { (r.created_at.format("%Y-%m-%d %H:%M:%S")) }
                            td { code { (r.request_id) } }
                            td { (r.model) }
                            td { code { (r.key_prefix) } }
                            td { (r.member.as_deref().unwrap_or("—")) }
                            td.num { (r.status) }
                            td.num { (count(r.prompt_tokens)) }
                            td.num { (count(r.completion_tokens)) }
                            td.num { (money(r.cost)) }
                            td.num { (ms(r.ttft_ms)) }
                            td.num { (count(r.total_ms)) }
                            td.num { (r.retries) }
                        }
                    }
                    @if page.logs.is_empty() { tr { td colspan="12" { "No request logged" @if model.is_some() || status.is_some() { " with these filters" } "." } } }
                }
            }
        }
        @if let (true, Some(last)) = (page.has_more, page.logs.last()) {
            p { a #older href=(older_link(model.as_deref(), status, &last.request_id)) { "Older requests →" } }
        }
    };
    Ok(layout::page(
        "Request log",
        Nav::Session(&signed.0, "Logs"),
        &[],
        body,
    ))
}

fn ppm_percent(ppm: i64) -> String {
    let tenths = ppm / 1_000;
    if tenths % 10 == 0 {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

fn subject_name(subject: &str, key_names: &HashMap<String, String>) -> String {
    match subject.split_once(':') {
        Some(("tenant", _)) => "the whole tenant".to_owned(),
        Some(("key", id)) => match key_names.get(id) {
            Some(name) => format!("key {name} ({id})"),
            None => format!("key {id}"),
        },
        _ => subject.to_owned(),
    }
}

fn budget_row(s: &BudgetStatus, key_names: &HashMap<String, String>) -> Markup {
    let b = &s.budget;
    let total = s.spent.total();
    html! {
        tr data-subject=(b.subject) data-amount=(b.amount) data-spent=(s.spent.settled) data-held=(s.spent.held) {
            td { (subject_name(&b.subject, key_names)) }
            td.num { (money(b.amount)) " per " (b.period) }
            td.num { (money(s.spent.settled)) " " meter min="0" max=(b.amount.max(1)) value=(total.min(b.amount))
                aria-label=(format!("Spent of the budget of {}", subject_name(&b.subject, key_names))) {} }
            td.num { (money(s.spent.held)) }
            td { (s.resets_at.format("%Y-%m-%d %H:%M")) }
            td { @if b.alert_at_ppm.is_empty() { "none" } @else {
                (b.alert_at_ppm.iter().map(|p| ppm_percent(*p)).collect::<Vec<_>>().join(", "))
                @if b.webhook_url.is_some() { ", by webhook" }
            } }
        }
    }
}

pub async fn budgets(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::Read)?;
    let budgets = &console.tenancy().budgets;
    let statuses = budgets.statuses(&tenant.id).await?;
    let events = budgets.events(&tenant.id, EVENTS_SHOWN, None).await?;
    let key_names = crate::usage::key_names(&console, &tenant.id).await?;
    let body = html! {
        p { "The operator sets budgets on your tenant and keys. A request that could take the spend past one is refused (402) before it runs; alerts fire as thresholds are crossed." }
        div.scroll tabindex="0" role="region" aria-label="Budgets table" {
            table #budgets {
                caption { "Budgets and this period's spend" }
                thead { tr {
                    th scope="col" { "On" } th scope="col" { "Budget" } th scope="col" { "Spent this period" }
                    th scope="col" { "Held by running requests" } th scope="col" { "Resets (UTC)" } th scope="col" { "Alerts at" }
                } }
                tbody {
                    @for s in &statuses { (budget_row(s, &key_names)) }
                    @if statuses.is_empty() { tr { td colspan="6" { "No budget is set: spending is limited by your balance only." } } }
                }
            }
        }
        div.scroll tabindex="0" role="region" aria-label="Budget alerts table" {
            table #budget-events {
                caption { "Alerts, newest first" }
                thead { tr {
                    th scope="col" { "Time (UTC)" } th scope="col" { "On" } th scope="col" { "Threshold" }
                    th scope="col" { "Spent of budget" } th scope="col" { "Webhook" }
                } }
                tbody {
                    @for e in &events {
                        tr data-subject=(e.subject) data-threshold-ppm=(e.threshold_ppm) {
                            td { (e.created_at.format("%Y-%m-%d %H:%M:%S")) }
                            td { (subject_name(&e.subject, &key_names)) }
                            td.num { (ppm_percent(e.threshold_ppm)) }
                            td.num { (money(e.spent)) " of " (money(e.amount)) }
                            td { @match (&e.webhook_url, &e.delivered_at, &e.last_error) {
                                (None, _, _) => { "none" },
                                (Some(_), Some(at), _) => { "delivered " (at.format("%H:%M:%S")) },
                                (Some(_), None, Some(err)) => { "retrying (" (e.attempts) " tries): " (err) },
                                (Some(_), None, None) => { "pending" },
                            } }
                        }
                    }
                    @if events.is_empty() { tr { td colspan="5" { "No alert yet." } } }
                }
            }
        }
    };
    Ok(layout::page(
        "Budgets",
        Nav::Session(&signed.0, "Budgets"),
        &[],
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_filters_and_encode_them() {
        assert_eq!(
            older_link(Some("a b/c"), Some(429), "req_1"),
            "/console/logs?after=req_1&model=a+b%2Fc&status=429"
        );
        assert_eq!(older_link(None, None, "x&y"), "/console/logs?after=x%26y");
    }

    #[test]
    fn status_filters_are_http_statuses() {
        assert_eq!(status_filter(Some(&"200".to_owned())).ok(), Some(Some(200)));
        assert_eq!(status_filter(Some(&" ".to_owned())).ok(), Some(None));
        assert!(status_filter(Some(&"99".to_owned())).is_err());
        assert!(status_filter(Some(&"abc".to_owned())).is_err());
    }

    #[test]
    fn thresholds_read_as_percentages() {
        assert_eq!(ppm_percent(500_000), "50%");
        assert_eq!(ppm_percent(1_000_000), "100%");
        assert_eq!(ppm_percent(125_000), "12.5%");
    }
}
