//! Fine-tuning jobs' rows: a tenant's jobs, their events and checkpoints. Policy (ids,
//! validation, the state machine, billing) is the `finetune` crate's (`jobs`); the store keeps
//! rows and makes the transitions conditional in their statements: a job moves only from the
//! statuses named, and a tenant's count of unfinished jobs is checked in the transaction that
//! records a new one.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// The statuses of a job (OpenAI's).
pub const FINE_TUNING_STATUSES: [&str; 6] = [
    "validating_files",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
];

/// The statuses of a job that has not ended.
pub const FINE_TUNING_ACTIVE: [&str; 3] = ["validating_files", "queued", "running"];

/// One stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuningJob {
    /// `ftjob-…`, unique.
    pub id: String,
    pub tenant_id: String,
    /// The key that created it.
    pub key_id: Option<String>,
    /// The base model's served name.
    pub model: String,
    pub suffix: Option<String>,
    /// `ft:BASE:SUFFIX:JOBID` once it succeeded.
    pub fine_tuned_model: Option<String>,
    pub status: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    /// `{"n_epochs", "batch_size", "learning_rate_multiplier"}` as JSON text.
    pub hyperparameters: String,
    pub seed: i64,
    /// OpenAI's `{"code", "message", "param"}` as JSON text, once failed.
    pub error: Option<String>,
    /// Tokens of the training file × epochs, once validated.
    pub total_tokens: Option<i64>,
    /// Tokens trained, once it ended.
    pub trained_tokens: Option<i64>,
    /// The run whose ledger reservation is open (`{id}-{attempt}`).
    pub attempt: i64,
    /// Tokens charged by the reservations of earlier runs.
    pub billed_tokens: i64,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub estimated_finish: Option<Timestamp>,
    /// The client's `metadata`, as JSON text.
    pub metadata: Option<String>,
    /// `ORG/NAME` of the hub repository its adapter was committed to (the revision is tagged
    /// with the job's id), once it succeeded and the commit went in.
    pub hub_repo: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuningJobPage {
    pub jobs: Vec<FineTuningJob>,
    pub has_more: bool,
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuningEvent {
    /// 1, 2, … in the order they were recorded.
    pub seq: i64,
    pub created_at: Timestamp,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// The step's metrics as JSON text (`metrics` events).
    pub data: Option<String>,
}

/// A page of events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuningEventPage {
    pub events: Vec<FineTuningEvent>,
    pub has_more: bool,
}

/// One checkpoint of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuningCheckpoint {
    pub step: i64,
    pub created_at: Timestamp,
    /// JSON text: `{"step", "train_loss", "valid_loss", …}`.
    pub metrics: String,
}

/// A page of checkpoints, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuningCheckpointPage {
    pub checkpoints: Vec<FineTuningCheckpoint>,
    pub has_more: bool,
}

/// A tenant's fine-tuning jobs.
#[async_trait]
pub trait FineTuningStore: Send + Sync + 'static {
    /// Records `job` if its tenant has fewer than `max_active` unfinished jobs (`false`, and
    /// nothing written, otherwise). `NotFound` for an unknown or deleted tenant; a taken id is
    /// `Conflict`.
    async fn create_fine_tuning_job(&self, job: &FineTuningJob, max_active: i64) -> Result<bool>;
    /// The tenant's job `id` (`NotFound` for another tenant's).
    async fn fine_tuning_job(&self, tenant_id: &str, id: &str) -> Result<FineTuningJob>;
    /// Job `id`, whoever's.
    async fn fine_tuning_job_by_id(&self, id: &str) -> Result<FineTuningJob>;
    /// A page of the tenant's jobs, newest first, after the job `after` (which must be the
    /// tenant's: `NotFound` otherwise).
    async fn fine_tuning_jobs(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<FineTuningJobPage>;
    /// Every job whose status is one of `statuses`, oldest first.
    async fn fine_tuning_jobs_in(&self, statuses: &[&str]) -> Result<Vec<FineTuningJob>>;
    /// Writes every field of `job` but its id, tenant and creation time, if its stored status
    /// is one of `from`; whether it was.
    async fn update_fine_tuning_job(&self, job: &FineTuningJob, from: &[&str]) -> Result<bool>;
    /// Appends an event (numbered after the job's last); its number.
    async fn add_fine_tuning_event(
        &self,
        job_id: &str,
        level: &str,
        message: &str,
        data: Option<&str>,
        now: Timestamp,
    ) -> Result<i64>;
    /// Up to `limit` events of the job, newest first, older than event `before` if given.
    async fn fine_tuning_events(
        &self,
        job_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<FineTuningEventPage>;
    /// Records (or replaces) the checkpoint of `step`.
    async fn put_fine_tuning_checkpoint(
        &self,
        job_id: &str,
        checkpoint: &FineTuningCheckpoint,
    ) -> Result<()>;
    /// Up to `limit` checkpoints of the job, newest first, before step `before` if given.
    async fn fine_tuning_checkpoints(
        &self,
        job_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<FineTuningCheckpointPage>;
}
