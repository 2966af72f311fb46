//! Reserve, then settle, exactly once.
//!
//! Around one generation the gateway calls:
//! 1. [`Ledger::reserve`] with the prompt's token count and `max_tokens` — holds the priced
//!    worst case, or refuses (`InsufficientQuota`, or `PermissionDenied` for a free-tier-only
//!    tenant whose grant is used up);
//! 2. while streaming, [`Ledger::progress`] with the marks [`crate::ProgressMarks`] hands out;
//! 3. at the end — finished, cancelled by the client, or failed — [`Ledger::settle`] with the
//!    usage actually delivered ([`Ledger::cancel`] when nothing was). Settling twice is a no-op.
//!
//! Reservations belong to this process and carry a lease, which [`Ledger::heartbeat`] renews.
//! [`Ledger::recover`] closes other processes' reservations whose lease ran out: from their
//! persisted progress, or by releasing them when none was recorded.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use store::accounting;
use store::{
    LedgerEntry, NewReservation, Reservation, SettleWith, Settlement, Store, StoreError, Tenant,
    TokenUsage,
};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::prices::PriceBook;

/// How many expired reservations one recovery pass reads at a time.
const RECOVERY_BATCH: i64 = 256;

/// A request about to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Unique per request; the idempotency key of its ledger entries.
    pub request_id: String,
    pub tenant_id: String,
    /// The key the request came with (`None` for callers without one).
    pub key_id: Option<String>,
    pub served_model: String,
    pub prompt_tokens: i64,
    pub max_completion_tokens: i64,
}

/// What a recovery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Closed with a charge from persisted progress.
    pub settled: Vec<Settlement>,
    /// Closed with nothing recorded: the whole hold went back.
    pub released: Vec<Settlement>,
}

#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    prices: PriceBook,
    process_id: Arc<str>,
    lease: TimeDelta,
}

impl Ledger {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        prices: PriceBook,
        process_id: &str,
        lease: TimeDelta,
    ) -> Self {
        Self {
            store,
            clock,
            prices,
            process_id: Arc::from(process_id),
            lease,
        }
    }

    /// The owner recorded on this process's reservations.
    pub fn process_id(&self) -> &str {
        &self.process_id
    }

    /// Holds the worst case of a request at the model's current price.
    pub async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation> {
        if request.request_id.is_empty() {
            return Err(Error::invalid("request_id", "must not be empty"));
        }
        if request.prompt_tokens < 0 {
            return Err(Error::invalid("prompt_tokens", "must be 0 or more"));
        }
        if request.max_completion_tokens < 0 {
            return Err(Error::invalid("max_completion_tokens", "must be 0 or more"));
        }
        let now = self.clock.now();
        let new = NewReservation {
            request_id: request.request_id.clone(),
            tenant_id: request.tenant_id.clone(),
            key_id: request.key_id.clone(),
            model: request.served_model.clone(),
            prompt_tokens: request.prompt_tokens,
            max_completion_tokens: request.max_completion_tokens,
            // The store reads the model's price-book entry in the reservation's transaction.
            default_rates: self.prices.default_for(&request.served_model).await?,
            owner: self.process_id.to_string(),
            lease_expires_at: now + self.lease,
            created_at: now,
        };
        Ok(self.store.reserve(&new).await?)
    }

    /// Replaces an open reservation's worst case with `prompt_tokens` + `max_completion_tokens`
    /// (at the rates it was reserved at), once per request: when the backend has counted the
    /// prompt that a bound from its bytes was reserved for. A smaller hold gives the difference
    /// back at once; a larger one is taken only if the account can take it (`InsufficientQuota`
    /// or `PermissionDenied` otherwise, the reservation unchanged).
    pub async fn resize(
        &self,
        request_id: &str,
        prompt_tokens: i64,
        max_completion_tokens: i64,
    ) -> Result<Reservation> {
        if prompt_tokens < 0 {
            return Err(Error::invalid("prompt_tokens", "must be 0 or more"));
        }
        if max_completion_tokens < 0 {
            return Err(Error::invalid("max_completion_tokens", "must be 0 or more"));
        }
        Ok(self
            .store
            .resize_reservation(
                request_id,
                prompt_tokens,
                max_completion_tokens,
                self.clock.now(),
            )
            .await?)
    }

    /// Refuses, before any work is done for it, a request that `tenant` (as read for this
    /// request) could not pay for: `prompt_tokens` (at least 1) and `max_completion_tokens` of
    /// `served_model`, its worst case as known before tokenizing. `InsufficientQuota`, or
    /// `PermissionDenied` for a disabled tenant or a free-tier-only one whose grant is used up.
    /// No write: [`Ledger::reserve`] still decides against the account as it is then. Reads
    /// the price only when the tenant's free grant does not cover the request. Returns the
    /// micro-units the request's hold would take (what its budgets are checked with).
    pub async fn check_affordable(
        &self,
        tenant: &Tenant,
        served_model: &str,
        prompt_tokens: i64,
        max_completion_tokens: i64,
    ) -> Result<i64> {
        if tenant.disabled {
            return Err(StoreError::TenantDisabled(tenant.id.clone()).into());
        }
        let prompt = prompt_tokens.max(1);
        let completion = max_completion_tokens.max(0);
        let worst_case = prompt.saturating_add(completion);
        let money_only = accounting::money_only(served_model);
        let grant = if money_only {
            0
        } else {
            tenant.balances.grant_tokens_available()
        };
        if grant >= worst_case {
            return Ok(0);
        }
        let rates = self.rates_for(served_model).await?;
        let per = accounting::price_unit(served_model);
        let hold = accounting::hold_per(prompt, completion, &rates, grant, per);
        let free_tier_only = tenant.free_tier_only && !(money_only && hold.amount == 0);
        accounting::check_hold(&tenant.balances, free_tier_only, &hold, worst_case)
            .map_err(|refusal| Error::from(StoreError::from(refusal)))?;
        Ok(hold.amount)
    }

    /// The rates a new reservation of `served_model` would take (its entry, else the default;
    /// audio without an entry is free).
    async fn rates_for(&self, served_model: &str) -> Result<store::PriceRates> {
        if accounting::is_audio(served_model) {
            return Ok(self.prices.entry(served_model).await?.unwrap_or_default());
        }
        self.prices.rates(served_model).await
    }

    /// Persists a stream's progress: the prompt (and cached) tokens and a completion-token mark
    /// from [`crate::ProgressMarks`]. After settlement it changes nothing.
    pub async fn progress(&self, request_id: &str, delivered: TokenUsage) -> Result<()> {
        Ok(self
            .store
            .record_progress(request_id, &delivered, self.clock.now())
            .await?)
    }

    /// Charges exactly `delivered` (clamped to the reservation) and releases the rest.
    /// Idempotent: a closed reservation returns its settlement with `already_settled` set.
    pub async fn settle(&self, request_id: &str, delivered: TokenUsage) -> Result<Settlement> {
        Ok(self
            .store
            .settle(request_id, SettleWith::Usage(delivered), self.clock.now())
            .await?)
    }

    /// Closes a reservation from its last persisted progress (nothing charged when none was
    /// recorded), whoever's it is: a long job taking over the reservation of its own earlier
    /// run after a restart. Idempotent like [`Ledger::settle`].
    pub async fn settle_from_progress(&self, request_id: &str) -> Result<Settlement> {
        Ok(self
            .store
            .settle(request_id, SettleWith::Progress, self.clock.now())
            .await?)
    }

    /// Holds the price of one MCP tool call to `server_id`: its price-book entry
    /// (`mcp/<server id>`, see [`PriceBook::set_per_call`]), else free. The free token grant
    /// never pays for calls. Close it with [`Ledger::close_call`].
    pub async fn reserve_call(
        &self,
        request_id: &str,
        tenant_id: &str,
        key_id: Option<&str>,
        server_id: &str,
    ) -> Result<Reservation> {
        let now = self.clock.now();
        let new = NewReservation {
            request_id: request_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            key_id: key_id.map(str::to_owned),
            model: format!("{}{server_id}", accounting::TOOL_CALL_PREFIX),
            prompt_tokens: 1,
            max_completion_tokens: 0,
            default_rates: store::PriceRates::default(),
            owner: self.process_id.to_string(),
            lease_expires_at: now + self.lease,
            created_at: now,
        };
        Ok(self.store.reserve(&new).await?)
    }

    /// Closes a tool call: charged its price when `completed`, else released; its audit row
    /// (`audit.id` is the call's reservation) is written in the same write, with what was
    /// charged.
    pub async fn close_call(
        &self,
        completed: bool,
        audit: store::McpCallRecord,
    ) -> Result<Settlement> {
        let used = TokenUsage {
            prompt_tokens: i64::from(completed),
            ..TokenUsage::default()
        };
        Ok(self
            .store
            .settle_audited(SettleWith::Usage(used), self.clock.now(), audit)
            .await?)
    }

    /// Releases a reservation whose request delivered nothing.
    pub async fn cancel(&self, request_id: &str) -> Result<Settlement> {
        self.settle(request_id, TokenUsage::default()).await
    }

    /// Renews the lease of this process's open reservations; call it at least every third of
    /// the lease (see [`Ledger::spawn_heartbeat`]).
    pub async fn heartbeat(&self) -> Result<u64> {
        let until = self.clock.now() + self.lease;
        Ok(self.store.renew_leases(&self.process_id, until).await?)
    }

    /// Every third of the lease until the returned task is aborted: a heartbeat, then a
    /// recovery pass (a process that crashed and restarted within a lease is recovered here,
    /// once its old lease ran out).
    pub fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let every = (self.lease / 3)
            .to_std()
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = ledger.heartbeat().await {
                    tracing::warn!(error = %e, "lease heartbeat failed");
                }
                match ledger.recover().await {
                    Ok(r) if !r.settled.is_empty() || !r.released.is_empty() => tracing::info!(
                        settled = r.settled.len(),
                        released = r.released.len(),
                        "recovered the reservations of processes that stopped"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reservation recovery failed"),
                }
            }
        })
    }

    /// Closes the reservations of other processes whose lease has run out, from their
    /// persisted progress. A live process's reservations are never touched: their leases are
    /// renewed, and each one is re-checked inside its own transaction.
    pub async fn recover(&self) -> Result<Recovery> {
        let now = self.clock.now();
        let mut recovery = Recovery::default();
        loop {
            let expired = self
                .store
                .expired_reservations(&self.process_id, now, RECOVERY_BATCH)
                .await?;
            let batch = expired.len();
            for reservation in expired {
                let Some(settlement) = self
                    .store
                    .settle_expired(&reservation.request_id, now)
                    .await?
                else {
                    continue;
                };
                tracing::info!(
                    request_id = %settlement.request_id,
                    owner = %reservation.owner,
                    completion_tokens = settlement.billed.completion_tokens,
                    "recovered an abandoned reservation"
                );
                if settlement.billed.total() > 0 {
                    recovery.settled.push(settlement);
                } else {
                    recovery.released.push(settlement);
                }
            }
            if i64::try_from(batch).unwrap_or(0) < RECOVERY_BATCH {
                return Ok(recovery);
            }
        }
    }

    pub async fn reservation(&self, request_id: &str) -> Result<Reservation> {
        Ok(self.store.reservation(request_id).await?)
    }

    /// Adds `amount` micro-units to a tenant's balance. With an idempotency key, a retried
    /// top-up is applied once.
    pub async fn top_up(
        &self,
        tenant_id: &str,
        amount: i64,
        idempotency_key: Option<&str>,
    ) -> Result<Tenant> {
        if amount <= 0 {
            return Err(Error::invalid(
                "amount",
                "must be a positive number of micro-units",
            ));
        }
        if let Some(at) = self.store.tenant(tenant_id).await?.deleted_at {
            return Err(crate::deletion::deleted(tenant_id, at));
        }
        let generated;
        let key = match idempotency_key {
            Some(key) if !key.is_empty() => key,
            _ => {
                generated = format!("topup_{}", uuid::Uuid::new_v4().simple());
                &generated
            }
        };
        Ok(self
            .store
            .top_up(tenant_id, amount, key, self.clock.now())
            .await?)
    }

    /// Request ids of `tenant_id`'s open reservations, in any process sharing the database.
    pub async fn open_requests(&self, tenant_id: &str) -> Result<Vec<String>> {
        Ok(self.store.open_reservations(tenant_id).await?)
    }

    /// Waits up to `wait` for `tenant_id`'s open reservations to be settled by the requests
    /// holding them (ended requests settle what they delivered as they drop), then settles
    /// whatever is still open from its last persisted progress, as lease recovery would: a
    /// request of another process, or one that did not end in time. Settling is idempotent,
    /// so a request settling itself afterwards changes nothing. Returns the request ids it
    /// settled itself.
    pub async fn close_open(&self, tenant_id: &str, wait: Duration) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let open = self.store.open_reservations(tenant_id).await?;
            if open.is_empty() {
                return Ok(Vec::new());
            }
            if tokio::time::Instant::now() >= deadline {
                for request_id in &open {
                    let settlement = self
                        .store
                        .settle(request_id, SettleWith::Progress, self.clock.now())
                        .await?;
                    tracing::info!(
                        request_id = %request_id,
                        completion_tokens = settlement.billed.completion_tokens,
                        "settled a deleted tenant's request from its persisted progress"
                    );
                }
                return Ok(open);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The tenant's ledger, oldest first.
    pub async fn entries(&self, tenant_id: &str) -> Result<Vec<LedgerEntry>> {
        Ok(self.store.ledger_entries(tenant_id).await?)
    }
}
