//! A tenant's overview (grant, balance, this month's spend, requests and tokens per day) and
//! its members (owners invite and remove them).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use maud::{html, Markup};
use tenancy::{Action, NewMember, Role, UsageGroup, UsageQuery, UsageRow};

use crate::layout::{self, count, csrf, money, Nav};
use crate::session::{Mutation, PageError, PageResult, Signed};
use crate::Console;

/// The vendored chart library and the console's script.
pub const CHART_SCRIPTS: &[&str] = &[
    "/console/assets/vendor/uPlot-1.6.32.iife.min.js",
    "/console/assets/console.js",
];

/// Usage rows of the tenant over `[start, now)`.
pub async fn usage_since(
    console: &Console,
    tenant_id: &str,
    start: chrono::DateTime<Utc>,
    group_by: UsageGroup,
) -> PageResult<Vec<UsageRow>> {
    let end = Utc::now() + Duration::seconds(1);
    Ok(console
        .tenancy()
        .usage
        .usage(
            tenant_id,
            &UsageQuery {
                start,
                end,
                group_by,
            },
        )
        .await?)
}

/// A chart of requests and tokens per day, with the same numbers as a table for screen
/// readers and without JavaScript. Days without requests are drawn as zero.
pub fn daily_chart(rows: &[UsageRow], days: i64) -> Markup {
    let today = Utc::now().date_naive();
    let first = today - Duration::days(days - 1);
    let mut labels = Vec::new();
    let (mut requests, mut tokens) = (Vec::new(), Vec::new());
    for offset in 0..days {
        let day = first + Duration::days(offset);
        let key = day.format("%Y-%m-%d").to_string();
        let row = rows.iter().find(|r| r.group == key);
        labels.push(day_start(day));
        requests.push(row.map_or(0, |r| r.requests));
        tokens.push(row.map_or(0, |r| r.prompt_tokens + r.completion_tokens));
    }
    html! {
        figure.chart {
            div.chart-canvas
                data-chart="daily"
                data-x=(json(&labels))
                data-requests=(json(&requests))
                data-tokens=(json(&tokens))
                role="img"
                aria-label=(format!("Requests and tokens per day over the last {days} days")) {}
            figcaption { "Requests (bars) and tokens (line) per day, last " (days) " days (UTC)" }
        }
        details {
            summary { "Daily numbers as a table" }
            table {
                thead { tr { th scope="col" { "Day" } th scope="col" { "Requests" } th scope="col" { "Tokens" } } }
                tbody {
                    @for row in rows {
                        tr {
                            td { (row.group) }
                            td.num { (count(row.requests)) }
                            td.num { (count(row.prompt_tokens + row.completion_tokens)) }
                        }
                    }
                }
            }
        }
    }
}

/// JSON for a `data-` attribute (maud escapes it; the browser unescapes it).
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn day_start(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map_or(0, |t| Utc.from_utc_datetime(&t).timestamp())
}

pub async fn overview(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::Read)?;
    let account = console.tenancy().usage.account(&tenant.id).await?;
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let month = usage_since(&console, &tenant.id, month_start, UsageGroup::Model).await?;
    let spent: i64 = month.iter().map(|r| r.amount).sum();
    let grant_spent: i64 = month.iter().map(|r| r.grant_tokens).sum();
    let days = 30;
    let daily = usage_since(
        &console,
        &tenant.id,
        now - Duration::days(days - 1),
        UsageGroup::Day,
    )
    .await?;
    let body = html! {
        dl.stats {
            div { dt { "Free tokens left" } dd #grant-left { (count(account.grant_tokens_left)) " of " (count(account.grant_tokens_total)) } }
            div { dt { "Balance" } dd #balance { (money(account.balance)) } }
            div { dt { "Spent this month" } dd #month-spend { (money(spent)) " + " (count(grant_spent)) " free tokens" } }
            div { dt { "Status" } dd { @if account.disabled { "disabled" } @else { "active" } } }
        }
        h2 { "Activity" }
        (daily_chart(&daily, days))
    };
    Ok(layout::page(
        "Overview",
        Nav::Session(&signed.0, "Overview"),
        CHART_SCRIPTS,
        body,
    ))
}

fn members_body(
    signed: &Signed,
    members: &[tenancy::Member],
    invite: Option<(&str, String)>,
) -> Markup {
    html! {
        @if let Some((email, link)) = invite {
            div.notice role="status" {
                p { "Invite for " strong { (email) } " — hand this link over; it is shown once and valid for 7 days:" }
                p { code #invite-link { (link) } }
            }
        }
        div.scroll tabindex="0" role="region" aria-label="Members table" {
        table {
            caption { "Members of this tenant" }
            thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Status" } th scope="col" { "Action" } } }
            tbody {
                @for m in members {
                    tr {
                        td { (m.email) }
                        td { (m.role) }
                        td { @if m.invited { "invited" } @else { "active" } }
                        td {
                            form method="post" action=(format!("/console/members/{}/remove", m.id)) {
                                (csrf(&signed.0))
                                button.danger type="submit" aria-label=(format!("Remove {}", m.email)) { "Remove" }
                            }
                        }
                    }
                }
            }
        }
        }
        h2 { "Invite a member" }
        form.card method="post" action="/console/members" {
            (csrf(&signed.0))
            label for="invite-email" { "Email" }
            input #invite-email type="email" name="email" required;
            label for="invite-role" { "Role" }
            select #invite-role name="role" {
                option value="developer" { "developer — keys, playground, usage" }
                option value="viewer" { "viewer — read only" }
                option value="owner" { "owner — everything, and members" }
            }
            button type="submit" { "Create invite link" }
        }
    }
}

pub async fn members(State(console): State<Console>, signed: Signed) -> PageResult {
    let (_, tenant) = signed.member(Action::ManageMembers)?;
    let members = console.tenancy().members.list(&tenant.id).await?;
    Ok(layout::page(
        "Members",
        Nav::Session(&signed.0, "Members"),
        &[],
        members_body(&signed, &members, None),
    ))
}

pub async fn invite(State(console): State<Console>, form: Mutation) -> PageResult {
    let (_, tenant) = form.signed.member(Action::ManageMembers)?;
    let role: Role = form.fields.required("role")?.parse()?;
    let new = NewMember {
        email: form.fields.required("email")?.to_owned(),
        password: None,
        role,
    };
    let members = &console.tenancy().members;
    let added = members.add(&tenant.id, &new).await?;
    tracing::info!(tenant = %tenant.id, member = %added.member.id, "member invited from the console");
    let link = added
        .invite_token
        .as_deref()
        .map(gateway::wire::members::invite_link)
        .unwrap_or_default();
    let list = members.list(&tenant.id).await?;
    let mut response: Response = layout::page(
        "Members",
        Nav::Session(&form.signed.0, "Members"),
        &[],
        members_body(&form.signed, &list, Some((&added.member.email, link))),
    );
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

pub async fn remove_member(
    State(console): State<Console>,
    Path(id): Path<String>,
    form: Mutation,
) -> PageResult {
    let (_, tenant) = form.signed.member(Action::ManageMembers)?;
    let members = &console.tenancy().members;
    // Another tenant's member is not found, as a missing one.
    match members.get(&id).await {
        Ok(m) if m.tenant_id == tenant.id => {}
        Ok(_) | Err(tenancy::Error::NotFound { .. }) => {
            return Err(PageError::new(StatusCode::NOT_FOUND, "no such member"))
        }
        Err(e) => return Err(e.into()),
    }
    members.remove(&id).await?;
    tracing::info!(tenant = %tenant.id, member = %id, "member removed from the console");
    Ok(axum::response::Redirect::to("/console/members").into_response())
}
