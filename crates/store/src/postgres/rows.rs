//! PostgreSQL rows to records.

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::model::{
    ApiKey, Balances, Debit, LedgerEntry, LedgerKind, Org, Price, PriceRates, Reservation,
    ReservationState, Tenant, Timestamp, TokenUsage,
};

fn time(row: &PgRow, column: &str) -> Result<Timestamp> {
    Ok(row.try_get(column)?)
}

fn opt_time(row: &PgRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(row.try_get(column)?)
}

pub(super) const TENANT: &str = "id, name, created_at, free_tier_only, disabled, rpm, tpm, \
    grant_tokens_total, grant_tokens_used, grant_tokens_held, balance, amount_held";

pub(super) fn tenant(row: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: time(row, "created_at")?,
        free_tier_only: row.try_get("free_tier_only")?,
        disabled: row.try_get("disabled")?,
        rpm: row.try_get("rpm")?,
        tpm: row.try_get("tpm")?,
        balances: Balances {
            grant_tokens_total: row.try_get("grant_tokens_total")?,
            grant_tokens_used: row.try_get("grant_tokens_used")?,
            grant_tokens_held: row.try_get("grant_tokens_held")?,
            balance: row.try_get("balance")?,
            amount_held: row.try_get("amount_held")?,
        },
    })
}

pub(super) const ORG: &str = "id, tenant_id, name, created_at";

pub(super) fn org(row: &PgRow) -> Result<Org> {
    Ok(Org {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        created_at: time(row, "created_at")?,
    })
}

pub(super) const API_KEY: &str = "id, tenant_id, name, prefix, key_hash, scopes, models, rpm, \
    tpm, created_at, expires_at, revoked_at, last_used_at";

pub(super) fn api_key(row: &PgRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        hash: row.try_get("key_hash")?,
        scopes: row.try_get("scopes")?,
        models: row.try_get("models")?,
        rpm: row.try_get("rpm")?,
        tpm: row.try_get("tpm")?,
        created_at: time(row, "created_at")?,
        expires_at: opt_time(row, "expires_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
    })
}

pub(super) const PRICE: &str =
    "served_model, input_per_million, output_per_million, cached_input_per_million, updated_at";

pub(super) fn price(row: &PgRow) -> Result<Price> {
    Ok(Price {
        served_model: row.try_get("served_model")?,
        rates: rates(row)?,
        updated_at: time(row, "updated_at")?,
    })
}

/// The rates of a price-book entry LEFT JOINed into `row` (its `*_per_million` columns), or
/// `default` where the model has none.
pub(super) fn rates_or(row: &PgRow, default: PriceRates) -> Result<PriceRates> {
    match row.try_get::<Option<i64>, _>("input_per_million")? {
        Some(_) => rates(row),
        None => Ok(default),
    }
}

fn rates(row: &PgRow) -> Result<PriceRates> {
    Ok(PriceRates {
        input_per_million: row.try_get("input_per_million")?,
        output_per_million: row.try_get("output_per_million")?,
        cached_input_per_million: row.try_get("cached_input_per_million")?,
    })
}

pub(super) const LEDGER_ENTRY: &str =
    "id, tenant_id, kind, tokens, amount, idempotency_key, created_at";

pub(super) fn ledger_entry(row: &PgRow) -> Result<LedgerEntry> {
    let kind: String = row.try_get("kind")?;
    Ok(LedgerEntry {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        kind: LedgerKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("ledger kind '{kind}'")))?,
        tokens: row.try_get("tokens")?,
        amount: row.try_get("amount")?,
        idempotency_key: row.try_get("idempotency_key")?,
        created_at: time(row, "created_at")?,
    })
}

pub(super) const RESERVATION: &str = "request_id, tenant_id, key_id, model, prompt_tokens, \
    max_completion_tokens, input_per_million, output_per_million, cached_input_per_million, \
    held_grant_tokens, held_amount, owner, lease_expires_at, created_at, state, \
    delivered_prompt_tokens, delivered_completion_tokens, delivered_cached_tokens, \
    billed_prompt_tokens, billed_completion_tokens, billed_cached_tokens, \
    charged_grant_tokens, charged_amount, settled_at";

fn usage(row: &PgRow, prefix: &str) -> Result<Option<TokenUsage>> {
    let prompt: Option<i64> = row.try_get(format!("{prefix}_prompt_tokens").as_str())?;
    let completion: Option<i64> = row.try_get(format!("{prefix}_completion_tokens").as_str())?;
    let cached: Option<i64> = row.try_get(format!("{prefix}_cached_tokens").as_str())?;
    Ok(match (prompt, completion) {
        (Some(prompt_tokens), Some(completion_tokens)) => Some(TokenUsage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: cached.unwrap_or(0),
        }),
        _ => None,
    })
}

pub(super) fn reservation(row: &PgRow) -> Result<Reservation> {
    let state: String = row.try_get("state")?;
    let charged_grant: Option<i64> = row.try_get("charged_grant_tokens")?;
    let charged_amount: Option<i64> = row.try_get("charged_amount")?;
    Ok(Reservation {
        request_id: row.try_get("request_id")?,
        tenant_id: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        model: row.try_get("model")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        max_completion_tokens: row.try_get("max_completion_tokens")?,
        rates: rates(row)?,
        hold: Debit {
            grant_tokens: row.try_get("held_grant_tokens")?,
            amount: row.try_get("held_amount")?,
        },
        owner: row.try_get("owner")?,
        lease_expires_at: time(row, "lease_expires_at")?,
        created_at: time(row, "created_at")?,
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
        settled_at: opt_time(row, "settled_at")?,
    })
}
