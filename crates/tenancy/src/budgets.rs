//! Spend caps and alerts, per key and per tenant.
//!
//! A budget is an amount of micro-units per UTC day or month ([`Period`]). Spend in a period is
//! read from the ledger's reservations (`store::BudgetStore::spent`): what reservations settled
//! since the period began charged, plus what open reservations hold. Only money counts: what
//! the free token grant pays is not spend.
//!
//! - **Hard cap, at admission** ([`Budgets::admit`]): a request whose worst case (the money its
//!   hold would take) would bring a key's or its tenant's spend past the amount is refused
//!   (`BudgetExceeded`). The permit it returns holds this process's lock on each budgeted
//!   subject until the request's reservation is made, so concurrent requests of one process
//!   see each other's holds and cannot overshoot together. Processes sharing a database each
//!   check against the database, so only requests admitted at the same instant in two
//!   processes can overshoot, by at most one worst case each.
//! - **Soft alerts** ([`Budgets::after_settle`], run off the request path): each threshold a
//!   subject's settled spend crossed in the period becomes one event row (the store's unique
//!   subject, period and threshold make it fire once per period, across processes) and, when
//!   the budget has a webhook URL, a delivery that the gateway's webhook worker makes and
//!   retries ([`Budgets::due`], [`Budgets::claim`], [`Budgets::finish`]).
//!
//! Which subjects have a budget is cached for [`CONFIG_TTL`] (a change made in this process
//! applies at once), so a request of a key and tenant without budgets costs two map lookups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeDelta, TimeZone, Utc};
use store::{BudgetEvent, BudgetRecord, Spent, Store, Timestamp};
use tokio::sync::{Notify, OwnedMutexGuard};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::Principal;

/// How long which subjects have budgets is remembered before it is read again (a budget set
/// through another process applies after at most this long).
pub const CONFIG_TTL: Duration = Duration::from_secs(5);
/// Attempts of one webhook delivery before it is given up.
pub const MAX_DELIVERY_ATTEMPTS: i64 = 6;
/// The most alert thresholds one budget may have.
pub const MAX_ALERTS: usize = 10;

/// A budget's period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            _ => Err(Error::invalid(
                "budget.period",
                format!("'{text}' is not a budget period: use \"day\" or \"month\""),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// When the period holding `now` began: midnight UTC, or the first of the month.
    pub fn start(self, now: Timestamp) -> Timestamp {
        let day = now.date_naive();
        let first = match self {
            Self::Day => day,
            Self::Month => day.with_day(1).unwrap_or(day),
        };
        Utc.from_utc_datetime(&first.and_time(chrono::NaiveTime::MIN))
    }

    /// When the period beginning at `start` ends (the next one begins).
    pub fn end(self, start: Timestamp) -> Timestamp {
        match self {
            Self::Day => start + TimeDelta::days(1),
            Self::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(start + TimeDelta::days(31)),
        }
    }
}

/// A budget as set on a key or tenant route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpec {
    /// Micro-units per period (> 0).
    pub amount: i64,
    pub period: Period,
    /// Thresholds in parts per million of `amount` (each in 1..=1,000,000).
    pub alert_at_ppm: Vec<i64>,
    /// Where alerts are POSTed; checked by the caller like every outbound URL.
    pub webhook_url: Option<String>,
}

/// Whose budget: a key's or a tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spender<'a> {
    Key(&'a str),
    Tenant(&'a str),
}

impl Spender<'_> {
    pub fn name(self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Tenant(id) => format!("tenant:{id}"),
        }
    }

    fn owner(self) -> &'static str {
        match self {
            Self::Key(_) => "key",
            Self::Tenant(_) => "tenant",
        }
    }
}

/// A budget with what was spent against it in the current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub budget: BudgetRecord,
    pub period_start: Timestamp,
    pub resets_at: Timestamp,
    pub spent: Spent,
}

/// Holds this process's admission lock on each budgeted subject of one request until its
/// reservation is made; drop it then.
#[must_use]
pub struct BudgetPermit {
    _locks: Vec<OwnedMutexGuard<()>>,
}

type Cached = (Option<BudgetRecord>, Instant);

/// One async lock per subject, so one subject's checks never interleave.
type SubjectLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;
/// Per subject: the period start and the thresholds this process saw fire in it.
type Fired = Arc<Mutex<HashMap<String, (Timestamp, Vec<i64>)>>>;

#[derive(Clone)]
pub struct Budgets {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    configs: Arc<Mutex<HashMap<String, Cached>>>,
    locks: SubjectLocks,
    fired: Fired,
    deliveries: Arc<Notify>,
    /// Seals webhook secrets at rest; without one they are stored as they are (tests).
    pub(crate) seal: Option<Arc<dyn crate::SecretSeal>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Budgets {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            configs: Arc::default(),
            locks: Arc::default(),
            fired: Arc::default(),
            deliveries: Arc::new(Notify::new()),
            seal: None,
        }
    }

    /// Sets (`Some`) or removes (`None`) the budget of `subject`, a key or tenant of
    /// `tenant_id` (the caller checked that it is). Returns the budget now in force.
    pub async fn set(
        &self,
        tenant_id: &str,
        subject: Spender<'_>,
        spec: Option<&BudgetSpec>,
    ) -> Result<Option<BudgetRecord>> {
        let name = subject.name();
        let record = match spec {
            None => {
                self.store.delete_budget(&name).await?;
                None
            }
            Some(spec) => {
                validate(spec)?;
                let mut alert_at_ppm = spec.alert_at_ppm.clone();
                alert_at_ppm.sort_unstable();
                alert_at_ppm.dedup();
                let record = BudgetRecord {
                    subject: name.clone(),
                    tenant_id: tenant_id.to_owned(),
                    amount: spec.amount,
                    period: spec.period.as_str().to_owned(),
                    alert_at_ppm,
                    webhook_url: spec.webhook_url.clone(),
                    updated_at: self.clock.now(),
                };
                self.store.put_budget(&record).await?;
                Some(record)
            }
        };
        lock(&self.configs).insert(name.clone(), (record.clone(), Instant::now()));
        lock(&self.fired).remove(&name);
        Ok(record)
    }

    /// The budget of `subject`, read from the database.
    pub async fn get(&self, subject: Spender<'_>) -> Result<Option<BudgetRecord>> {
        Ok(self.store.budget(&subject.name()).await?)
    }

    /// The budget of `subject` as this process knows it (read again after [`CONFIG_TTL`]).
    async fn cached(&self, subject: Spender<'_>) -> Result<Option<BudgetRecord>> {
        let name = subject.name();
        if let Some((record, at)) = lock(&self.configs).get(&name) {
            if at.elapsed() < CONFIG_TTL {
                return Ok(record.clone());
            }
        }
        let record = self.store.budget(&name).await?;
        let mut configs = lock(&self.configs);
        if configs.len() > 100_000 {
            configs.clear();
        }
        configs.insert(name, (record.clone(), Instant::now()));
        Ok(record)
    }

    /// The tenant's and its keys' budgets, with this period's spend.
    pub async fn statuses(&self, tenant_id: &str) -> Result<Vec<BudgetStatus>> {
        let now = self.clock.now();
        let mut statuses = Vec::new();
        for budget in self.store.budgets(tenant_id).await? {
            let period = Period::parse(&budget.period).map_err(|_| Error::Internal)?;
            let start = period.start(now);
            let key = budget.subject.strip_prefix("key:");
            let spent = self.store.spent(tenant_id, key, start).await?;
            statuses.push(BudgetStatus {
                period_start: start,
                resets_at: period.end(start),
                spent,
                budget,
            });
        }
        Ok(statuses)
    }

    /// Refuses a request of `principal` whose worst case, `worst_amount` micro-units, would
    /// bring its key's or its tenant's spend this period past its budget. On success the
    /// permit keeps other requests of this process for the same budgets waiting until it is
    /// dropped: drop it once the request's reservation is made.
    pub async fn admit(&self, principal: &Principal, worst_amount: i64) -> Result<BudgetPermit> {
        let tenant_id = principal.tenant.id.as_str();
        let subjects = [Spender::Tenant(tenant_id), Spender::Key(&principal.key.id)];
        let mut budgeted = Vec::new();
        for subject in subjects {
            if let Some(budget) = self.cached(subject).await? {
                budgeted.push((subject, budget));
            }
        }
        let mut locks = Vec::with_capacity(budgeted.len());
        if budgeted.is_empty() {
            return Ok(BudgetPermit { _locks: locks });
        }
        let now = self.clock.now();
        for (subject, budget) in &budgeted {
            let mutex = {
                let mut all = lock(&self.locks);
                if all.len() > 100_000 {
                    all.retain(|_, m| Arc::strong_count(m) > 1);
                }
                all.entry(budget.subject.clone()).or_default().clone()
            };
            locks.push(mutex.lock_owned().await);
            let period = Period::parse(&budget.period).map_err(|_| Error::Internal)?;
            let start = period.start(now);
            let key = match subject {
                Spender::Key(id) => Some(*id),
                Spender::Tenant(_) => None,
            };
            let spent = self.store.spent(tenant_id, key, start).await?;
            decide(*subject, budget, spent, worst_amount, period.end(start))?;
        }
        Ok(BudgetPermit { _locks: locks })
    }

    /// After a request of `tenant_id` with `key_id` settled: records an event for each alert
    /// threshold its key's or tenant's settled spend crossed this period (once per period)
    /// and wakes the webhook worker for those with a URL. Run it off the request path.
    pub async fn after_settle(&self, tenant_id: &str, key_id: Option<&str>) -> Result<()> {
        let mut subjects = vec![Spender::Tenant(tenant_id)];
        if let Some(key) = key_id {
            subjects.push(Spender::Key(key));
        }
        let now = self.clock.now();
        let mut woke = false;
        for subject in subjects {
            let Some(budget) = self.cached(subject).await? else {
                continue;
            };
            if budget.alert_at_ppm.is_empty() {
                continue;
            }
            let period = Period::parse(&budget.period).map_err(|_| Error::Internal)?;
            let start = period.start(now);
            let pending = self.pending_alerts(&budget, start);
            if pending.is_empty() {
                continue;
            }
            let key = match subject {
                Spender::Key(id) => Some(id),
                Spender::Tenant(_) => None,
            };
            let spent = self.store.spent(tenant_id, key, start).await?;
            for ppm in crossed(&pending, budget.amount, spent.settled) {
                let event = BudgetEvent {
                    id: format!("bevt_{}", uuid::Uuid::new_v4().simple()),
                    tenant_id: tenant_id.to_owned(),
                    subject: budget.subject.clone(),
                    period_start: start,
                    threshold_ppm: ppm,
                    amount: budget.amount,
                    spent: spent.settled,
                    webhook_url: budget.webhook_url.clone(),
                    created_at: now,
                    attempts: 0,
                    next_attempt_at: now,
                    delivered_at: None,
                    last_error: None,
                };
                if self.store.record_budget_event(&event).await? {
                    tracing::info!(subject = %event.subject, threshold_ppm = ppm, spent = spent.settled, amount = budget.amount, "budget alert");
                    woke |= event.webhook_url.is_some();
                }
                let mut fired = lock(&self.fired);
                let entry = fired
                    .entry(budget.subject.clone())
                    .or_insert_with(|| (start, Vec::new()));
                if entry.0 != start {
                    *entry = (start, Vec::new());
                }
                entry.1.push(ppm);
            }
        }
        if woke {
            self.deliveries.notify_one();
        }
        Ok(())
    }

    /// The thresholds of `budget` this process has not yet seen fire in the period `start`.
    fn pending_alerts(&self, budget: &BudgetRecord, start: Timestamp) -> Vec<i64> {
        let fired = lock(&self.fired);
        match fired.get(&budget.subject) {
            Some((at, seen)) if *at == start => budget
                .alert_at_ppm
                .iter()
                .copied()
                .filter(|p| !seen.contains(p))
                .collect(),
            _ => budget.alert_at_ppm.clone(),
        }
    }

    /// A tenant's alert events, newest first.
    pub async fn events(
        &self,
        tenant_id: &str,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<BudgetEvent>> {
        Ok(self
            .store
            .budget_events(tenant_id, limit.clamp(1, 1000), before)
            .await?)
    }

    /// Woken when an event with a webhook is recorded.
    pub fn deliveries(&self) -> Arc<Notify> {
        self.deliveries.clone()
    }

    /// Events whose webhook delivery is due now.
    pub async fn due(&self, limit: i64) -> Result<Vec<BudgetEvent>> {
        Ok(self
            .store
            .due_budget_events(self.clock.now(), MAX_DELIVERY_ATTEMPTS, limit)
            .await?)
    }

    /// Takes the next delivery attempt of `event` for this process (`false`: another took
    /// it); the one after it is due after a backoff of 1, 2, 4, … seconds.
    pub async fn claim(&self, event: &BudgetEvent) -> Result<bool> {
        let next = self.clock.now() + backoff(event.attempts + 1);
        Ok(self
            .store
            .claim_budget_event(&event.id, event.attempts, next)
            .await?)
    }

    /// Records a delivery attempt's outcome.
    pub async fn finish(
        &self,
        event_id: &str,
        result: std::result::Result<(), String>,
    ) -> Result<()> {
        let (delivered, error) = match &result {
            Ok(()) => (Some(self.clock.now()), None),
            Err(e) => (None, Some(e.as_str())),
        };
        Ok(self
            .store
            .finish_budget_event(event_id, delivered, error)
            .await?)
    }
}

fn validate(spec: &BudgetSpec) -> Result<()> {
    if spec.amount <= 0 {
        return Err(Error::invalid(
            "budget.amount",
            "a budget's amount must be a positive number of micro-units",
        ));
    }
    if spec.alert_at_ppm.len() > MAX_ALERTS {
        return Err(Error::invalid(
            "budget.alert_at",
            format!("at most {MAX_ALERTS} alert thresholds"),
        ));
    }
    if spec
        .alert_at_ppm
        .iter()
        .any(|p| !(1..=1_000_000).contains(p))
    {
        return Err(Error::invalid(
            "budget.alert_at",
            "each alert threshold must be a fraction of the amount above 0 and at most 1",
        ));
    }
    Ok(())
}

/// Refuses a worst case that would bring `spent` past the budget.
fn decide(
    subject: Spender<'_>,
    budget: &BudgetRecord,
    spent: Spent,
    worst_amount: i64,
    resets_at: Timestamp,
) -> Result<()> {
    let total = spent.total();
    if total.saturating_add(worst_amount.max(0)) <= budget.amount {
        return Ok(());
    }
    Err(Error::BudgetExceeded {
        message: format!(
            "this {owner}'s budget of {amount} micro-units per {period} would be exceeded: \
             {total} spent or held this {period}, and this request may cost up to {worst_amount}. \
             It resets at {resets}; lower max_tokens, or ask for a larger budget.",
            owner = subject.owner(),
            amount = budget.amount,
            period = budget.period,
            resets = resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    })
}

/// The thresholds among `pending` (parts per million of `amount`) that `spent` reached.
fn crossed(pending: &[i64], amount: i64, spent: i64) -> Vec<i64> {
    pending
        .iter()
        .copied()
        .filter(|ppm| i128::from(spent) * 1_000_000 >= i128::from(*ppm) * i128::from(amount))
        .collect()
}

/// The wait before attempt `attempt` + 1 of a webhook delivery: 1 s, 2 s, 4 s, … up to 5 min.
fn backoff(attempt: i64) -> TimeDelta {
    let exp = u32::try_from(attempt.clamp(0, 20)).unwrap_or(20);
    TimeDelta::seconds(2i64.saturating_pow(exp.saturating_sub(1)).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("a valid time")
    }

    #[test]
    fn periods_begin_and_end_on_utc_boundaries() {
        let now = at(2026, 2, 28, 23, 59);
        assert_eq!(Period::Day.start(now), at(2026, 2, 28, 0, 0));
        assert_eq!(
            Period::Day.end(Period::Day.start(now)),
            at(2026, 3, 1, 0, 0)
        );
        assert_eq!(Period::Month.start(now), at(2026, 2, 1, 0, 0));
        assert_eq!(
            Period::Month.end(at(2026, 2, 1, 0, 0)),
            at(2026, 3, 1, 0, 0)
        );
        assert_eq!(
            Period::Month.end(at(2026, 12, 1, 0, 0)),
            at(2027, 1, 1, 0, 0)
        );
        assert_eq!(
            Period::Day.start(at(2026, 3, 1, 0, 0)),
            at(2026, 3, 1, 0, 0)
        );
    }

    #[test]
    fn the_worst_case_may_reach_the_amount_but_not_pass_it() {
        let budget = BudgetRecord {
            subject: "key:k".into(),
            tenant_id: "t".into(),
            amount: 1000,
            period: "day".into(),
            alert_at_ppm: vec![],
            webhook_url: None,
            updated_at: at(2026, 1, 1, 0, 0),
        };
        let spent = Spent {
            settled: 600,
            held: 100,
        };
        let end = at(2026, 1, 2, 0, 0);
        assert!(decide(Spender::Key("k"), &budget, spent, 300, end).is_ok());
        let err = decide(Spender::Key("k"), &budget, spent, 301, end).expect_err("over");
        assert_eq!(err.code(), "budget_exceeded");
        assert!(err.to_string().contains("700 spent or held"), "{err}");
    }

    #[test]
    fn thresholds_are_crossed_at_their_fraction() {
        assert_eq!(crossed(&[500_000, 800_000], 1000, 499), Vec::<i64>::new());
        assert_eq!(crossed(&[500_000, 800_000], 1000, 500), vec![500_000]);
        assert_eq!(
            crossed(&[500_000, 800_000], 1000, 1200),
            vec![500_000, 800_000]
        );
    }

    #[test]
    fn delivery_backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(1), TimeDelta::seconds(1));
        assert_eq!(backoff(2), TimeDelta::seconds(2));
        assert_eq!(backoff(4), TimeDelta::seconds(8));
        assert_eq!(backoff(30), TimeDelta::seconds(300));
    }
}
