//! The operator's pages (an admin-key session): tenants (create, top up, disable, add an
//! owner or invite) and the price book. The same `tenancy` calls as `/admin/v1`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use tenancy::{NewMember, PriceRates, Role, Session, TenantPatch, TenantSpec};

use crate::layout::{self, count, csrf, money, Nav};
use crate::session::{Mutation, PageError, PageResult, Signed};
use crate::Console;

const MAX_MONEY: i64 = 1_000_000_000_000_000;

/// `12.5` (currency units, up to six decimals) as micro-units.
pub fn parse_money(param: &str, text: &str) -> PageResult<i64> {
    let bad = || {
        PageError::bad_request(format!(
            "{param}: expected an amount such as 10 or 12.50 (up to six decimals), got '{text}'"
        ))
    };
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    let micro = whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac))
        .filter(|m| *m <= MAX_MONEY)
        .ok_or_else(bad)?;
    Ok(micro)
}

fn tenants_body(session: &Session, tenants: &[tenancy::Tenant], shown: Option<Markup>) -> Markup {
    html! {
        @if let Some(shown) = shown { (shown) }
        h2 { "Create a tenant" }
        form.card #create-tenant method="post" action="/console/admin/tenants" {
            (csrf(session))
            label for="tenant-name" { "Name" }
            input #tenant-name type="text" name="name" maxlength="128" required;
            label for="tenant-grant" { "Free token grant (empty: the server's default)" }
            input #tenant-grant type="number" name="grant_tokens" min="0";
            button type="submit" { "Create tenant" }
        }
        h2 { "Tenants" }
        @for t in tenants {
            section.tenant aria-label=(t.name) {
                h3 { (t.name) " " small { code { (t.id) } } }
                p {
                    "Free tokens left " strong { (count(t.balances.grant_tokens_left())) }
                    " · balance " strong.balance { (money(t.balances.balance)) }
                    " · " (if t.disabled { "disabled" } else { "active" })
                }
                div.row {
                    form method="post" action=(format!("/console/admin/tenants/{}/top-up", t.id)) {
                        (csrf(session))
                        label for=(format!("topup-{}", t.id)) { "Top up (currency units)" }
                        input id=(format!("topup-{}", t.id)) type="text" inputmode="decimal" name="amount" required;
                        button type="submit" { "Top up" }
                    }
                    form method="post" action=(format!("/console/admin/tenants/{}/status", t.id)) {
                        (csrf(session))
                        input type="hidden" name="disabled" value=(if t.disabled { "false" } else { "true" });
                        button.danger[!t.disabled] type="submit" {
                            (if t.disabled { "Enable" } else { "Disable" }) span.visually-hidden { " " (t.name) }
                        }
                    }
                }
                form.inline method="post" action=(format!("/console/admin/tenants/{}/members", t.id)) {
                    (csrf(session))
                    label for=(format!("member-{}", t.id)) { "Add a member by email (an invite link is shown)" }
                    input id=(format!("member-{}", t.id)) type="email" name="email" required;
                    label for=(format!("role-{}", t.id)) { "Role" }
                    select id=(format!("role-{}", t.id)) name="role" {
                        option value="owner" { "owner" }
                        option value="developer" { "developer" }
                        option value="viewer" { "viewer" }
                    }
                    button type="submit" { "Invite" }
                }
            }
        }
    }
}

async fn tenants_page(
    console: &Console,
    session: &Session,
    shown: Option<Markup>,
    status: StatusCode,
) -> PageResult {
    let mut tenants = console.tenancy().directory.tenants().await?;
    tenants.retain(|t| t.deleted_at.is_none());
    let mut response: Response = layout::page(
        "Tenants",
        Nav::Session(session, "Tenants"),
        &[],
        tenants_body(session, &tenants, shown),
    );
    *response.status_mut() = status;
    Ok(response)
}

pub async fn tenants(State(console): State<Console>, signed: Signed) -> PageResult {
    signed.operator()?;
    tenants_page(&console, &signed.0, None, StatusCode::OK).await
}

pub async fn create_tenant(State(console): State<Console>, form: Mutation) -> PageResult {
    form.signed.operator()?;
    let spec = TenantSpec {
        name: form.fields.required("name")?.to_owned(),
        grant_tokens: form.fields.integer("grant_tokens", 0, 1_000_000_000_000)?,
        ..TenantSpec::default()
    };
    let tenant = console.tenancy().directory.create_tenant(&spec).await?;
    tracing::info!(tenant = %tenant.id, "tenant created from the console");
    let shown = layout::notice(&format!("Tenant {} created ({}).", tenant.name, tenant.id));
    tenants_page(&console, &form.signed.0, Some(shown), StatusCode::CREATED).await
}

pub async fn top_up(
    State(console): State<Console>,
    Path(id): Path<String>,
    form: Mutation,
) -> PageResult {
    form.signed.operator()?;
    let amount = parse_money("amount", form.fields.required("amount")?)?;
    if amount == 0 {
        return Err(PageError::bad_request("amount: must be more than 0"));
    }
    console.tenancy().ledger.top_up(&id, amount, None).await?;
    tracing::info!(tenant = %id, amount, "top-up from the console");
    Ok(Redirect::to("/console/admin/tenants").into_response())
}

pub async fn set_status(
    State(console): State<Console>,
    Path(id): Path<String>,
    form: Mutation,
) -> PageResult {
    form.signed.operator()?;
    let disabled = match form.fields.required("disabled")? {
        "true" => true,
        "false" => false,
        other => {
            return Err(PageError::bad_request(format!(
                "disabled: expected true or false, got '{other}'"
            )))
        }
    };
    let patch = TenantPatch {
        disabled: Some(disabled),
        ..TenantPatch::default()
    };
    console
        .tenancy()
        .directory
        .update_tenant(&id, &patch)
        .await?;
    tracing::info!(tenant = %id, disabled, "tenant status changed from the console");
    Ok(Redirect::to("/console/admin/tenants").into_response())
}

pub async fn add_member(
    State(console): State<Console>,
    Path(id): Path<String>,
    form: Mutation,
) -> PageResult {
    form.signed.operator()?;
    let role: Role = form.fields.required("role")?.parse()?;
    let new = NewMember {
        email: form.fields.required("email")?.to_owned(),
        password: None,
        role,
    };
    let added = console.tenancy().members.add(&id, &new).await?;
    let link = added
        .invite_token
        .as_deref()
        .map(gateway::wire::members::invite_link)
        .unwrap_or_default();
    let shown = html! {
        div.notice role="status" {
            p { "Invite for " strong { (added.member.email) } " (" (added.member.role) "); hand this link over, it is shown once:" }
            p { code #invite-link { (link) } }
        }
    };
    tenants_page(&console, &form.signed.0, Some(shown), StatusCode::CREATED).await
}

pub async fn prices(State(console): State<Console>, signed: Signed) -> PageResult {
    signed.operator()?;
    let prices = console.tenancy().prices.list().await?;
    let body = html! {
        div.scroll tabindex="0" role="region" aria-label="Price book table" {
            table {
                caption { "The price book, per million tokens" }
                thead { tr { th scope="col" { "Model" } th scope="col" { "Input" } th scope="col" { "Output" } th scope="col" { "Cached input" } } }
                tbody {
                    @for p in &prices {
                        tr {
                            td { (p.served_model) }
                            td.num { (money(p.rates.input_per_million)) }
                            td.num { (money(p.rates.output_per_million)) }
                            td.num { (money(p.rates.cached_input_per_million)) }
                        }
                    }
                }
            }
        }
        h2 { "Set a price" }
        form.card method="post" action="/console/admin/prices" {
            (csrf(&signed.0))
            label for="price-model" { "Served model name" }
            input #price-model type="text" name="model" required;
            label for="price-in" { "Input per million tokens" }
            input #price-in type="text" inputmode="decimal" name="input" required;
            label for="price-out" { "Output per million tokens" }
            input #price-out type="text" inputmode="decimal" name="output" required;
            label for="price-cached" { "Cached input per million (empty: as input)" }
            input #price-cached type="text" inputmode="decimal" name="cached";
            button type="submit" { "Save price" }
        }
    };
    Ok(layout::page(
        "Prices",
        Nav::Session(&signed.0, "Prices"),
        &[],
        body,
    ))
}

pub async fn set_price(State(console): State<Console>, form: Mutation) -> PageResult {
    form.signed.operator()?;
    let f = &form.fields;
    let input = parse_money("input", f.required("input")?)?;
    let rates = PriceRates {
        input_per_million: input,
        output_per_million: parse_money("output", f.required("output")?)?,
        cached_input_per_million: match f.get("cached") {
            Some(text) => parse_money("cached", text)?,
            None => input,
        },
    };
    let model = f.required("model")?;
    console.tenancy().prices.set(model, rates).await?;
    tracing::info!(model = %model, ?rates, "price set from the console");
    Ok(Redirect::to("/console/admin/prices").into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_money;

    #[test]
    fn money_parses_to_micro_units() {
        assert_eq!(parse_money("a", "12.5").ok(), Some(12_500_000));
        assert_eq!(parse_money("a", "0.000001").ok(), Some(1));
        assert_eq!(parse_money("a", "3").ok(), Some(3_000_000));
        assert!(parse_money("a", "1.0000001").is_err());
        assert!(parse_money("a", "-1").is_err());
        assert!(parse_money("a", "").is_err());
        assert!(parse_money("a", "1e3").is_err());
    }
}
