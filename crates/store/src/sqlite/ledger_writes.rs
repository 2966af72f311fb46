//! Every write to the account, ledger and reservations on SQLite, as plain functions on the
//! ledger writer's connection (see `writer`): each runs inside the group's transaction, within
//! its own savepoint, so it reads and writes as if it were alone.

use std::sync::LazyLock;

use rusqlite::{params, Connection, OptionalExtension, Params, Row};

use super::rows::{self, ts};
use crate::accounting;
use crate::error::{Result, StoreError};
use crate::model::{
    Debit, LedgerKind, NewReservation, PriceRates, Reservation, ReservationState, SettleWith,
    Settlement, Tenant, Timestamp, TokenUsage,
};

// Built once: every request runs these, and the statement cache is keyed by the text.
static TENANT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM tenants WHERE id = ?1", rows::TENANT));
static TENANT_AND_RATES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, prices.input_per_million, prices.output_per_million, \
         prices.cached_input_per_million FROM tenants \
         LEFT JOIN prices ON prices.served_model = ?2 WHERE tenants.id = ?1",
        rows::TENANT
    )
});
static RESERVATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM reservations WHERE request_id = ?1",
        rows::RESERVATION
    )
});
static INSERT_RESERVATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO reservations (request_id, tenant_id, key_id, model, prompt_tokens, \
         max_completion_tokens, input_per_million, output_per_million, \
         cached_input_per_million, held_grant_tokens, held_amount, owner, \
         lease_expires_at, created_at, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'open') \
         RETURNING {}",
        rows::RESERVATION
    )
});

/// The first row `sql` returns, decoded; `None` when it returns none.
fn first<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut found = stmt.query(params)?;
    found.next()?.map(decode).transpose()
}

fn tenant(conn: &Connection, id: &str) -> Result<Tenant> {
    first(conn, &TENANT, params![id], |row| rows::tenant(row))?
        .ok_or_else(|| StoreError::not_found("tenant", id))
}

/// The tenant and the model's price (or `default`) in one statement.
fn tenant_and_rates(
    conn: &Connection,
    id: &str,
    model: &str,
    default: PriceRates,
) -> Result<(Tenant, PriceRates)> {
    first(conn, &TENANT_AND_RATES, params![id, model], |row| {
        Ok((rows::tenant(row)?, rows::rates_or(row, default)?))
    })?
    .ok_or_else(|| StoreError::not_found("tenant", id))
}

fn reservation(conn: &Connection, request_id: &str) -> Result<Reservation> {
    first(conn, &RESERVATION, params![request_id], |row| {
        rows::reservation(row)
    })?
    .ok_or_else(|| StoreError::not_found("reservation", request_id))
}

/// Appends one ledger entry; whether it was new (its idempotency key and kind unused).
fn append(
    conn: &Connection,
    tenant_id: &str,
    kind: LedgerKind,
    debit: Debit,
    key: &str,
    now: Timestamp,
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO ledger_entries (tenant_id, kind, tokens, amount, idempotency_key, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (idempotency_key, kind) DO NOTHING",
    )?;
    let added = stmt.execute(params![
        tenant_id,
        kind.as_str(),
        debit.grant_tokens,
        debit.amount,
        key,
        ts(now)
    ])?;
    Ok(added > 0)
}

/// Adds `amount` to the balance once per idempotency key; the tenant afterwards.
pub(super) fn top_up(
    conn: &Connection,
    tenant_id: &str,
    amount: i64,
    key: &str,
    now: Timestamp,
) -> Result<Tenant> {
    tenant(conn, tenant_id)?;
    let debit = Debit {
        grant_tokens: 0,
        amount,
    };
    if append(conn, tenant_id, LedgerKind::Topup, debit, key, now)? {
        conn.prepare_cached("UPDATE tenants SET balance = balance + ?2 WHERE id = ?1")?
            .execute(params![tenant_id, amount])?;
    } else {
        let same: Option<(String, i64)> = conn
            .prepare_cached(
                "SELECT tenant_id, amount FROM ledger_entries \
                 WHERE idempotency_key = ?1 AND kind = 'topup'",
            )?
            .query_row(params![key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if same != Some((tenant_id.to_owned(), amount)) {
            return Err(StoreError::Conflict(format!(
                "idempotency key '{key}' was used for another top-up"
            )));
        }
    }
    tenant(conn, tenant_id)
}

/// Holds the priced worst case of `new`, or refuses.
pub(super) fn reserve(conn: &Connection, new: &NewReservation) -> Result<Reservation> {
    let (tenant, rates) = tenant_and_rates(conn, &new.tenant_id, &new.model, new.default_rates)?;
    let hold = accounting::hold_for(&tenant, new, &rates)?;
    let reservation = {
        let mut stmt = conn.prepare_cached(&INSERT_RESERVATION)?;
        let inserted = stmt.query(params![
            new.request_id,
            new.tenant_id,
            new.key_id,
            new.model,
            new.prompt_tokens,
            new.max_completion_tokens,
            rates.input_per_million,
            rates.output_per_million,
            rates.cached_input_per_million,
            hold.grant_tokens,
            hold.amount,
            new.owner,
            ts(new.lease_expires_at),
            ts(new.created_at),
        ]);
        let duplicate = || format!("request id '{}' was already reserved", new.request_id);
        let mut inserted = inserted.map_err(|e| StoreError::sqlite_unique(e, duplicate))?;
        match inserted.next() {
            Ok(Some(row)) => rows::reservation(row)?,
            Ok(None) => return Err(StoreError::Corrupt("INSERT … RETURNING gave no row".into())),
            Err(e) => return Err(StoreError::sqlite_unique(e, duplicate)),
        }
    };
    conn.prepare_cached(
        "UPDATE tenants SET grant_tokens_held = grant_tokens_held + ?2, \
         amount_held = amount_held + ?3 WHERE id = ?1",
    )?
    .execute(params![new.tenant_id, hold.grant_tokens, hold.amount])?;
    let (tenant_id, key, now) = (&new.tenant_id, &new.request_id, new.created_at);
    append(conn, tenant_id, LedgerKind::Reserve, hold, key, now)?;
    Ok(reservation)
}

/// Resizes an open reservation's worst case (see `LedgerStore::resize_reservation`).
pub(super) fn resize(
    conn: &Connection,
    request_id: &str,
    prompt_tokens: i64,
    max_completion_tokens: i64,
    now: Timestamp,
) -> Result<Reservation> {
    let res = reservation(conn, request_id)?;
    if res.state != ReservationState::Open {
        return Ok(res);
    }
    let tenant = tenant(conn, &res.tenant_id)?;
    let change = accounting::resize(&tenant, &res, prompt_tokens, max_completion_tokens)?;
    let key = accounting::resize_key(request_id);
    for (kind, debit) in [
        (LedgerKind::Reserve, change.taken),
        (LedgerKind::Release, change.returned),
    ] {
        if debit != Debit::default() && !append(conn, &res.tenant_id, kind, debit, &key, now)? {
            return Err(StoreError::Conflict(format!(
                "reservation '{request_id}' was already resized"
            )));
        }
    }
    conn.prepare_cached(
        "UPDATE reservations SET prompt_tokens = ?2, max_completion_tokens = ?3, \
         held_grant_tokens = ?4, held_amount = ?5 WHERE request_id = ?1 AND state = 'open'",
    )?
    .execute(params![
        request_id,
        prompt_tokens,
        max_completion_tokens,
        change.hold.grant_tokens,
        change.hold.amount
    ])?;
    conn.prepare_cached(
        "UPDATE tenants SET grant_tokens_held = grant_tokens_held + ?2, \
         amount_held = amount_held + ?3 WHERE id = ?1",
    )?
    .execute(params![
        res.tenant_id,
        change.hold.grant_tokens - res.hold.grant_tokens,
        change.hold.amount - res.hold.amount
    ])?;
    reservation(conn, request_id)
}

/// Records a stream's progress on an open reservation; a closed one is left as it is.
pub(super) fn record_progress(
    conn: &Connection,
    request_id: &str,
    delivered: &TokenUsage,
    now: Timestamp,
) -> Result<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE reservations SET delivered_prompt_tokens = ?2, \
             delivered_completion_tokens = MAX(COALESCE(delivered_completion_tokens, 0), ?3), \
             delivered_cached_tokens = ?4, progress_at = ?5 \
             WHERE request_id = ?1 AND state = 'open'",
        )?
        .execute(params![
            request_id,
            delivered.prompt_tokens,
            delivered.completion_tokens,
            delivered.cached_tokens,
            ts(now)
        ])?;
    if updated == 0 {
        // Closed already (fine) or unknown (an error).
        reservation(conn, request_id)?;
    }
    Ok(())
}

/// Extends the lease of `owner`'s open reservations; how many.
pub(super) fn renew_leases(conn: &Connection, owner: &str, until: Timestamp) -> Result<u64> {
    let renewed = conn
        .prepare_cached(
            "UPDATE reservations SET lease_expires_at = ?2 WHERE owner = ?1 AND state = 'open'",
        )?
        .execute(params![owner, ts(until)])?;
    Ok(u64::try_from(renewed).unwrap_or(u64::MAX))
}

/// Settles `request_id` if open (and, with `expired_before`, only if its lease ended before
/// that time). `None`: left open because its lease was renewed.
pub(super) fn close(
    conn: &Connection,
    request_id: &str,
    with: SettleWith,
    now: Timestamp,
    expired_before: Option<Timestamp>,
) -> Result<Option<Settlement>> {
    let res = reservation(conn, request_id)?;
    if res.state != ReservationState::Open {
        return Ok(expired_before.map_or_else(|| res.settlement(true), |_| None));
    }
    if expired_before.is_some_and(|t| res.lease_expires_at >= t) {
        return Ok(None);
    }
    let closing = accounting::close(&res, with);
    conn.prepare_cached(
        "UPDATE reservations SET state = ?2, billed_prompt_tokens = ?3, \
         billed_completion_tokens = ?4, billed_cached_tokens = ?5, \
         charged_grant_tokens = ?6, charged_amount = ?7, settled_at = ?8 \
         WHERE request_id = ?1 AND state = 'open'",
    )?
    .execute(params![
        request_id,
        closing.state.as_str(),
        closing.billed.prompt_tokens,
        closing.billed.completion_tokens,
        closing.billed.cached_tokens,
        closing.charged.grant_tokens,
        closing.charged.amount,
        ts(now)
    ])?;
    conn.prepare_cached(
        "UPDATE tenants SET grant_tokens_used = grant_tokens_used + ?2, \
         balance = balance - ?3, grant_tokens_held = grant_tokens_held - ?4, \
         amount_held = amount_held - ?5 WHERE id = ?1",
    )?
    .execute(params![
        res.tenant_id,
        closing.charged.grant_tokens,
        closing.charged.amount,
        res.hold.grant_tokens,
        res.hold.amount
    ])?;
    for (kind, debit) in [
        (LedgerKind::Charge, closing.charged),
        (LedgerKind::Release, closing.released),
    ] {
        append(conn, &res.tenant_id, kind, debit, request_id, now)?;
    }
    Ok(Some(Settlement {
        request_id: res.request_id,
        tenant_id: res.tenant_id,
        billed: closing.billed,
        charged: closing.charged,
        released: closing.released,
        already_settled: false,
    }))
}
