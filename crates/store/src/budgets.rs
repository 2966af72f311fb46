//! Spend caps and their alerts: a budget per key (`key:ID`) or tenant (`tenant:ID`), the
//! period's spend read from the reservations (settled charges and open holds), the alert
//! events a budget fired (one per subject, period and threshold, so a threshold fires once per
//! period even across processes) with their webhook deliveries, and each tenant's webhook
//! signing secret. Decisions (is this request over the cap? which thresholds are crossed?) are
//! the `tenancy` crate's.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// One budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRecord {
    /// `key:ID` or `tenant:ID`.
    pub subject: String,
    pub tenant_id: String,
    /// Micro-units per period (> 0).
    pub amount: i64,
    /// `day` or `month` (UTC).
    pub period: String,
    /// Alert thresholds in parts per million of `amount`, ascending.
    pub alert_at_ppm: Vec<i64>,
    pub webhook_url: Option<String>,
    pub updated_at: Timestamp,
}

/// What a subject spent in a period, in micro-units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Charged by reservations settled since the period began.
    pub settled: i64,
    /// Held by open reservations (whenever they were made).
    pub held: i64,
}

impl Spent {
    pub fn total(&self) -> i64 {
        self.settled.saturating_add(self.held)
    }
}

/// A threshold a budget crossed in a period, and its webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetEvent {
    pub id: String,
    pub tenant_id: String,
    pub subject: String,
    pub period_start: Timestamp,
    pub threshold_ppm: i64,
    /// The budget's amount when it fired.
    pub amount: i64,
    /// What was spent (settled) when it fired.
    pub spent: i64,
    /// Where it is delivered; `None`: an event row only.
    pub webhook_url: Option<String>,
    pub created_at: Timestamp,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// Creates or replaces the budget of `budget.subject`.
    async fn put_budget(&self, budget: &BudgetRecord) -> Result<()>;
    /// Removes a subject's budget; whether it had one.
    async fn delete_budget(&self, subject: &str) -> Result<bool>;
    async fn budget(&self, subject: &str) -> Result<Option<BudgetRecord>>;
    /// The budgets of a tenant and of its keys, by subject.
    async fn budgets(&self, tenant_id: &str) -> Result<Vec<BudgetRecord>>;
    /// What `key_id` (or, when `None`, the whole tenant) spent since `since`.
    async fn spent(&self, tenant_id: &str, key_id: Option<&str>, since: Timestamp)
        -> Result<Spent>;
    /// Records an event; `false` (and nothing written) when its subject, period and threshold
    /// already fired.
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<bool>;
    /// A tenant's events, newest first, at most `limit`, those before `before` (an event id)
    /// when given.
    async fn budget_events(
        &self,
        tenant_id: &str,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<BudgetEvent>>;
    /// Undelivered events with a webhook whose next attempt is due, with fewer than
    /// `max_attempts` attempts, oldest first.
    async fn due_budget_events(
        &self,
        now: Timestamp,
        max_attempts: i64,
        limit: i64,
    ) -> Result<Vec<BudgetEvent>>;
    /// Takes the next attempt of an event that still has `attempts` attempts (so one process
    /// makes it), setting when the one after it is due; whether it was taken.
    async fn claim_budget_event(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: Timestamp,
    ) -> Result<bool>;
    /// The outcome of an attempt: delivered at a time, or the error it failed with.
    async fn finish_budget_event(
        &self,
        id: &str,
        delivered_at: Option<Timestamp>,
        error: Option<&str>,
    ) -> Result<()>;
    /// The tenant's webhook signing secret, if it has one.
    async fn webhook_secret(&self, tenant_id: &str) -> Result<Option<String>>;
    /// Stores `secret` for the tenant: replacing any, or with `replace` false only if it has
    /// none. Whether it was stored.
    async fn put_webhook_secret(
        &self,
        tenant_id: &str,
        secret: &str,
        now: Timestamp,
        replace: bool,
    ) -> Result<bool>;
    /// Every tenant's stored webhook secret, `(tenant_id, secret)` (to seal them anew).
    async fn webhook_secrets(&self) -> Result<Vec<(String, String)>>;
    /// Replaces the tenant's stored secret `old` by `new` (the same secret sealed anew);
    /// false if it is no longer `old` (rotated meanwhile).
    async fn reseal_webhook_secret(&self, tenant_id: &str, old: &str, new: &str) -> Result<bool>;
}
