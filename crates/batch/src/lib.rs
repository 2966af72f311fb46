//! The Batch API's domain (`/v1/batches`), without HTTP: a tenant's batches of requests read
//! from a JSONL file of the Files API, validated up front ([`input`]), run line by line
//! through the one serving path (admission, batch price, metering into the ledger) at batch
//! priority, a bounded number at a time ([`runner`]), and finalized into output and error
//! files in OpenAI's JSONL shape ([`output`]).
//!
//! Statuses: `validating → in_progress → finalizing → completed | expired`, `failed` (no line
//! could run), `cancelling → cancelled`. Everything is in the database (`store::BatchStore`):
//! each line's state, attempt and result, so a restart resumes unfinished batches
//! ([`Batches::resume`]) without running or billing a finished line again (see `runner` for
//! the order of the writes). Processes sharing one database run each batch in one of them at
//! a time: the holder of its lease (`lease`); a dead process's batches are taken over by the
//! others' takeover loops ([`Batches::spawn_takeover`]) once its leases lapse.
//!
//! Executing a line is the [`Executor`]'s job: the gateway implements it with the same parsers
//! and serving call as its interactive routes, so this crate knows neither HTTP nor wire
//! formats of the requests.

mod error;
pub mod input;
mod lease;
pub mod output;
mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SubsecRound;
use files::Files;
use store::{BatchCreate, BatchPage, BatchRecord, Store};
use tenancy::{Principal, Tenancy};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{BatchError, Result};

/// The store's batch records, for the wire layer.
pub mod store_types {
    pub use store::{BatchLine, BatchPage, BatchRecord, Timestamp};
}

/// The one completion window OpenAI defines.
pub const COMPLETION_WINDOW: &str = "24h";

/// The default of [`BatchConfig::max_enqueued_tokens`]: 20 M estimated tokens per tenant
/// (a full batch of 50,000 requests of about 1.6 KB each).
pub const DEFAULT_MAX_ENQUEUED_TOKENS: u64 = 20_000_000;

/// Limits and policy, from the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// The longest a batch may run before it expires (`completion_window` is `24h`; a shorter
    /// maximum, `--batch-window-max`, cuts it, so tests can expire a batch).
    pub window_max: Duration,
    /// Lines of one batch running at once, at least; more when the deployment serving its
    /// model has more slots (it says so as the batch reports its backlog, see
    /// [`Executor::backlog`]), so replicas added for the batch's deadline get work.
    pub concurrency: usize,
    /// Most requests in one batch (OpenAI's: 50,000).
    pub max_lines: usize,
    /// Largest input file (OpenAI's: 200 MB).
    pub max_input_bytes: u64,
    /// How long a process's claim on a batch lasts unless renewed (it is renewed every third
    /// of it while the batch runs): after a process dies, another one takes its batches over
    /// within about this long.
    pub lease: Duration,
    /// Most estimated tokens one tenant's unfinished batches may hold in lines not yet run
    /// (`--batch-max-enqueued-tokens`); a batch that would pass it is refused at creation.
    /// `None`: no limit.
    pub max_enqueued_tokens: Option<u64>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            window_max: Duration::from_secs(24 * 3600),
            concurrency: 4,
            max_lines: 50_000,
            max_input_bytes: 200 << 20,
            lease: Duration::from_secs(30),
            max_enqueued_tokens: Some(DEFAULT_MAX_ENQUEUED_TOKENS),
        }
    }
}

/// The endpoints a batch may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    pub fn parse(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == url)
    }

    /// The prefix of a response id (and of its ledger request id).
    pub fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
            Endpoint::Embeddings => "embd",
        }
    }
}

/// One line to execute.
#[derive(Debug)]
pub struct LineRequest<'a> {
    /// Who pays: `None` runs it unmetered (a line whose earlier run was billed but whose
    /// result was lost in a crash).
    pub payer: Option<&'a Principal>,
    pub endpoint: Endpoint,
    /// The request body, JSON.
    pub body: &'a str,
    /// The response id, also the ledger request id when metered.
    pub request_id: &'a str,
    /// Fires when the batch may no longer start the line (its window ended, or it was
    /// cancelled). A line still waiting for a place to run then gives its place up (nothing
    /// of it is billed) and the executor answers [`LineOutcome::withdrawn`]; a line already
    /// running is finished.
    pub withdraw: &'a CancellationToken,
}

/// What a line's request answered: a status and a JSON body, as the interactive route would.
#[derive(Debug, Clone, PartialEq)]
pub struct LineOutcome {
    pub status_code: u16,
    pub body: serde_json::Value,
    /// The error's code when it failed (`insufficient_quota`, …).
    pub error_code: Option<String>,
}

/// The error code of [`LineOutcome::withdrawn`].
const WITHDRAWN: &str = "withdrawn";

impl LineOutcome {
    /// A line given up before it ran ([`LineRequest::withdraw`]): it stays pending, and its
    /// batch's end fails it with the reason (`batch_expired`, `batch_cancelled`).
    pub fn withdrawn() -> Self {
        Self {
            status_code: 499,
            body: serde_json::Value::Null,
            error_code: Some(WITHDRAWN.to_owned()),
        }
    }

    pub fn is_withdrawn(&self) -> bool {
        self.error_code.as_deref() == Some(WITHDRAWN)
    }
}

/// Runs one line through the serving path at batch priority (the gateway's).
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(&self, line: LineRequest<'_>) -> LineOutcome;

    /// Checks a line's body up front, at creation, with the endpoint's own parser: the
    /// message of why it cannot run (the line goes to the error file and the batch runs the
    /// others), or `Ok` when it should be run. By default every body is left to `execute`.
    fn check(&self, _endpoint: Endpoint, _body: &str) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Batch `batch` has `lines` left on `model`, to finish by `deadline` (0: it is done):
    /// what serves the model may scale out to meet the deadline. Returns how many lines the
    /// batch may keep in flight there (every slot it has), or `None` to keep
    /// [`BatchConfig::concurrency`]. Nothing is told by default.
    async fn backlog(
        &self,
        _model: &str,
        _batch: &str,
        _lines: usize,
        _deadline: std::time::SystemTime,
    ) -> Option<usize> {
        None
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    pub input_file_id: String,
    pub endpoint: Endpoint,
    pub completion_window: String,
    /// `metadata` as JSON text (checked by the wire layer).
    pub metadata: Option<String>,
}

/// The Batch API. Cheap to clone.
#[derive(Clone)]
pub struct Batches {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub files: Files,
    pub tenancy: Tenancy,
    pub executor: Arc<dyn Executor>,
    pub config: BatchConfig,
    /// Runners in this process, by batch id: cancelled to stop one (cancel, tenant deleted).
    pub running: Mutex<HashMap<String, Running>>,
    /// This process's name on the batches it holds a lease on (`lease_owner`).
    pub owner: String,
    /// This process's runners, awaited at shutdown; closed once it began (no runner starts).
    pub runners: TaskTracker,
}

#[derive(Clone)]
pub(crate) struct Running {
    pub tenant_id: String,
    pub stop: CancellationToken,
}

impl Batches {
    pub fn new(
        store: Arc<dyn Store>,
        files: Files,
        tenancy: Tenancy,
        executor: Arc<dyn Executor>,
        config: BatchConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                files,
                tenancy,
                executor,
                config,
                running: Mutex::new(HashMap::new()),
                owner: format!(
                    "{}-{}-{}",
                    hostname(),
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ),
                runners: TaskTracker::new(),
            }),
        }
    }

    /// This process's name on the batches it runs (their `lease_owner`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn config(&self) -> &BatchConfig {
        &self.inner.config
    }

    /// Checks the input file (the tenant's, purpose `batch`, within the size limit, JSONL with
    /// at least one request), records the batch with every line in one write, and starts it.
    pub async fn create(&self, principal: &Principal, new: NewBatch) -> Result<BatchRecord> {
        let tenant_id = principal.tenant.id.as_str();
        if new.completion_window != COMPLETION_WINDOW {
            return Err(BatchError::invalid(
                "completion_window",
                format!(
                    "Invalid 'completion_window': '{}'. Supported: '{COMPLETION_WINDOW}'.",
                    new.completion_window.chars().take(50).collect::<String>()
                ),
            ));
        }
        let (file, path) = self
            .inner
            .files
            .content(tenant_id, &new.input_file_id)
            .await?;
        if file.purpose != files::Purpose::Batch.as_str() {
            return Err(BatchError::invalid(
                "input_file_id",
                format!(
                    "The file '{}' has purpose '{}'; a batch's input file must be uploaded \
                     with purpose 'batch'.",
                    file.id, file.purpose
                ),
            ));
        }
        let limit = self.inner.config.max_input_bytes;
        if u64::try_from(file.bytes).unwrap_or(u64::MAX) > limit {
            return Err(BatchError::invalid(
                "input_file_id",
                format!(
                    "The input file has {} bytes, more than a batch may read ({limit} bytes). \
                     Split it into several batches.",
                    file.bytes
                ),
            ));
        }
        let (endpoint, max_lines) = (new.endpoint, self.inner.config.max_lines);
        let executor = self.inner.executor.clone();
        let input = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::new(std::fs::File::open(path)?);
            Ok::<_, std::io::Error>(
                input::read(reader, endpoint, max_lines)
                    .map(|input| input::check_bodies(input, endpoint, executor.as_ref())),
            )
        })
        .await
        .map_err(|e| BatchError::Internal(e.to_string()))?
        .map_err(|e| BatchError::Files(e.into()))??;
        let now = chrono::Utc::now().trunc_subsecs(6);
        let window = chrono::TimeDelta::from_std(self.inner.config.window_max)
            .unwrap_or(chrono::TimeDelta::hours(24))
            .min(chrono::TimeDelta::hours(24));
        let total = input.lines.len() as i64;
        let mut record = BatchRecord {
            id: format!("batch_{}", uuid::Uuid::new_v4().simple()),
            tenant_id: tenant_id.to_owned(),
            key_id: Some(principal.key.id.clone()),
            endpoint: endpoint.as_str().to_owned(),
            model: input.model.clone(),
            input_file_id: file.id,
            completion_window: new.completion_window,
            status: "validating".to_owned(),
            output_file_id: None,
            error_file_id: None,
            errors: None,
            metadata: new.metadata,
            total,
            completed: 0,
            failed: input.refused,
            created_at: now,
            in_progress_at: None,
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            expires_at: now + window,
        };
        if input.refused == total {
            // Nothing can run: failed at validation, with the lines' errors (OpenAI's shape).
            record.status = "failed".to_owned();
            record.failed_at = Some(now);
            record.errors = Some(output::validation_errors(&input.lines));
        }
        let limit = self
            .inner
            .config
            .max_enqueued_tokens
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        // Created claimed by this process, whose runner renews the claim at once.
        let lease_until = chrono::Utc::now()
            + chrono::TimeDelta::from_std(self.inner.config.lease)
                .unwrap_or(chrono::TimeDelta::seconds(30));
        let created = self
            .inner
            .store
            .create_batch(
                &record,
                &input.lines,
                limit,
                Some((&self.inner.owner, lease_until)),
            )
            .await?;
        if let BatchCreate::OverLimit { enqueued, limit } = created {
            let adding = input
                .lines
                .iter()
                .filter(|l| l.state == store::LineState::Pending)
                .fold(0i64, |sum, l| sum.saturating_add(l.est_tokens));
            return Err(BatchError::TokenLimit {
                enqueued,
                adding,
                limit,
            });
        }
        tracing::info!(batch = %record.id, tenant = %tenant_id, total, refused = input.refused, "batch created");
        if record.status == "validating" {
            self.spawn(&record);
        }
        Ok(record)
    }

    /// The tenant's batch `id`.
    pub async fn get(&self, tenant_id: &str, id: &str) -> Result<BatchRecord> {
        Ok(self.inner.store.batch(tenant_id, id).await?)
    }

    /// A page of the tenant's batches, newest first.
    pub async fn list(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<BatchPage> {
        if !(1..=100).contains(&limit) {
            return Err(BatchError::invalid(
                "limit",
                format!("Invalid 'limit': {limit}; expected 1 to 100."),
            ));
        }
        self.inner
            .store
            .batches(tenant_id, after, i64::from(limit))
            .await
            .map_err(|e| match BatchError::from(e) {
                BatchError::NotFound(id) => BatchError::invalid(
                    "after",
                    format!("Invalid 'after': '{id}' is not one of your batches."),
                ),
                other => other,
            })
    }

    /// Cancels the tenant's batch `id`: `cancelling` at once, lines not started do not run,
    /// lines running finish (and are billed); then `cancelled` with partial results. A batch
    /// already finished is a conflict; one already cancelling is returned as it is.
    pub async fn cancel(&self, tenant_id: &str, id: &str) -> Result<BatchRecord> {
        let batch = self.get(tenant_id, id).await?;
        if batch.status == "cancelling" {
            return Ok(batch);
        }
        let now = chrono::Utc::now();
        let from = ["validating", "in_progress"];
        let Some(batch) = self
            .inner
            .store
            .transition_batch(id, &from, "cancelling", now)
            .await?
        else {
            let batch = self.get(tenant_id, id).await?;
            return Err(BatchError::Conflict(format!(
                "Cannot cancel a batch with status '{}'.",
                batch.status
            )));
        };
        let running = self.running(id);
        match running {
            Some(running) => running.stop.cancel(),
            // Not running here: the process holding it sees the status within seconds; if
            // none does (its runner ended), this one claims it and finishes it.
            None => {
                self.spawn(&batch);
            }
        }
        tracing::info!(batch = %id, "batch cancelling");
        Ok(batch)
    }

    /// Starts a runner for every unfinished batch no process holds (at start: a restart
    /// resumes them; a batch whose process died resumes once its lease lapsed); how many.
    /// Each runner first claims its batch, so a batch another process took meanwhile is left
    /// to it.
    pub async fn resume(&self) -> Result<usize> {
        let batches = self
            .inner
            .store
            .unleased_batches(chrono::Utc::now())
            .await?;
        let mut started = 0;
        for batch in &batches {
            if self.spawn(batch) {
                tracing::info!(batch = %batch.id, status = %batch.status, done = batch.completed + batch.failed, total = batch.total, "resuming batch");
                started += 1;
            }
        }
        Ok(started)
    }

    /// Spawns the takeover loop: every half lease (at most 5 s), batches no live lease holds (their
    /// process died, or ended its runner) are resumed here.
    pub fn spawn_takeover(&self) -> tokio::task::JoinHandle<()> {
        let batches = self.clone();
        tokio::spawn(async move {
            // At most 5 s: a batch whose process gave its lease up at shutdown is taken
            // over within that, however long leases are.
            let every = (batches.inner.config.lease / 2)
                .min(Duration::from_secs(5))
                .max(Duration::from_millis(200));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if batches.inner.runners.is_closed() {
                    return;
                }
                if let Err(e) = batches.resume().await {
                    tracing::warn!(error = %e, "could not look for batches to take over");
                }
            }
        })
    }

    /// Stops every runner of this process (a shutdown): no line starts after this, lines
    /// running end as the serving layer ends them (an interrupted line runs again, unbilled,
    /// wherever the batch goes on), and no runner starts here any more. Each runner gives its
    /// batch's lease up as it ends, so another process takes the batch over at once instead
    /// of after the lease lapsed. Resolves once every runner ended.
    pub async fn shutdown(&self) {
        self.inner.runners.close();
        let stopped: Vec<String> = {
            let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .iter()
                .map(|(id, r)| {
                    r.stop.cancel();
                    id.clone()
                })
                .collect()
        };
        if !stopped.is_empty() {
            tracing::info!(batches = ?stopped, "shutting down: stopping batch runners and giving up their leases");
        }
        self.inner.runners.wait().await;
    }

    /// Stops this process's runners of `tenant_id`'s batches (the tenant is being deleted;
    /// its rows go with the removal). Their running lines are ended by the serving layer.
    pub fn end_tenant(&self, tenant_id: &str) -> Vec<String> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .filter(|(_, r)| r.tenant_id == tenant_id)
            .map(|(id, r)| {
                r.stop.cancel();
                id.clone()
            })
            .collect()
    }

    fn running(&self, id: &str) -> Option<Running> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(id).cloned()
    }

    /// Starts the runner of `batch` unless one runs here already; whether it started one.
    /// The runner claims the batch first and ends at once if another process holds it.
    fn spawn(&self, batch: &BatchRecord) -> bool {
        let stop = CancellationToken::new();
        {
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            // Shutting down: the batch is left to another process (or the next start).
            if self.inner.runners.is_closed() || running.contains_key(&batch.id) {
                return false;
            }
            running.insert(
                batch.id.clone(),
                Running {
                    tenant_id: batch.tenant_id.clone(),
                    stop: stop.clone(),
                },
            );
        }
        let inner = self.inner.clone();
        let id = batch.id.clone();
        self.inner.runners.spawn(async move {
            if let Err(e) = runner::run(&inner, &id, stop).await {
                tracing::error!(batch = %id, error = %e, "batch runner stopped; it resumes at the next start");
            }
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            running.remove(&id);
        });
        true
    }
}

/// This machine's name, for the owner names of leases (logs only; uniqueness comes from the
/// process id and a random part).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flywheel".to_owned())
}
