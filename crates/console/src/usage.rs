//! Usage by model, day or key over the last N days (the same report as `/v1/usage`, from the
//! same `tenancy::UsageReports`), with totals, a chart by day, bars of each model's or key's
//! tokens and cost (`<meter>` elements: drawn by the browser, no script, no inline style) and a
//! CSV export.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use maud::html;
use serde::Deserialize;
use tenancy::{Action, UsageGroup, UsageRow};

use crate::layout::{self, count, money, Nav};
use crate::session::{PageError, PageResult, Signed};
use crate::tenant::{daily_chart, usage_since, CHART_SCRIPTS};
use crate::Console;

/// As `/v1/usage` without `start`.
const DEFAULT_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
pub struct Params {
    group_by: Option<String>,
    days: Option<String>,
}

struct Report {
    group: &'static str,
    days: i64,
    rows: Vec<UsageRow>,
    key_names: HashMap<String, String>,
}

fn group_of(name: Option<&str>) -> PageResult<(UsageGroup, &'static str)> {
    match name.unwrap_or("model") {
        "model" => Ok((UsageGroup::Model, "model")),
        "day" => Ok((UsageGroup::Day, "day")),
        "key" => Ok((UsageGroup::Key, "key")),
        other => Err(PageError::bad_request(format!(
            "group_by: expected model, day or key, got '{other}'"
        ))),
    }
}

async fn report(console: &Console, signed: &Signed, params: &Params) -> PageResult<Report> {
    let (_, tenant) = signed.member(Action::Read)?;
    let (group_by, group) = group_of(params.group_by.as_deref())?;
    let days = match params.days.as_deref() {
        None | Some("") => DEFAULT_DAYS,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=366).contains(&n) => n,
            _ => {
                return Err(PageError::bad_request(format!(
                    "days: expected 1 to 366, got '{text}'"
                )))
            }
        },
    };
    let rows = usage_since(
        console,
        &tenant.id,
        Utc::now() - Duration::days(days),
        group_by,
    )
    .await?;
    let key_names = key_names(console, &tenant.id).await?;
    Ok(Report {
        group,
        days,
        rows,
        key_names,
    })
}

/// The tenant's key names by key id.
pub(crate) async fn key_names(
    console: &Console,
    tenant_id: &str,
) -> PageResult<HashMap<String, String>> {
    Ok(console
        .tenancy()
        .directory
        .keys(tenant_id)
        .await?
        .into_iter()
        .map(|k| (k.id, k.name))
        .collect())
}

fn totals(rows: &[UsageRow]) -> UsageRow {
    rows.iter().fold(
        UsageRow {
            group: "total".to_owned(),
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            grant_tokens: 0,
            amount: 0,
            tool_calls: 0,
            audio_seconds: 0,
        },
        |mut t, r| {
            t.requests += r.requests;
            t.prompt_tokens += r.prompt_tokens;
            t.completion_tokens += r.completion_tokens;
            t.cached_tokens += r.cached_tokens;
            t.grant_tokens += r.grant_tokens;
            t.amount += r.amount;
            t.tool_calls += r.tool_calls;
            t.audio_seconds += r.audio_seconds;
            t
        },
    )
}

pub async fn page(
    State(console): State<Console>,
    signed: Signed,
    Query(params): Query<Params>,
) -> PageResult {
    let report = report(&console, &signed, &params).await?;
    let total = totals(&report.rows);
    let label = |row: &UsageRow| match report.key_names.get(&row.group) {
        Some(name) if report.group == "key" => format!("{name} ({})", row.group),
        _ => row.group.clone(),
    };
    let chart = if report.group == "day" {
        Some(daily_chart(&report.rows, report.days.min(90)))
    } else {
        None
    };
    let bars = report.group != "day";
    let tokens = |r: &UsageRow| r.prompt_tokens + r.completion_tokens;
    let most_tokens = report.rows.iter().map(tokens).max().unwrap_or(0).max(1);
    let most_amount = report
        .rows
        .iter()
        .map(|r| r.amount)
        .max()
        .unwrap_or(0)
        .max(1);
    let body = html! {
        form.filters method="get" action="/console/usage" {
            label for="group_by" { "Group by" }
            select #group_by name="group_by" {
                @for g in ["model", "day", "key"] {
                    option value=(g) selected[g == report.group] { (g) }
                }
            }
            label for="days" { "Last days" }
            input #days type="number" name="days" min="1" max="366" value=(report.days);
            button type="submit" { "Show" }
            a.button href=(format!("/console/usage.csv?group_by={}&days={}", report.group, report.days)) { "Export CSV" }
        }
        @if let Some(chart) = chart { (chart) }
        div.scroll tabindex="0" role="region" aria-label="Usage table" {
            table #usage-table {
                caption { "Usage by " (report.group) ", last " (report.days) " days" }
                thead { tr {
                    th scope="col" { (report.group) } th scope="col" { "Requests" }
                    th scope="col" { "Prompt tokens" } th scope="col" { "Completion tokens" }
                    th scope="col" { "Free tokens" } th scope="col" { "Cost" }
                    th scope="col" { "Tool calls" } th scope="col" { "Audio seconds" }
                    @if bars { th scope="col" { "Tokens (bar)" } th scope="col" { "Cost (bar)" } }
                } }
                tbody {
                    @for row in &report.rows {
                        tr {
                            td { (label(row)) }
                            td.num { (count(row.requests)) }
                            td.num { (count(row.prompt_tokens)) }
                            td.num { (count(row.completion_tokens)) }
                            td.num { (count(row.grant_tokens)) }
                            td.num { (money(row.amount)) }
                            td.num { (count(row.tool_calls)) }
                            td.num { (count(row.audio_seconds)) }
                            @if bars {
                                td { meter min="0" max=(most_tokens) value=(tokens(row))
                                    aria-label=(format!("{}: {} tokens", label(row), count(tokens(row)))) {} }
                                td { meter min="0" max=(most_amount) value=(row.amount)
                                    aria-label=(format!("{}: {}", label(row), money(row.amount))) {} }
                            }
                        }
                    }
                }
                tfoot {
                    tr #usage-total
                        data-requests=(total.requests)
                        data-prompt-tokens=(total.prompt_tokens)
                        data-completion-tokens=(total.completion_tokens)
                        data-amount=(total.amount) {
                        th scope="row" { "Total" }
                        td.num { (count(total.requests)) }
                        td.num { (count(total.prompt_tokens)) }
                        td.num { (count(total.completion_tokens)) }
                        td.num { (count(total.grant_tokens)) }
                        td.num { (money(total.amount)) }
                        td.num { (count(total.tool_calls)) }
                        td.num { (count(total.audio_seconds)) }
                        @if bars { td {} td {} }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        "Usage",
        Nav::Session(&signed.0, "Usage"),
        CHART_SCRIPTS,
        body,
    ))
}

/// A CSV field: quoted when needed, and never read as a formula by a spreadsheet.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub async fn csv(
    State(console): State<Console>,
    signed: Signed,
    Query(params): Query<Params>,
) -> PageResult {
    let report = report(&console, &signed, &params).await?;
    let mut out = format!(
        "{},key_name,requests,prompt_tokens,completion_tokens,cached_tokens,grant_tokens,cost_micro,tool_calls,audio_seconds\n",
        report.group
    );
    for row in &report.rows {
        let name = report.key_names.get(&row.group).map_or("", String::as_str);
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            field(&row.group),
            field(if report.group == "key" { name } else { "" }),
            row.requests,
            row.prompt_tokens,
            row.completion_tokens,
            row.cached_tokens,
            row.grant_tokens,
            row.amount,
            row.tool_calls,
            row.audio_seconds
        ));
    }
    let mut response: Response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"flywheel-usage.csv\""),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=cmd()"), "'=cmd()");
    }
}
