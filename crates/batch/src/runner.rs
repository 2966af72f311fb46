//! One batch's runner: its lines through the [`Executor`] a bounded number at a time, then its
//! files and final status.
//!
//! **Exactly once.** A line's run is metered by the serving layer under the ledger request id
//! `{prefix}-{batch}-{line}-{attempt}`; the attempt is counted in the line's row before the run
//! starts, and the line's result is written (only while it is still pending, with its batch's
//! counts, in one transaction) after the serving layer settled it. A crash can leave:
//! - a run that never reserved: the next attempt runs it, metered;
//! - a run whose reservation is still open (killed mid-generation, nothing delivered): the
//!   next attempt releases it (nothing is charged for it) and runs it, metered;
//! - a run settled but its result not written: the next attempt runs it again *unmetered*
//!   under the settled run's id, so the line keeps its one charge and its output names the
//!   request that was billed.
//!
//! A line refused for now (the server shutting down, a queue timeout, the model unavailable)
//! stays pending and runs again shortly, or after the restart. A run the backend ended with an
//! error (a graceful shutdown after it was admitted, too) had its hold released whole by the
//! serving layer (a line's answer comes whole, so nothing was delivered): its rerun is metered
//! under its next attempt, and the line is billed once, for the run that answered.
//!
//! A runner runs only while its process holds the batch's lease (`crate::lease`); a process
//! taking over a dead one's batch meets exactly the cases above (its own earlier attempts are
//! the dead process's).
//!
//! A finished line is never started again (`start_line` moves only pending lines), so each
//! `custom_id` is written once. Cancelling or expiring stops starting lines and withdraws the
//! lines still waiting for a place to run (their holds are released, and they fail as
//! `batch_expired` or `batch_cancelled`); lines already running finish and are billed and kept,
//! so the bill matches the partial output.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::{BatchLine, BatchRecord, LineEnd, LineState, ReservationState};
use tenancy::Principal;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{BatchError, Result};
use crate::lease::Lease;
use crate::{output, Endpoint, Inner, LineRequest};

/// Pending lines read at a time.
const PAGE: i64 = 64;
/// How often a running batch rereads its status (a cancel from another process).
const STATUS_EVERY: Duration = Duration::from_secs(2);

pub const INSUFFICIENT_QUOTA: &str = "insufficient_quota";
pub const BATCH_EXPIRED: &str = "batch_expired";
pub const BATCH_CANCELLED: &str = "batch_cancelled";

/// Why a batch's lines stopped being started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every line ran.
    Drained,
    /// The tenant's balance ran out: the rest fail as `insufficient_quota`.
    Quota,
    /// The window ended.
    Expired,
    /// Cancelled, or the batch left `in_progress`: reread it.
    Stopped,
    /// A line met a passing refusal (the server shutting down, a queue timeout, the model
    /// unavailable): it stays pending; try again shortly.
    Retry,
}

/// How long a batch waits before trying lines again after a passing refusal.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Refusals that say nothing about the line itself: it stays pending and runs again later.
fn passing(outcome: &crate::LineOutcome) -> bool {
    outcome.status_code == 503
        || matches!(
            outcome.error_code.as_deref(),
            Some("shutting_down" | "queue_timeout" | "model_unavailable" | "server_overloaded")
        )
}

/// Claims batch `id` and runs it from wherever it is to a final status (or until `stop`, the
/// batch is gone, its tenant was deleted, or the lease is lost); nothing when another process
/// holds it.
pub(crate) async fn run(inner: &Inner, id: &str, stop: CancellationToken) -> Result<()> {
    // A child: losing the lease stops this runner only.
    let stop = stop.child_token();
    let lease = Lease::claim(
        inner.store.clone(),
        id,
        &inner.owner,
        inner.config.lease,
        &stop,
    )
    .await?;
    let Some(lease) = lease else {
        tracing::debug!(batch = %id, "another process runs this batch");
        return Ok(());
    };
    let result = run_claimed(inner, id, &stop, &lease).await;
    lease.end().await;
    result
}

async fn run_claimed(
    inner: &Inner,
    id: &str,
    stop: &CancellationToken,
    lease: &Lease,
) -> Result<()> {
    loop {
        if lease.is_lost() {
            return Ok(());
        }
        let batch = match inner.store.batch_by_id(id).await {
            Ok(batch) => batch,
            Err(store::StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let now = chrono::Utc::now();
        match batch.status.as_str() {
            "validating" => {
                let from = ["validating"];
                inner
                    .store
                    .transition_batch(id, &from, "in_progress", now)
                    .await?;
            }
            "in_progress" => {
                let end = run_lines(inner, &batch, stop).await?;
                let (code, message, to) = match end {
                    End::Stopped => {
                        // Reread: a cancel moved it to `cancelling`. Stopped otherwise (its
                        // tenant is being deleted): the runner ends here.
                        match inner.store.batch_by_id(id).await {
                            Ok(b) if b.status == "in_progress" && stop.is_cancelled() => {
                                return Ok(())
                            }
                            Ok(_) => continue,
                            Err(_) => return Ok(()),
                        }
                    }
                    End::Retry => {
                        if stop.is_cancelled() {
                            return Ok(());
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                    End::Drained => (
                        "internal_error",
                        "This request could not be run.",
                        "finalizing",
                    ),
                    End::Quota => (
                        INSUFFICIENT_QUOTA,
                        "You exceeded your current quota while this batch ran: this request \
                         was not run. Top up your balance and submit the remaining requests \
                         again.",
                        "finalizing",
                    ),
                    End::Expired => (
                        BATCH_EXPIRED,
                        "This request could not be executed before the completion window \
                         expired.",
                        "expired",
                    ),
                };
                inner.store.fail_pending_lines(id, code, message).await?;
                if to == "expired" {
                    if finish(inner, &batch, &["in_progress"], "expired").await? {
                        return Ok(());
                    }
                    continue;
                }
                inner
                    .store
                    .transition_batch(id, &["in_progress"], "finalizing", now)
                    .await?;
            }
            "finalizing" => {
                if finish(inner, &batch, &["finalizing"], "completed").await? {
                    return Ok(());
                }
            }
            "cancelling" => {
                let message = "This request was not run: its batch was cancelled.";
                inner
                    .store
                    .fail_pending_lines(id, BATCH_CANCELLED, message)
                    .await?;
                if finish(inner, &batch, &["cancelling"], "cancelled").await? {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        }
    }
}

/// Writes the files and moves the batch from `from` to its final status `to`; whether it
/// moved (a cancel may have moved it meanwhile: the caller rereads it).
async fn finish(inner: &Inner, batch: &BatchRecord, from: &[&str], to: &str) -> Result<bool> {
    let (output, error) = output::write_files(inner, batch).await?;
    let done = inner
        .store
        .finish_batch(
            &batch.id,
            from,
            to,
            (output.as_deref(), error.as_deref()),
            None,
            chrono::Utc::now(),
        )
        .await?;
    match &done {
        Some(done) => {
            tracing::info!(batch = %batch.id, status = to, completed = done.completed, failed = done.failed, "batch finished")
        }
        None => {
            tracing::warn!(batch = %batch.id, "batch changed status while its files were written; rereading")
        }
    }
    Ok(done.is_some())
}

/// Starts the batch's pending lines, at most `concurrency` at once, until none is left, the
/// balance ran out, the window ended or it was stopped; then waits for the lines running.
async fn run_lines(inner: &Inner, batch: &BatchRecord, stop: &CancellationToken) -> Result<End> {
    let left = (batch.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + left;
    let mut pace = Pace::new(inner.config.concurrency);
    let slots = Arc::new(Semaphore::new(pace.permits));
    pace.report(inner, batch, &slots).await;
    let mut ticker = tokio::time::interval(STATUS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let quota = Arc::new(AtomicBool::new(false));
    let retry = Arc::new(AtomicBool::new(false));
    // Lines still waiting for a place to run are given up when the window ends or the batch
    // is cancelled, so its end does not wait behind interactive work.
    let withdraw = CancellationToken::new();
    let batch = Arc::new(batch.clone());
    let endpoint = Endpoint::parse(&batch.endpoint)
        .ok_or_else(|| BatchError::Internal(format!("unknown endpoint '{}'", batch.endpoint)))?;
    let mut tasks = JoinSet::new();
    let mut after = -1;
    let end = 'lines: loop {
        let lines = inner.store.pending_lines(&batch.id, after, PAGE).await?;
        if lines.is_empty() {
            break End::Drained;
        }
        for line in lines {
            after = line.line_no;
            let permit = loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break 'lines End::Stopped,
                    () = tokio::time::sleep_until(deadline) => break 'lines End::Expired,
                    _ = ticker.tick() => {
                        // A cancel from another process; the backlog for the deadline.
                        let now = inner.store.batch_by_id(&batch.id).await?;
                        if now.status != "in_progress" {
                            break 'lines End::Stopped;
                        }
                        pace.report(inner, &now, &slots).await;
                    }
                    permit = slots.clone().acquire_owned() => {
                        break permit.map_err(|e| BatchError::Internal(e.to_string()))?;
                    }
                }
            };
            if quota.load(Ordering::SeqCst) {
                break 'lines End::Quota;
            }
            if retry.load(Ordering::SeqCst) {
                break 'lines End::Retry;
            }
            while let Some(done) = tasks.try_join_next() {
                log_line_task(&batch.id, done);
            }
            let job = Job {
                batch: batch.clone(),
                endpoint,
                quota: quota.clone(),
                retry: retry.clone(),
                withdraw: withdraw.clone(),
            };
            let executor = inner_parts(inner);
            tasks.spawn(async move {
                let result = job.run_line(&executor, line).await;
                drop(permit);
                result
            });
        }
    };
    // The window ended, or the batch left `in_progress` (a cancel here cancels `stop` too; a
    // shutdown or a lost lease leaves the status and its lines to whoever runs it next).
    let withdrawing = match end {
        End::Expired => true,
        End::Stopped => inner
            .store
            .batch_by_id(&batch.id)
            .await
            .is_ok_and(|now| now.status != "in_progress"),
        End::Drained | End::Quota | End::Retry => false,
    };
    if withdrawing {
        withdraw.cancel();
    }
    while let Some(done) = tasks.join_next().await {
        log_line_task(&batch.id, done);
    }
    // Its lines are no longer this runner's to pace (done, or run again after a retry).
    pace.done(inner, &batch).await;
    if end == End::Drained && quota.load(Ordering::SeqCst) {
        return Ok(End::Quota);
    }
    if end == End::Drained && retry.load(Ordering::SeqCst) {
        return Ok(End::Retry);
    }
    Ok(end)
}

/// How many lines a batch keeps in flight: [`crate::BatchConfig::concurrency`] at least, and
/// every slot the deployment serving its model has, as it answers the batch's backlog reports
/// (so replicas it adds to meet the batch's deadline get lines at once).
struct Pace {
    floor: usize,
    /// The semaphore's permits, held and free.
    permits: usize,
}

impl Pace {
    fn new(concurrency: usize) -> Self {
        let floor = concurrency.max(1);
        Self {
            floor,
            permits: floor,
        }
    }

    /// Reports `batch`'s remaining lines and deadline, and resizes `slots` to the answer.
    async fn report(&mut self, inner: &Inner, batch: &BatchRecord, slots: &Semaphore) {
        let Some(model) = batch.model.as_deref() else {
            return;
        };
        let left = usize::try_from(batch.total - batch.completed - batch.failed).unwrap_or(0);
        let deadline = std::time::SystemTime::from(batch.expires_at);
        let answer = inner
            .executor
            .backlog(model, &batch.id, left, deadline)
            .await;
        let Some(want) = answer.map(|n| n.max(self.floor)) else {
            return;
        };
        if want > self.permits {
            slots.add_permits(want - self.permits);
            self.permits = want;
        } else if want < self.permits {
            // Only free permits can go; the rest go as their lines end and later reports ask.
            self.permits -= slots.forget_permits(self.permits - want);
        }
    }

    /// The runner stops starting lines: its backlog is withdrawn.
    async fn done(&self, inner: &Inner, batch: &BatchRecord) {
        if let Some(model) = batch.model.as_deref() {
            let deadline = std::time::SystemTime::from(batch.expires_at);
            inner.executor.backlog(model, &batch.id, 0, deadline).await;
        }
    }
}

fn log_line_task(batch_id: &str, done: std::result::Result<Result<()>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(batch = %batch_id, error = %e, "a batch line could not be recorded; it runs again when the batch resumes")
        }
        Err(e) => tracing::error!(batch = %batch_id, error = %e, "a batch line's task failed"),
    }
}

/// What a line's task needs of the batches service.
struct Parts {
    store: Arc<dyn store::Store>,
    tenancy: tenancy::Tenancy,
    executor: Arc<dyn crate::Executor>,
}

fn inner_parts(inner: &Inner) -> Parts {
    Parts {
        store: inner.store.clone(),
        tenancy: inner.tenancy.clone(),
        executor: inner.executor.clone(),
    }
}

struct Job {
    batch: Arc<BatchRecord>,
    endpoint: Endpoint,
    quota: Arc<AtomicBool>,
    retry: Arc<AtomicBool>,
    withdraw: CancellationToken,
}

impl Job {
    fn request_id(&self, line_no: i64, attempt: i64) -> String {
        format!(
            "{}-{}-{line_no}-{attempt}",
            self.endpoint.id_prefix(),
            self.batch.id
        )
    }

    /// Runs one line (see the module docs for what an earlier attempt means) and records it.
    async fn run_line(&self, parts: &Parts, line: BatchLine) -> Result<()> {
        let batch_id = &self.batch.id;
        let Some(attempt) = parts.store.start_line(batch_id, line.line_no).await? else {
            return Ok(());
        };
        let (request_id, metered) = self.billing_of(parts, line.line_no, attempt).await?;
        let principal = match self.principal(parts).await {
            Ok(principal) => principal,
            Err(message) => {
                return self
                    .not_run(parts, &line, "permission_denied", &message)
                    .await;
            }
        };
        let Some(body) = line.body.as_deref() else {
            return Ok(());
        };
        let outcome = parts
            .executor
            .execute(LineRequest {
                payer: metered.then_some(&principal),
                endpoint: self.endpoint,
                body,
                request_id: &request_id,
                withdraw: &self.withdraw,
            })
            .await;
        if outcome.is_withdrawn() {
            // Still pending: the batch's end fails it with its reason.
            return Ok(());
        }
        if passing(&outcome) {
            tracing::info!(batch = %batch_id, line = line.line_no, code = ?outcome.error_code, "a batch line was refused for now; it runs again");
            self.retry.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if outcome.error_code.as_deref() == Some(INSUFFICIENT_QUOTA) {
            self.quota.store(true, Ordering::SeqCst);
            let message = outcome.body["error"]["message"]
                .as_str()
                .unwrap_or("You exceeded your current quota.")
                .to_owned();
            return self
                .not_run(parts, &line, INSUFFICIENT_QUOTA, &message)
                .await;
        }
        let result = output::ran(batch_id, &line, &request_id, &outcome);
        let state = if outcome.status_code == 200 {
            LineState::Done
        } else {
            LineState::Failed
        };
        let end = LineEnd {
            state,
            result: Some(&result),
            error_code: None,
            error_message: None,
        };
        parts
            .store
            .finish_line(batch_id, line.line_no, &end)
            .await?;
        Ok(())
    }

    /// The request id this attempt runs under and whether it is metered: an earlier attempt
    /// that was settled keeps its charge (this one runs unmetered under its id); one still
    /// open (its process died) is released.
    async fn billing_of(
        &self,
        parts: &Parts,
        line_no: i64,
        attempt: i64,
    ) -> Result<(String, bool)> {
        let ledger = &parts.tenancy.ledger;
        for earlier in (1..attempt).rev() {
            let id = self.request_id(line_no, earlier);
            match ledger.reservation(&id).await {
                Ok(r) if r.state == ReservationState::Settled => return Ok((id, false)),
                Ok(r) if r.state == ReservationState::Open => {
                    if let Err(e) = ledger.cancel(&id).await {
                        tracing::warn!(id = %id, error = %e, "could not release an interrupted batch line's hold");
                    }
                }
                _ => {}
            }
        }
        Ok((self.request_id(line_no, attempt), true))
    }

    /// The batch's key and tenant as they are now.
    async fn principal(&self, parts: &Parts) -> std::result::Result<Principal, String> {
        let directory = &parts.tenancy.directory;
        let tenant_id = &self.batch.tenant_id;
        let key_id = self.batch.key_id.as_deref().unwrap_or_default();
        let refused = |what: &str| format!("This request was not run: {what}.");
        let tenant = directory
            .active_tenant(tenant_id)
            .await
            .map_err(|_| refused("the batch's tenant is gone"))?;
        let key = directory
            .key_of(tenant_id, key_id)
            .await
            .map_err(|_| refused("the key that created the batch is gone"))?;
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(refused(
                "the key that created the batch was revoked or expired",
            ));
        }
        if tenant.disabled {
            return Err(refused("the tenant is disabled"));
        }
        Ok(Principal { key, tenant })
    }

    async fn not_run(
        &self,
        parts: &Parts,
        line: &BatchLine,
        code: &str,
        message: &str,
    ) -> Result<()> {
        let end = LineEnd {
            state: LineState::Failed,
            result: None,
            error_code: Some(code),
            error_message: Some(message),
        };
        parts
            .store
            .finish_line(&self.batch.id, line.line_no, &end)
            .await?;
        Ok(())
    }
}
