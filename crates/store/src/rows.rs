//! Rows to records, for both databases and both SQLite drivers, through [`Columns`]: each
//! driver says how it reads an integer, a text, a flag, a time and a list of strings; the
//! decoders here are written once.

use chrono::{DateTime, Utc};

use crate::error::{Result, StoreError};
use crate::model::{
    ApiKey, Balances, Debit, LedgerEntry, LedgerKind, Org, Price, PriceRates, Reservation,
    ReservationState, Tenant, Timestamp, TokenUsage,
};

/// A row's columns by name, whichever driver read it. The provided methods read the portable
/// encoding SQLite uses (flags as 0/1 integers, times as RFC 3339 text, lists as JSON text);
/// PostgreSQL's row overrides them with its native types.
pub(crate) trait Columns {
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;

    fn opt_flag(&self, column: &str) -> Result<Option<bool>> {
        Ok(self.opt_int(column)?.map(|v| v != 0))
    }

    fn opt_time(&self, column: &str) -> Result<Option<Timestamp>> {
        self.opt_text(column)?.map(|t| parse_ts(&t)).transpose()
    }

    fn opt_list(&self, column: &str) -> Result<Option<Vec<String>>> {
        self.opt_text(column)?.map(|t| parse_list(&t)).transpose()
    }

    fn int(&self, column: &str) -> Result<i64> {
        self.opt_int(column)?.ok_or_else(|| null(column))
    }

    fn text(&self, column: &str) -> Result<String> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }

    fn flag(&self, column: &str) -> Result<bool> {
        self.opt_flag(column)?.ok_or_else(|| null(column))
    }

    fn time(&self, column: &str) -> Result<Timestamp> {
        self.opt_time(column)?.ok_or_else(|| null(column))
    }

    fn list(&self, column: &str) -> Result<Vec<String>> {
        self.opt_list(column)?.ok_or_else(|| null(column))
    }
}

fn null(column: &str) -> StoreError {
    StoreError::Corrupt(format!("column '{column}' is NULL"))
}

/// RFC 3339 UTC with six fractional digits, so that text order is time order.
pub(crate) fn ts(t: Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(text: &str) -> Result<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time '{text}': {e}")))
}

/// A list of strings as JSON text (SQLite's lists, and the hub card's languages everywhere).
pub(crate) fn json_list(items: &[String]) -> String {
    // Serialising strings cannot fail.
    serde_json::Value::from(items.to_vec()).to_string()
}

pub(crate) fn parse_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("list '{text}': {e}")))
}

pub(crate) const TENANT: &str = "id, name, created_at, free_tier_only, disabled, rpm, tpm, \
    grant_tokens_total, grant_tokens_used, grant_tokens_held, balance, amount_held, deleted_at";

pub(crate) fn tenant(row: &impl Columns) -> Result<Tenant> {
    Ok(Tenant {
        id: row.text("id")?,
        name: row.text("name")?,
        created_at: row.time("created_at")?,
        free_tier_only: row.flag("free_tier_only")?,
        disabled: row.flag("disabled")?,
        rpm: row.opt_int("rpm")?,
        tpm: row.opt_int("tpm")?,
        balances: Balances {
            grant_tokens_total: row.int("grant_tokens_total")?,
            grant_tokens_used: row.int("grant_tokens_used")?,
            grant_tokens_held: row.int("grant_tokens_held")?,
            balance: row.int("balance")?,
            amount_held: row.int("amount_held")?,
        },
        deleted_at: row.opt_time("deleted_at")?,
    })
}

pub(crate) const ORG: &str = "id, tenant_id, name, created_at";

pub(crate) fn org(row: &impl Columns) -> Result<Org> {
    Ok(Org {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        name: row.text("name")?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) const API_KEY: &str = "id, tenant_id, name, prefix, key_hash, scopes, models, rpm, \
    tpm, created_at, expires_at, revoked_at, last_used_at";

pub(crate) fn api_key(row: &impl Columns) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        name: row.text("name")?,
        prefix: row.text("prefix")?,
        hash: row.text("key_hash")?,
        scopes: row.list("scopes")?,
        models: row.opt_list("models")?,
        rpm: row.opt_int("rpm")?,
        tpm: row.opt_int("tpm")?,
        created_at: row.time("created_at")?,
        expires_at: row.opt_time("expires_at")?,
        revoked_at: row.opt_time("revoked_at")?,
        last_used_at: row.opt_time("last_used_at")?,
    })
}

pub(crate) const PRICE: &str =
    "served_model, input_per_million, output_per_million, cached_input_per_million, updated_at";

pub(crate) fn price(row: &impl Columns) -> Result<Price> {
    Ok(Price {
        served_model: row.text("served_model")?,
        rates: rates(row)?,
        updated_at: row.time("updated_at")?,
    })
}

/// The rates of a price-book entry LEFT JOINed into `row` (its `*_per_million` columns), or
/// `default` where the model has none.
pub(crate) fn rates_or(row: &impl Columns, default: PriceRates) -> Result<PriceRates> {
    match row.opt_int("input_per_million")? {
        Some(_) => rates(row),
        None => Ok(default),
    }
}

fn rates(row: &impl Columns) -> Result<PriceRates> {
    Ok(PriceRates {
        input_per_million: row.int("input_per_million")?,
        output_per_million: row.int("output_per_million")?,
        cached_input_per_million: row.int("cached_input_per_million")?,
    })
}

pub(crate) const LEDGER_ENTRY: &str =
    "id, tenant_id, kind, tokens, amount, idempotency_key, created_at";

pub(crate) fn ledger_entry(row: &impl Columns) -> Result<LedgerEntry> {
    let kind = row.text("kind")?;
    Ok(LedgerEntry {
        id: row.int("id")?,
        tenant_id: row.text("tenant_id")?,
        kind: LedgerKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("ledger kind '{kind}'")))?,
        tokens: row.int("tokens")?,
        amount: row.int("amount")?,
        idempotency_key: row.text("idempotency_key")?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) const RESERVATION: &str = "request_id, tenant_id, key_id, model, prompt_tokens, \
    max_completion_tokens, input_per_million, output_per_million, cached_input_per_million, \
    held_grant_tokens, held_amount, owner, lease_expires_at, created_at, state, \
    delivered_prompt_tokens, delivered_completion_tokens, delivered_cached_tokens, \
    billed_prompt_tokens, billed_completion_tokens, billed_cached_tokens, \
    charged_grant_tokens, charged_amount, settled_at";

fn usage(row: &impl Columns, prefix: &str) -> Result<Option<TokenUsage>> {
    let prompt = row.opt_int(&format!("{prefix}_prompt_tokens"))?;
    let completion = row.opt_int(&format!("{prefix}_completion_tokens"))?;
    let cached = row.opt_int(&format!("{prefix}_cached_tokens"))?;
    Ok(match (prompt, completion) {
        (Some(prompt_tokens), Some(completion_tokens)) => Some(TokenUsage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: cached.unwrap_or(0),
        }),
        _ => None,
    })
}

pub(crate) fn reservation(row: &impl Columns) -> Result<Reservation> {
    let state = row.text("state")?;
    let charged_grant = row.opt_int("charged_grant_tokens")?;
    let charged_amount = row.opt_int("charged_amount")?;
    Ok(Reservation {
        request_id: row.text("request_id")?,
        tenant_id: row.text("tenant_id")?,
        key_id: row.opt_text("key_id")?,
        model: row.text("model")?,
        prompt_tokens: row.int("prompt_tokens")?,
        max_completion_tokens: row.int("max_completion_tokens")?,
        rates: rates(row)?,
        hold: Debit {
            grant_tokens: row.int("held_grant_tokens")?,
            amount: row.int("held_amount")?,
        },
        owner: row.text("owner")?,
        lease_expires_at: row.time("lease_expires_at")?,
        created_at: row.time("created_at")?,
        state: ReservationState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("reservation state '{state}'")))?,
        delivered: usage(row, "delivered")?,
        billed: usage(row, "billed")?,
        charged: match (charged_grant, charged_amount) {
            (Some(grant_tokens), Some(amount)) => Some(Debit {
                grant_tokens,
                amount,
            }),
            _ => None,
        },
        settled_at: row.opt_time("settled_at")?,
    })
}
