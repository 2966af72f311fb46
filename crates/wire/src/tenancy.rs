//! The admin and account API's JSON: request bodies parsed strictly into tenancy's specs, and
//! the `*View`s of tenants, keys, orgs, prices, accounts and usage. Money is integer
//! micro-units; times are RFC 3339 UTC.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use tenancy::{
    Account, ApiKey, CreatedKey, KeySpec, Org, Price, PriceRates, Removal, Scope, Tenant,
    TenantPatch, TenantSpec, UsageRow,
};

use crate::error::{ApiError, Result};
use crate::validate::{parse_object, Fields};

/// The largest rate limit accepted (per minute).
const MAX_LIMIT: i64 = 1_000_000_000_000;
/// The largest single top-up or price (micro-units).
const MAX_MONEY: i64 = 1_000_000_000_000_000;

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: &Option<DateTime<Utc>>) -> Option<String> {
    t.as_ref().map(time)
}

/// Parses an RFC 3339 time (any offset; stored as UTC).
pub fn parse_time(param: &str, value: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid(
                param,
                format!("Invalid value for '{param}': expected an RFC 3339 time such as 2026-01-31T00:00:00Z, but got '{value}'."),
            )
        })
}

/// `POST /admin/v1/tenants`.
pub fn tenant_spec(body: &[u8]) -> Result<TenantSpec> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&[
        "name",
        "free_tier_only",
        "rpm",
        "tpm",
        "grant_tokens",
        "budget",
    ])?;
    Ok(TenantSpec {
        name: fields.required_string("name")?.to_owned(),
        free_tier_only: fields.bool("free_tier_only")?.unwrap_or(false),
        rpm: fields.integer("rpm", 1, MAX_LIMIT)?,
        tpm: fields.integer("tpm", 1, MAX_LIMIT)?,
        grant_tokens: fields.integer("grant_tokens", 0, MAX_LIMIT)?,
    })
}

/// `PATCH /admin/v1/tenants/{id}`: absent leaves a field, `null` removes a limit. The
/// `budget` field is read by [`crate::budgets::budget_field`]; the patch is empty when it is
/// the only one.
pub fn tenant_patch(body: &[u8]) -> Result<TenantPatch> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["free_tier_only", "rpm", "tpm", "disabled", "budget"])?;
    let limit = |key: &str| -> Result<Option<Option<i64>>> {
        if fields.is_null(key) {
            return Ok(Some(None));
        }
        Ok(fields.integer(key, 1, MAX_LIMIT)?.map(Some))
    };
    let patch = TenantPatch {
        free_tier_only: fields.bool("free_tier_only")?,
        disabled: fields.bool("disabled")?,
        rpm: limit("rpm")?,
        tpm: limit("tpm")?,
    };
    if patch == TenantPatch::default() && !map.contains_key("budget") {
        return Err(ApiError::new(
            crate::error::Code::InvalidRequest,
            "Nothing to change: send at least one of free_tier_only, disabled, rpm, tpm, budget.",
        ));
    }
    Ok(patch)
}

/// `POST /admin/v1/tenants/{id}/orgs`.
pub fn org_name(body: &[u8]) -> Result<String> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["name"])?;
    Ok(fields.required_string("name")?.to_owned())
}

fn strings(fields: &Fields<'_>, key: &str) -> Result<Option<Vec<String>>> {
    let Some(items) = fields.array(key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(ApiError::invalid(
                format!("{}[{i}]", fields.param(key)),
                format!(
                    "Invalid type for '{}[{i}]': expected a string.",
                    fields.param(key)
                ),
            )),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `POST /admin/v1/tenants/{id}/keys`.
pub fn key_spec(body: &[u8]) -> Result<KeySpec> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&[
        "name",
        "scopes",
        "models",
        "rpm",
        "tpm",
        "expires_at",
        "budget",
    ])?;
    let scopes = match strings(&fields, "scopes")? {
        None => None,
        Some(names) => Some(
            names
                .iter()
                .map(|s| s.parse::<Scope>().map_err(ApiError::from_tenancy))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(KeySpec {
        name: fields.string("name")?.unwrap_or("default").to_owned(),
        scopes,
        models: strings(&fields, "models")?,
        rpm: fields.integer("rpm", 1, MAX_LIMIT)?,
        tpm: fields.integer("tpm", 1, MAX_LIMIT)?,
        expires_at: fields
            .string("expires_at")?
            .map(|t| parse_time("expires_at", t))
            .transpose()?,
    })
}

/// `POST /admin/v1/tenants/{id}/topups`: `(amount, idempotency key)`.
pub fn top_up(body: &[u8]) -> Result<(i64, Option<String>)> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["amount", "idempotency_key"])?;
    let amount = fields
        .integer("amount", 1, MAX_MONEY)?
        .ok_or_else(|| ApiError::invalid("amount", "Missing required parameter: 'amount'."))?;
    Ok((amount, fields.string("idempotency_key")?.map(str::to_owned)))
}

/// `PUT /admin/v1/prices/audio/{model}`: `{"per_minute": micro-units}`.
pub fn per_minute(body: &[u8]) -> Result<i64> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["per_minute"])?;
    fields
        .integer("per_minute", 0, tenancy::MAX_PER_CALL)?
        .ok_or_else(|| ApiError::invalid("per_minute", "Missing required parameter: 'per_minute'."))
}

/// `PUT /admin/v1/prices/mcp/{server_id}`: `{"per_call": micro-units}`.
pub fn per_call(body: &[u8]) -> Result<i64> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["per_call"])?;
    fields
        .integer("per_call", 0, tenancy::MAX_PER_CALL)?
        .ok_or_else(|| ApiError::invalid("per_call", "Missing required parameter: 'per_call'."))
}

/// `PUT /admin/v1/prices/{served_model}`.
pub fn price_rates(body: &[u8]) -> Result<PriceRates> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&[
        "input_per_million",
        "output_per_million",
        "cached_input_per_million",
    ])?;
    let rate = |key: &str| -> Result<i64> {
        fields
            .integer(key, 0, MAX_MONEY)?
            .ok_or_else(|| ApiError::invalid(key, format!("Missing required parameter: '{key}'.")))
    };
    let input = rate("input_per_million")?;
    Ok(PriceRates {
        input_per_million: input,
        output_per_million: rate("output_per_million")?,
        cached_input_per_million: fields
            .integer("cached_input_per_million", 0, MAX_MONEY)?
            .unwrap_or(input),
    })
}

#[derive(Debug, Serialize)]
pub struct TenantView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub created_at: String,
    pub free_tier_only: bool,
    pub disabled: bool,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub grant_tokens_total: i64,
    pub grant_tokens_left: i64,
    pub grant_tokens_held: i64,
    pub balance: i64,
    pub amount_held: i64,
    /// When it was deleted (`DELETE /admin/v1/tenants/{id}`); `null` for an active tenant.
    pub deleted_at: Option<String>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            object: "tenant",
            created_at: time(&t.created_at),
            grant_tokens_total: t.balances.grant_tokens_total,
            grant_tokens_left: t.balances.grant_tokens_left(),
            grant_tokens_held: t.balances.grant_tokens_held,
            balance: t.balances.balance,
            amount_held: t.balances.amount_held,
            deleted_at: opt_time(&t.deleted_at),
            id: t.id,
            name: t.name,
            free_tier_only: t.free_tier_only,
            disabled: t.disabled,
            rpm: t.rpm,
            tpm: t.tpm,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct OrgView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub tenant_id: String,
    pub created_at: String,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        Self {
            object: "org",
            created_at: time(&o.created_at),
            id: o.id,
            name: o.name,
            tenant_id: o.tenant_id,
        }
    }
}

/// A key as listed: never its secret or hash.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub object: &'static str,
    pub tenant_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            object: "api_key",
            created_at: time(&k.created_at),
            expires_at: opt_time(&k.expires_at),
            revoked_at: opt_time(&k.revoked_at),
            last_used_at: opt_time(&k.last_used_at),
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            models: k.models,
            rpm: k.rpm,
            tpm: k.tpm,
        }
    }
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Serialize)]
pub struct CreatedKeyView {
    #[serde(flatten)]
    pub key: KeyView,
    pub key_secret_notice: &'static str,
    /// The secret.
    #[serde(rename = "key")]
    pub secret: String,
}

impl From<CreatedKey> for CreatedKeyView {
    fn from(created: CreatedKey) -> Self {
        Self {
            key: KeyView::from(created.key),
            key_secret_notice: "Store this key now: it is shown once and cannot be recovered.",
            secret: created.secret,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PriceView {
    pub object: &'static str,
    pub served_model: String,
    /// For an MCP server's entry (`mcp/<server id>`): micro-units per tool call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_call: Option<i64>,
    /// For a speech model's entry (`audio/<served model>`): micro-units per minute of audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<i64>,
    /// Per-token rates; absent on an MCP server's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_per_million: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_per_million: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<i64>,
    pub updated_at: String,
}

impl From<Price> for PriceView {
    fn from(p: Price) -> Self {
        let call = tenancy::is_tool_call(&p.served_model);
        let audio = tenancy::is_audio(&p.served_model);
        let tokens = !call && !audio;
        Self {
            object: "price",
            per_call: call.then_some(p.rates.input_per_million / 1_000_000),
            per_minute: audio.then_some(p.rates.input_per_million),
            updated_at: time(&p.updated_at),
            served_model: p.served_model,
            input_per_million: tokens.then_some(p.rates.input_per_million),
            output_per_million: tokens.then_some(p.rates.output_per_million),
            cached_input_per_million: tokens.then_some(p.rates.cached_input_per_million),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub object: &'static str,
    pub tenant_id: String,
    pub name: String,
    pub grant_tokens_total: i64,
    pub grant_tokens_left: i64,
    pub grant_tokens_held: i64,
    pub balance: i64,
    pub amount_held: i64,
    pub free_tier_only: bool,
    pub disabled: bool,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    /// The calling key's own limits and scopes (absent for the admin key).
    pub key: Option<KeyView>,
}

impl AccountView {
    pub fn new(a: Account, key: Option<ApiKey>) -> Self {
        Self {
            object: "account",
            tenant_id: a.tenant_id,
            name: a.name,
            grant_tokens_total: a.grant_tokens_total,
            grant_tokens_left: a.grant_tokens_left,
            grant_tokens_held: a.grant_tokens_held,
            balance: a.balance,
            amount_held: a.amount_held,
            free_tier_only: a.free_tier_only,
            disabled: a.disabled,
            rpm: a.rpm,
            tpm: a.tpm,
            key: key.map(KeyView::from),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UsageRowView {
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub total_tokens: i64,
    /// Tokens paid from the free grant.
    pub grant_tokens: i64,
    /// Micro-units charged to the balance.
    pub cost: i64,
    /// MCP tool calls made (grouped by model, a server's calls are the group `mcp/<id>`).
    pub tool_calls: i64,
    /// Seconds of audio transcribed (each request's `ceil(ms / 1000)`).
    pub audio_seconds: i64,
}

impl From<UsageRow> for UsageRowView {
    fn from(r: UsageRow) -> Self {
        Self {
            tool_calls: r.tool_calls,
            audio_seconds: r.audio_seconds,
            total_tokens: r.prompt_tokens + r.completion_tokens,
            group: r.group,
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: r.cached_tokens,
            grant_tokens: r.grant_tokens,
            cost: r.amount,
        }
    }
}

/// `{"object": "list", "data": [...]}`.
#[derive(Debug, Serialize)]
pub struct ListView<T> {
    pub object: &'static str,
    pub data: Vec<T>,
}

impl<T> ListView<T> {
    pub fn new<U: Into<T>>(items: Vec<U>) -> Self {
        Self {
            object: "list",
            data: items.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokensView {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
}

impl From<tenancy::TokenUsage> for TokensView {
    fn from(u: tenancy::TokenUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.cached_tokens,
        }
    }
}

/// One request's reservation and settlement: what was held, persisted and billed.
#[derive(Debug, Serialize)]
pub struct RequestBillView {
    pub object: &'static str,
    pub request_id: String,
    pub tenant_id: String,
    pub key_id: Option<String>,
    pub model: String,
    /// `open`, `settled` or `released`.
    pub state: &'static str,
    pub prompt_tokens: i64,
    pub max_completion_tokens: i64,
    /// The last persisted progress of a stream.
    pub progress: Option<TokensView>,
    pub billed: Option<TokensView>,
    /// Free-grant tokens charged.
    pub grant_tokens: Option<i64>,
    /// Micro-units charged.
    pub cost: Option<i64>,
    pub created_at: String,
    pub settled_at: Option<String>,
}

impl From<tenancy::Reservation> for RequestBillView {
    fn from(r: tenancy::Reservation) -> Self {
        Self {
            object: "request_bill",
            state: r.state.as_str(),
            progress: r.delivered.map(Into::into),
            billed: r.billed.map(Into::into),
            grant_tokens: r.charged.map(|c| c.grant_tokens),
            cost: r.charged.map(|c| c.amount),
            created_at: time(&r.created_at),
            settled_at: opt_time(&r.settled_at),
            request_id: r.request_id,
            tenant_id: r.tenant_id,
            key_id: r.key_id,
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            max_completion_tokens: r.max_completion_tokens,
        }
    }
}

/// `DELETE /admin/v1/tenants/{id}`, and its `?dry_run=true`: what the deletion did, or would do
/// now. Each map goes from a kind to its ids or names, sorted; every kind the server knows is
/// listed, empty or not.
#[derive(Debug, Serialize)]
pub struct TenantDeletionView {
    pub object: &'static str,
    pub tenant_id: String,
    pub dry_run: bool,
    /// When it was deleted; `null` in a dry run.
    pub deleted_at: Option<String>,
    /// Keys revoked at once (`api_keys`); their rows stay, named by its ledger.
    pub revoked: BTreeMap<&'static str, Vec<String>>,
    /// Requests of it that were running (reservations open): ended and settled for what they
    /// delivered.
    pub running_requests: Vec<String>,
    /// Deleted from the database, and their files from disk (`hub_blobs`, `hub_uploads`).
    pub removed: BTreeMap<&'static str, Vec<String>>,
    /// Its own that stays: public repositories and the orgs holding them.
    pub kept: BTreeMap<&'static str, Vec<String>>,
    /// Its ledger entries, all kept (the tenant row stays too, marked deleted).
    pub ledger_entries_kept: i64,
    /// Whether the database's files were rewritten without the removed rows' bytes (SQLite);
    /// `false` on PostgreSQL, which keeps them until `VACUUM` reuses the space. Absent in a
    /// dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_scrubbed: Option<bool>,
}

impl TenantDeletionView {
    pub fn new(removal: Removal, running_requests: Vec<String>, scrubbed: Option<bool>) -> Self {
        Self {
            object: "tenant.deletion",
            dry_run: removal.deleted_at.is_none(),
            deleted_at: opt_time(&removal.deleted_at),
            tenant_id: removal.tenant_id,
            revoked: removal.revoked,
            running_requests,
            removed: removal.removed,
            kept: removal.kept,
            ledger_entries_kept: removal.ledger_entries,
            database_scrubbed: scrubbed,
        }
    }
}

/// An admin query flag (`true`/`false`, `1`/`0`; absent is `false`), by `param`'s name.
pub fn flag(param: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            param,
            format!("Invalid value for '{param}': expected true or false, but got '{other}'."),
        )),
    }
}
