//! OpenAI's fine-tuning API (`/v1/fine_tuning/jobs`) over the trainer, without HTTP: a
//! tenant's jobs on a served base model, trained from files of the Files API, durable in the
//! store (`store::FineTuningStore`), billed per trained token, and served as a private model
//! when done.
//!
//! Statuses: `validating_files → queued → running → succeeded | failed | cancelled`.
//! [`FineTuning::create`] checks the request (the base model, the files, the hyperparameters,
//! the tenant's count of unfinished jobs) and reserves the job's worst case in the ledger (the
//! training file's bytes plus a template allowance per line, × epochs: no token is shorter than
//! a byte), so a tenant who cannot pay gets a 402 before anything runs. The [`runner`] then
//! validates the file line by line with the base model's own template and tokenizer
//! (`invalid_training_file` naming the line), resizes the reservation to the exact
//! training-file tokens × epochs, waits for a training turn (`concurrency` jobs at a time in
//! this process, each on `threads` threads, pausing between steps while serving has
//! interactive work: training is the node's lowest priority), trains with checkpoints, and
//! publishes the adapter through [`Models::publish`] under `ft:BASE:SUFFIX:JOBID`.
//!
//! **Billing.** The ledger model is `ft/<base>` (`tenancy::fine_tune_model`): a trained token
//! is a prompt token at that price-book entry's input rate. A run's reservation is
//! `{job}-{attempt}`; at every checkpoint its progress is persisted as the tokens trained since
//! the run began, so a run cut short (kill -9) is closed from its last checkpoint, by this
//! process when the job resumes or by the ledger's lease recovery, and the resumed run
//! reserves what is left. A job is charged each trained token once: a cancelled job pays for
//! the steps that ran, a failed one for nothing more than its checkpoints.

mod error;
mod runner;
mod stored;
pub mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::SubsecRound;
use files::Files;
use store::{
    FineTuningCheckpointPage, FineTuningEventPage, FineTuningJob, FineTuningJobPage, Store,
};
use tenancy::{Principal, ReserveRequest, Tenancy};
use tokio::sync::Semaphore;

pub use error::{JobError, Result};
pub use stored::ADAPTER_FILE;
pub use validate::Hyperparameters;

/// The store's records, for the wire layer.
pub mod store_types {
    pub use store::{
        FineTuningCheckpoint, FineTuningCheckpointPage, FineTuningEvent, FineTuningEventPage,
        FineTuningJob, FineTuningJobPage, Timestamp,
    };
}

/// Limits and policy, from the server's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsConfig {
    /// Where jobs keep their data, checkpoints and adapters (`DATA_DIR/fine_tuning`).
    pub data_dir: PathBuf,
    /// Largest training file (`--fine-tuning-max-file-bytes`).
    pub max_file_bytes: u64,
    /// Most epochs a job may ask for (`--fine-tuning-max-epochs`).
    pub max_epochs: u32,
    /// Unfinished jobs one tenant may have (`--fine-tuning-max-jobs`).
    pub max_jobs_per_tenant: u32,
    /// Jobs training at once in this process.
    pub concurrency: usize,
    /// Threads of one training (`--fine-tuning-threads`).
    pub threads: usize,
    /// Fewest examples a training file must have.
    pub min_examples: usize,
    /// Most tokens of one example (also bounded by the base model's context).
    pub max_example_tokens: usize,
    /// Save a checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// The learning rate `learning_rate_multiplier` scales.
    pub base_learning_rate: f64,
    pub lora: crate::LoraConfig,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("fine_tuning"),
            max_file_bytes: 50 << 20,
            max_epochs: 10,
            max_jobs_per_tenant: 2,
            concurrency: 1,
            threads: 2,
            min_examples: 10,
            max_example_tokens: 1024,
            checkpoint_every: 10,
            base_learning_rate: 2e-3,
            lora: crate::LoraConfig::default(),
        }
    }
}

/// A served base model a job can train on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModel {
    /// Its model SPEC, as its deployment gives it (a fine-tune is served as
    /// `SPEC+lora:ADAPTER`).
    pub spec: String,
    /// The GGUF file the SPEC resolves to.
    pub path: PathBuf,
    /// Tokens per slot it is served with (an example must fit).
    pub context_length: u32,
}

/// A fine-tuned model to serve: private to its tenant, usable by keys that may use its base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `ft:BASE:SUFFIX:JOBID`.
    pub name: String,
    pub tenant_id: String,
    /// The base model's served name.
    pub base: String,
    /// The adapter's model SPEC: its hub revision (`hub:ORG/NAME@JOBID#adapter.gguf`), or the
    /// job directory's file where the hub commit failed.
    pub adapter: String,
}

/// What the jobs need of the serving side (the gateway implements it over the control plane
/// and the catalog), so this crate knows neither.
#[async_trait]
pub trait Models: Send + Sync + 'static {
    /// The served base model `name`, or why it cannot be fine-tuned here.
    fn base(&self, name: &str) -> std::result::Result<BaseModel, String>;
    /// Serves `model` (its base's deployment spec with the adapter), visible to its tenant only.
    async fn publish(&self, model: &Published) -> std::result::Result<(), String>;
    /// Stops serving the fine-tuned model `name` (its tenant is being deleted).
    async fn unpublish(&self, name: &str);
    /// Whether serving has interactive work waiting or running: training pauses meanwhile.
    fn busy(&self) -> bool;
}

/// What a client asks for (read strictly by the wire layer).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub hyperparameters: validate::RequestedHyperparameters,
    pub suffix: Option<String>,
    pub seed: Option<i64>,
    /// `metadata` as JSON text.
    pub metadata: Option<String>,
}

/// The fine-tuning API. Cheap to clone.
#[derive(Clone)]
pub struct FineTuning {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub files: Files,
    pub tenancy: Tenancy,
    pub models: Arc<dyn Models>,
    pub config: JobsConfig,
    /// Training turns of this process.
    pub turns: Semaphore,
    /// Runners in this process, by job id.
    pub running: Mutex<HashMap<String, Running>>,
}

#[derive(Clone)]
pub(crate) struct Running {
    pub tenant_id: String,
    /// Set to stop the runner (cancel, tenant deleted, shutdown); training stops between steps.
    pub stop: Arc<AtomicBool>,
    pub wake: Arc<tokio::sync::Notify>,
}

/// The ledger request id of a job's run.
pub(crate) fn ledger_id(job: &FineTuningJob) -> String {
    format!("{}-{}", job.id, job.attempt)
}

impl FineTuning {
    pub fn new(
        store: Arc<dyn Store>,
        files: Files,
        tenancy: Tenancy,
        models: Arc<dyn Models>,
        config: JobsConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                files,
                tenancy,
                models,
                turns: Semaphore::new(config.concurrency.max(1)),
                config,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    /// Checks the request, reserves the job's worst case and records it as
    /// `validating_files`; its runner starts at once.
    pub async fn create(&self, principal: &Principal, new: NewJob) -> Result<FineTuningJob> {
        let tenant_id = principal.tenant.id.as_str();
        let config = &self.inner.config;
        principal.require_model(&new.model).map_err(|_| {
            JobError::Model(format!(
                "The model '{}' does not exist or this API key may not use it.",
                new.model
            ))
        })?;
        let base = self
            .inner
            .models
            .base(&new.model)
            .map_err(JobError::Model)?;
        let hyper = new.hyperparameters.resolve(config)?;
        let suffix = validate::suffix(new.suffix.as_deref())?;
        let training = self
            .input_file(tenant_id, &new.training_file, "training_file")
            .await?;
        if let Some(v) = &new.validation_file {
            self.input_file(tenant_id, v, "validation_file").await?;
        }
        let id = format!("ftjob-{}", uuid::Uuid::new_v4().simple());
        validate::model_name(&new.model, suffix.as_deref(), &id)?;
        let now = chrono::Utc::now().trunc_subsecs(6);
        let job = FineTuningJob {
            id,
            tenant_id: tenant_id.to_owned(),
            key_id: Some(principal.key.id.clone()),
            model: new.model.clone(),
            suffix,
            fine_tuned_model: None,
            status: "validating_files".to_owned(),
            training_file: new.training_file,
            validation_file: new.validation_file,
            hyperparameters: hyper.to_json(),
            seed: new
                .seed
                .unwrap_or_else(|| i64::from(rand::random::<u32>() >> 1)),
            error: None,
            total_tokens: None,
            trained_tokens: None,
            attempt: 1,
            billed_tokens: 0,
            created_at: now,
            finished_at: None,
            estimated_finish: None,
            metadata: new.metadata,
            hub_repo: None,
        };
        // The worst case before tokenizing: a token is at least a byte; the template adds at
        // most `TEMPLATE_TOKENS` per example.
        let bound = validate::token_bound(training.bytes, training.lines, hyper.n_epochs);
        let reserve = ReserveRequest {
            request_id: ledger_id(&job),
            tenant_id: tenant_id.to_owned(),
            key_id: Some(principal.key.id.clone()),
            served_model: tenancy::fine_tune_model(&job.model),
            prompt_tokens: bound,
            max_completion_tokens: 0,
        };
        self.inner.tenancy.ledger.reserve(&reserve).await?;
        let stored = self
            .inner
            .store
            .create_fine_tuning_job(&job, i64::from(config.max_jobs_per_tenant))
            .await;
        match stored {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                if let Err(e) = self.inner.tenancy.ledger.cancel(&reserve.request_id).await {
                    tracing::error!(job = %job.id, error = %e, "could not release a refused job's hold; lease recovery will");
                }
                stored?;
                return Err(JobError::TooManyJobs(format!(
                    "You have {} unfinished fine-tuning jobs, the most this server allows; \
                     wait for one to end or cancel one.",
                    config.max_jobs_per_tenant
                )));
            }
        }
        let _ = base;
        self.event(
            &job.id,
            "info",
            &format!("Created fine-tuning job: {}", job.id),
            None,
        )
        .await;
        tracing::info!(job = %job.id, tenant = %tenant_id, model = %job.model, "fine-tuning job created");
        self.spawn(&job);
        Ok(job)
    }

    /// The tenant's file `id` for `param`: purpose `fine-tune`, within the size limit.
    async fn input_file(
        &self,
        tenant_id: &str,
        id: &str,
        param: &'static str,
    ) -> Result<validate::FileSize> {
        let (file, path) = self
            .inner
            .files
            .content(tenant_id, id)
            .await
            .map_err(|e| match e {
                files::FilesError::NotFound(_) => JobError::Invalid {
                    param,
                    message: format!("The file '{id}' does not exist or is not one of yours."),
                },
                other => JobError::Files(other),
            })?;
        if file.purpose != files::Purpose::FineTune.as_str() {
            return Err(JobError::invalid(
                param,
                format!(
                    "The file '{}' has purpose '{}'; upload fine-tuning data with purpose \
                     'fine-tune'.",
                    file.id, file.purpose
                ),
            ));
        }
        let limit = self.inner.config.max_file_bytes;
        let bytes = u64::try_from(file.bytes).unwrap_or(u64::MAX);
        if bytes > limit {
            return Err(JobError::invalid(
                param,
                format!(
                    "The file '{}' has {bytes} bytes; a fine-tuning file may have at most \
                     {limit} bytes.",
                    file.id
                ),
            ));
        }
        let lines = tokio::task::spawn_blocking(move || validate::count_lines(&path))
            .await
            .map_err(|e| JobError::Internal(e.to_string()))?
            .map_err(|e| JobError::Internal(format!("reading the file: {e}")))?;
        Ok(validate::FileSize { bytes, lines })
    }

    /// The tenant's job `id`.
    pub async fn get(&self, tenant_id: &str, id: &str) -> Result<FineTuningJob> {
        Ok(self.inner.store.fine_tuning_job(tenant_id, id).await?)
    }

    /// A page of the tenant's jobs, newest first.
    pub async fn list(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<FineTuningJobPage> {
        check_limit(limit)?;
        self.inner
            .store
            .fine_tuning_jobs(tenant_id, after, i64::from(limit))
            .await
            .map_err(|e| match JobError::from(e) {
                JobError::NotFound(id) => JobError::invalid(
                    "after",
                    format!("Invalid 'after': '{id}' is not one of your fine-tuning jobs."),
                ),
                other => other,
            })
    }

    /// A page of the events of the tenant's job, newest first; `after` is an event id.
    pub async fn events(
        &self,
        tenant_id: &str,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<FineTuningEventPage> {
        check_limit(limit)?;
        let job = self.get(tenant_id, id).await?;
        let before = after.map(|a| validate::event_seq(&job.id, a)).transpose()?;
        Ok(self
            .inner
            .store
            .fine_tuning_events(&job.id, before, i64::from(limit))
            .await?)
    }

    /// A page of the checkpoints of the tenant's job, newest first; `after` is a checkpoint id.
    pub async fn checkpoints(
        &self,
        tenant_id: &str,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<FineTuningCheckpointPage> {
        check_limit(limit)?;
        let job = self.get(tenant_id, id).await?;
        let before = after
            .map(|a| validate::checkpoint_step(&job.id, a))
            .transpose()?;
        Ok(self
            .inner
            .store
            .fine_tuning_checkpoints(&job.id, before, i64::from(limit))
            .await?)
    }

    /// Cancels the tenant's job: `cancelled` at once; a training run stops after its current
    /// step and is billed for the steps that ran. A job already ended is a conflict.
    pub async fn cancel(&self, tenant_id: &str, id: &str) -> Result<FineTuningJob> {
        let mut job = self.get(tenant_id, id).await?;
        let from = job.status.clone();
        if !store::fine_tuning::FINE_TUNING_ACTIVE.contains(&from.as_str()) {
            return Err(JobError::Conflict(format!(
                "Cannot cancel a fine-tuning job with status '{from}'."
            )));
        }
        job.status = "cancelled".to_owned();
        job.finished_at = Some(chrono::Utc::now().trunc_subsecs(6));
        job.estimated_finish = None;
        if !self
            .inner
            .store
            .update_fine_tuning_job(&job, &[&from])
            .await?
        {
            // It moved meanwhile: try again from where it is now.
            return Box::pin(self.cancel(tenant_id, id)).await;
        }
        self.event(&job.id, "info", "The job was cancelled.", None)
            .await;
        match self.running(id) {
            Some(running) => {
                running.stop.store(true, Ordering::Relaxed);
                running.wake.notify_one();
            }
            // No runner here (another process's, or none since a restart): close its hold
            // from its last checkpoint.
            None => runner::close_reservation(&self.inner, &job).await,
        }
        tracing::info!(job = %id, "fine-tuning job cancelled");
        Ok(job)
    }

    /// Starts a runner for every unfinished job (at start: a restart resumes them from their
    /// last checkpoint); how many.
    pub async fn resume(&self) -> Result<usize> {
        let jobs = self
            .inner
            .store
            .fine_tuning_jobs_in(&store::fine_tuning::FINE_TUNING_ACTIVE)
            .await?;
        for job in &jobs {
            tracing::info!(job = %job.id, status = %job.status, "resuming fine-tuning job");
            self.spawn(job);
        }
        Ok(jobs.len())
    }

    /// Every succeeded job's model, to serve at start.
    pub async fn published(&self) -> Result<Vec<Published>> {
        let jobs = self.inner.store.fine_tuning_jobs_in(&["succeeded"]).await?;
        Ok(jobs
            .into_iter()
            .filter_map(|job| {
                Some(Published {
                    name: job.fine_tuned_model.clone()?,
                    tenant_id: job.tenant_id.clone(),
                    base: job.model.clone(),
                    adapter: stored::served_adapter(&self.inner.config, &job),
                })
            })
            .collect())
    }

    /// Serves a finished job's model (again, at start).
    pub async fn publish(&self, model: &Published) -> std::result::Result<(), String> {
        self.inner.models.publish(model).await
    }

    /// Stops every runner of this process (a shutdown): trainings stop after their current
    /// step, their jobs stay `running` and resume from their last checkpoint at the next start.
    pub fn shutdown(&self) {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        for r in running.values() {
            r.stop.store(true, Ordering::Relaxed);
            r.wake.notify_one();
        }
    }

    /// Stops this process's runners of `tenant_id`'s jobs and stops serving its fine-tuned
    /// models (the tenant is being deleted; its rows go with the removal, its job directories
    /// with [`FineTuning::remove_files`]). Returns the tenant's job ids.
    pub async fn end_tenant(&self, tenant_id: &str) -> Result<Vec<String>> {
        {
            let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            for r in running.values().filter(|r| r.tenant_id == tenant_id) {
                r.stop.store(true, Ordering::Relaxed);
                r.wake.notify_one();
            }
        }
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .fine_tuning_jobs(tenant_id, after.as_deref(), 100)
                .await?;
            for job in &page.jobs {
                if let Some(name) = &job.fine_tuned_model {
                    self.inner.models.unpublish(name).await;
                }
                ids.push(job.id.clone());
            }
            match (page.has_more, page.jobs.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => break,
            }
        }
        Ok(ids)
    }

    /// Deletes the directories (data copies, checkpoints, adapters) of jobs `ids`.
    pub async fn remove_files(&self, ids: &[String]) {
        for id in ids {
            let dir = runner::job_dir(&self.inner.config, id);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(job = %id, error = %e, "could not delete a fine-tuning job's files");
                }
            }
        }
    }

    async fn event(&self, job_id: &str, level: &str, message: &str, data: Option<&str>) {
        runner::event(&self.inner, job_id, level, message, data).await;
    }

    fn running(&self, id: &str) -> Option<Running> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(id).cloned()
    }

    /// Starts the runner of `job` unless one runs here already.
    fn spawn(&self, job: &FineTuningJob) {
        let entry = Running {
            tenant_id: job.tenant_id.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(tokio::sync::Notify::new()),
        };
        {
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&job.id) {
                return;
            }
            running.insert(job.id.clone(), entry.clone());
        }
        let inner = self.inner.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            if let Err(e) = runner::run(&inner, &id, &entry).await {
                tracing::error!(job = %id, error = %e, "fine-tuning runner stopped; it resumes at the next start");
            }
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            running.remove(&id);
        });
    }
}

fn check_limit(limit: u32) -> Result<()> {
    if (1..=100).contains(&limit) {
        Ok(())
    } else {
        Err(JobError::invalid(
            "limit",
            format!("Invalid 'limit': {limit}; expected 1 to 100."),
        ))
    }
}
