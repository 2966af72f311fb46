//! One job's runner: validation, a training turn, training with checkpoints and progress
//! events, then the adapter published and the reservation settled.
//!
//! **Order of the writes.** A job's status moves only from the statuses its runner saw
//! (`update_fine_tuning_job(.., from)`), so a cancel between two writes wins: the runner finds
//! the job no longer where it left it and only closes its reservation. A run's reservation is
//! `{job}-{attempt}`; the attempt is counted in the job's row before a new reservation is
//! taken, and progress is persisted at each checkpoint (the trainer wrote it to disk first),
//! so a run cut short is billed up to its last checkpoint and the resumed run, which starts
//! from that checkpoint, reserves and is billed the rest.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::SubsecRound;
use engine::model::LoadedModel;
use store::{FineTuningCheckpoint, FineTuningJob, ReservationState, TokenUsage};
use tenancy::ReserveRequest;

use super::error::{JobError, Result};
use super::validate::{self, Hyperparameters};
use super::{ledger_id, stored, Inner, JobsConfig, Published, Running};
use crate::data::{self, Limits};
use crate::job::{self, JobSpec};
use crate::train::{Outcome, Progress, TrainConfig};
use crate::FinetuneError;

/// A job's directory under the data directory.
pub(crate) fn job_dir(config: &JobsConfig, id: &str) -> PathBuf {
    config.data_dir.join(id)
}

/// Where a job's adapter is written.
pub(crate) fn adapter_path(config: &JobsConfig, id: &str) -> PathBuf {
    job_dir(config, id).join("adapter.gguf")
}

fn now() -> store::Timestamp {
    chrono::Utc::now().trunc_subsecs(6)
}

/// Appends an event to a job; a failure is logged (events are the job's log, not its state).
pub(crate) async fn event(
    inner: &Inner,
    job_id: &str,
    level: &str,
    message: &str,
    data: Option<&str>,
) {
    if let Err(e) = inner
        .store
        .add_fine_tuning_event(job_id, level, message, data, now())
        .await
    {
        tracing::warn!(job = %job_id, error = %e, "could not record a fine-tuning event");
    }
}

/// Closes the job's open reservation from its persisted progress (its last checkpoint).
pub(crate) async fn close_reservation(inner: &Inner, job: &FineTuningJob) {
    let id = ledger_id(job);
    match inner.tenancy.ledger.reservation(&id).await {
        Ok(r) if r.state == ReservationState::Open => {
            if let Err(e) = inner.tenancy.ledger.settle_from_progress(&id).await {
                tracing::error!(job = %job.id, error = %e, "could not close a fine-tuning hold; lease recovery will");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(job = %job.id, error = %e, "fine-tuning hold not found"),
    }
}

/// Runs job `id` from wherever it is to a final status, or until it is stopped.
pub(crate) async fn run(inner: &Inner, id: &str, running: &Running) -> Result<()> {
    loop {
        if running.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let job = match inner.store.fine_tuning_job_by_id(id).await {
            Ok(job) => job,
            Err(store::StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match job.status.as_str() {
            "validating_files" => validate_job(inner, job).await?,
            "queued" | "running" => return train_job(inner, job, running).await,
            _ => return Ok(()),
        }
    }
}

/// Ends `job` as failed with OpenAI's error object, closing its reservation.
async fn fail(
    inner: &Inner,
    mut job: FineTuningJob,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Result<()> {
    let from = job.status.clone();
    job.status = "failed".to_owned();
    job.error =
        Some(serde_json::json!({"code": code, "message": message, "param": param}).to_string());
    job.finished_at = Some(now());
    job.estimated_finish = None;
    let moved = inner.store.update_fine_tuning_job(&job, &[&from]).await?;
    close_reservation(inner, &job).await;
    if moved {
        event(inner, &job.id, "error", message, None).await;
        tracing::info!(job = %job.id, code, "fine-tuning job failed");
    }
    Ok(())
}

fn hyperparameters(job: &FineTuningJob) -> Result<Hyperparameters> {
    Hyperparameters::from_json(&job.hyperparameters)
        .ok_or_else(|| JobError::Internal(format!("job {}: unreadable hyperparameters", job.id)))
}

fn limits(inner: &Inner, context: u32) -> Limits {
    Limits {
        min_examples: inner.config.min_examples,
        max_examples: Limits::default().max_examples,
        max_tokens: inner
            .config
            .max_example_tokens
            .min(usize::try_from(context).unwrap_or(usize::MAX)),
    }
}

/// Copies the job's files into its directory (the tenant may delete them meanwhile), checks
/// them line by line with the base model's tokenizer, sizes the reservation exactly and queues
/// the job.
async fn validate_job(inner: &Inner, mut job: FineTuningJob) -> Result<()> {
    let base = match inner.models.base(&job.model) {
        Ok(base) => base,
        Err(why) => return fail(inner, job, "invalid_model", &why, Some("model")).await,
    };
    let dir = job_dir(&inner.config, &job.id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| JobError::Internal(format!("{}: {e}", dir.display())))?;
    let files = [
        (
            Some(job.training_file.clone()),
            "training_file",
            dir.join("train.jsonl"),
        ),
        (
            job.validation_file.clone(),
            "validation_file",
            dir.join("valid.jsonl"),
        ),
    ];
    for (id, param, to) in &files {
        let Some(id) = id else { continue };
        let path = match inner.files.content(&job.tenant_id, id).await {
            Ok((_, path)) => path,
            Err(e) => {
                let message = format!("The {} '{id}' cannot be read: {e}", param.replace('_', " "));
                return fail(
                    inner,
                    job,
                    &format!("invalid_{param}"),
                    &message,
                    Some(param),
                )
                .await;
            }
        };
        tokio::fs::copy(&path, to)
            .await
            .map_err(|e| JobError::Internal(format!("copying {id}: {e}")))?;
    }
    let limits = limits(inner, base.context_length);
    let has_valid = job.validation_file.is_some();
    let (model_path, train, valid) = (base.path.clone(), files[0].2.clone(), files[1].2.clone());
    let checked = tokio::task::spawn_blocking(move || {
        check_files(
            &model_path,
            &train,
            has_valid.then_some(valid.as_path()),
            limits,
        )
    })
    .await
    .map_err(|e| JobError::Internal(e.to_string()))?;
    let tokens_per_epoch = match checked {
        Ok(n) => n,
        Err((param, message)) => {
            let code = if param == "model" {
                "invalid_model".to_owned()
            } else {
                format!("invalid_{param}")
            };
            return fail(inner, job, &code, &message, Some(param)).await;
        }
    };
    let epochs = hyperparameters(&job)?.n_epochs;
    let total = i64::try_from(tokens_per_epoch)
        .unwrap_or(i64::MAX)
        .saturating_mul(i64::from(epochs));
    job.total_tokens = Some(total);
    if let Err(message) = hold(inner, &mut job).await? {
        return fail(inner, job, "insufficient_quota", &message, None).await;
    }
    job.status = "queued".to_owned();
    if !inner
        .store
        .update_fine_tuning_job(&job, &["validating_files"])
        .await?
    {
        // Cancelled meanwhile.
        close_reservation(inner, &job).await;
        return Ok(());
    }
    event(inner, &job.id, "info", &format!("Validated the files: {tokens_per_epoch} tokens per epoch, {total} to train. The job is queued."), None).await;
    Ok(())
}

/// Tokens per epoch of the training file, or the parameter at fault and why.
fn check_files(
    model: &Path,
    train: &Path,
    valid: Option<&Path>,
    limits: Limits,
) -> std::result::Result<usize, (&'static str, String)> {
    let tokenizer = LoadedModel::load(model, "finetune-validate").map_err(|e| {
        (
            "model",
            format!("The base model cannot be read for training: {e}"),
        )
    })?;
    let invalid = |param: &'static str| move |e: FinetuneError| (param, e.to_string());
    let examples = data::load_file(&tokenizer, train, &limits, "training file")
        .map_err(invalid("training_file"))?;
    if let Some(valid) = valid {
        let limits = Limits {
            min_examples: 1,
            ..limits
        };
        data::load_file(&tokenizer, valid, &limits, "validation file")
            .map_err(invalid("validation_file"))?;
    }
    Ok(examples.iter().map(|e| e.tokens.len()).sum())
}

/// Makes sure the job's current run holds a reservation for what is left to train
/// (`total_tokens − billed_tokens`): the one taken at creation (resized once, to the exact
/// count, when the files are validated), or, when that belongs to a run that ended (another
/// process, a restart), that one closed from its last checkpoint and a new one taken under
/// the next attempt. `Ok(Err(why))` when the ledger refuses (the balance cannot cover it).
async fn hold(inner: &Inner, job: &mut FineTuningJob) -> Result<std::result::Result<(), String>> {
    let ledger = &inner.tenancy.ledger;
    let total = job.total_tokens.unwrap_or(0);
    let id = ledger_id(job);
    match ledger.reservation(&id).await {
        Ok(r) if r.state == ReservationState::Open && r.owner == ledger.process_id() => {
            let left = (total - job.billed_tokens).max(0);
            if r.prompt_tokens != left {
                if let Err(e) = ledger.resize(&id, left, 0).await {
                    return Ok(Err(e.to_string()));
                }
            }
            return Ok(Ok(()));
        }
        Ok(r) => {
            let closed = if r.state == ReservationState::Open {
                ledger
                    .settle_from_progress(&id)
                    .await
                    .map_err(JobError::from)?
                    .billed
            } else {
                r.billed.unwrap_or_default()
            };
            job.billed_tokens += closed.prompt_tokens;
            job.attempt += 1;
        }
        Err(tenancy::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // The attempt is counted before its reservation is taken: a crash between leaves a run
    // without a reservation, which the next run takes.
    let status = job.status.clone();
    if !inner.store.update_fine_tuning_job(job, &[&status]).await? {
        return Ok(Err("the job changed while it was resumed".into()));
    }
    let reserve = ReserveRequest {
        request_id: ledger_id(job),
        tenant_id: job.tenant_id.clone(),
        key_id: job.key_id.clone(),
        served_model: tenancy::fine_tune_model(&job.model),
        prompt_tokens: (total - job.billed_tokens).max(0),
        max_completion_tokens: 0,
    };
    match ledger.reserve(&reserve).await {
        Ok(_) => Ok(Ok(())),
        Err(
            e
            @ (tenancy::Error::InsufficientQuota { .. } | tenancy::Error::PermissionDenied { .. }),
        ) => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Waits for a training turn, trains (resuming from the job's last checkpoint), and ends the
/// job.
async fn train_job(inner: &Inner, job: FineTuningJob, running: &Running) -> Result<()> {
    let _turn = tokio::select! {
        turn = inner.turns.acquire() => turn.map_err(|e| JobError::Internal(e.to_string()))?,
        () = stopped(running) => return Ok(()),
    };
    // Reread: it may have been cancelled while it waited.
    let mut job = match inner.store.fine_tuning_job_by_id(&job.id).await {
        Ok(job) if matches!(job.status.as_str(), "queued" | "running") => job,
        Ok(_) | Err(store::StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let base = match inner.models.base(&job.model) {
        Ok(base) => base,
        Err(why) => return fail(inner, job, "invalid_model", &why, Some("model")).await,
    };
    if let Err(message) = hold(inner, &mut job).await? {
        return fail(inner, job, "insufficient_quota", &message, None).await;
    }
    let from = job.status.clone();
    job.status = "running".to_owned();
    if !inner.store.update_fine_tuning_job(&job, &[&from]).await? {
        close_reservation(inner, &job).await;
        return Ok(());
    }
    event(inner, &job.id, "info", "Fine-tuning job started.", None).await;
    let hyper = hyperparameters(&job)?;
    let dir = job_dir(&inner.config, &job.id);
    let name = validate::model_name(&job.model, job.suffix.as_deref(), &job.id)?;
    let spec = JobSpec {
        base_model: base.path.clone(),
        training_file: dir.join("train.jsonl"),
        validation_file: job
            .validation_file
            .is_some()
            .then(|| dir.join("valid.jsonl")),
        config: TrainConfig {
            lora: inner.config.lora,
            epochs: hyper.n_epochs as usize,
            batch_size: hyper.batch_size as usize,
            learning_rate: inner.config.base_learning_rate * hyper.learning_rate_multiplier,
            max_steps: None,
            seed: u64::try_from(job.seed).unwrap_or(0),
            checkpoint_every: inner.config.checkpoint_every,
            eval_every: inner.config.checkpoint_every,
            threads: inner.config.threads.max(1),
        },
        limits: limits(inner, base.context_length),
        checkpoint_dir: Some(dir.join("checkpoints")),
        output: adapter_path(&inner.config, &job.id),
        name: name.clone(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let stop = running.stop.clone();
    let models = inner.models.clone();
    let training = tokio::task::spawn_blocking(move || {
        job::run(&spec, &stop, &mut |p| {
            let _ = tx.send(p.clone());
            // Serving first: between steps, wait while interactive work waits or runs.
            while models.busy() && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    });
    let mut last_tokens = job.billed_tokens;
    let mut told_resume = false;
    while let Some(p) = rx.recv().await {
        last_tokens = i64::try_from(p.tokens_seen).unwrap_or(i64::MAX);
        if !told_resume {
            // The first step of a run that resumed follows its checkpoint's step.
            told_resume = true;
            if p.step > 1 {
                resumed(inner, &job, p.step - 1).await;
            }
        }
        progress(inner, &job, &p).await;
    }
    let summary = training
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?;
    if let (false, Ok(s)) = (told_resume, &summary) {
        // Resumed from a checkpoint of its last step: no step ran.
        if let Some(step) = s.resumed_from.filter(|s| *s > 0) {
            resumed(inner, &job, step).await;
        }
    }
    let job_now = inner.store.fine_tuning_job_by_id(&job.id).await?;
    match summary {
        Ok(summary) => match summary.outcome {
            Outcome::Finished { tokens_seen, .. } => {
                let trained = i64::try_from(tokens_seen).unwrap_or(i64::MAX);
                finish(inner, job, &name, trained).await
            }
            Outcome::Cancelled { .. } if job_now.status == "cancelled" => {
                // A cancel: the steps that ran are billed.
                settle(inner, &job, last_tokens).await;
                Ok(())
            }
            // Stopped for a shutdown or the tenant's deletion: the reservation stays open
            // (its lease lapses or the resumed run closes it from the last checkpoint).
            Outcome::Cancelled { .. } => Ok(()),
        },
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "fine-tuning failed");
            let (code, param) = match &e {
                FinetuneError::Invalid(_) => ("invalid_training_file", Some("training_file")),
                _ => ("training_failed", None),
            };
            fail(inner, job, code, &format!("Training failed: {e}"), param).await
        }
    }
}

/// Records that a run resumed from the checkpoint of `step` (after a restart or a kill).
async fn resumed(inner: &Inner, job: &FineTuningJob, step: usize) {
    let data = serde_json::json!({ "resumed_from_step": step }).to_string();
    let message = format!("Resumed from the checkpoint at step {step}.");
    event(inner, &job.id, "info", &message, Some(&data)).await;
    tracing::info!(job = %job.id, step, "fine-tuning job resumed from a checkpoint");
}

/// Resolves when the runner is told to stop.
async fn stopped(running: &Running) {
    while !running.stop.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(Duration::from_millis(500), running.wake.notified()).await;
    }
}

/// Records one step: a `metrics` event, and at a checkpoint its row and the run's progress in
/// the ledger.
async fn progress(inner: &Inner, job: &FineTuningJob, p: &Progress) {
    let data = serde_json::json!({
        "step": p.step,
        "total_steps": p.total_steps,
        "epoch": p.epoch,
        "train_loss": p.train_loss,
        "valid_loss": p.valid_loss,
        "tokens_seen": p.tokens_seen,
        "tokens_per_second": p.tokens_per_s,
        "eta_seconds": p.eta_s.round(),
    })
    .to_string();
    let message = format!(
        "Step {}/{}: training loss={:.4}{}",
        p.step,
        p.total_steps,
        p.train_loss,
        p.valid_loss
            .map(|v| format!(", validation loss={v:.4}"))
            .unwrap_or_default()
    );
    event(inner, &job.id, "info", &message, Some(&data)).await;
    if p.checkpoint.is_none() {
        return;
    }
    let checkpoint = FineTuningCheckpoint {
        step: i64::try_from(p.step).unwrap_or(i64::MAX),
        created_at: now(),
        metrics: data,
    };
    if let Err(e) = inner
        .store
        .put_fine_tuning_checkpoint(&job.id, &checkpoint)
        .await
    {
        tracing::warn!(job = %job.id, error = %e, "could not record a checkpoint");
    }
    let since = i64::try_from(p.tokens_seen).unwrap_or(i64::MAX) - job.billed_tokens;
    let usage = TokenUsage {
        prompt_tokens: since.max(0),
        ..TokenUsage::default()
    };
    if let Err(e) = inner.tenancy.ledger.progress(&ledger_id(job), usage).await {
        tracing::warn!(job = %job.id, error = %e, "could not persist a fine-tuning job's progress");
    }
    let eta = chrono::TimeDelta::seconds(p.eta_s.round() as i64);
    let mut updated = job.clone();
    updated.estimated_finish = Some(now() + eta);
    let _ = inner
        .store
        .update_fine_tuning_job(&updated, &["running"])
        .await;
}

/// Settles the run's reservation at `tokens_seen` (all the job's trained tokens so far).
async fn settle(inner: &Inner, job: &FineTuningJob, tokens_seen: i64) {
    let usage = TokenUsage {
        prompt_tokens: (tokens_seen - job.billed_tokens).max(0),
        ..TokenUsage::default()
    };
    if let Err(e) = inner.tenancy.ledger.settle(&ledger_id(job), usage).await {
        tracing::error!(job = %job.id, error = %e, "could not settle a fine-tuning job; lease recovery will from its last checkpoint");
    }
}

/// Publishes the adapter, settles, and marks the job succeeded.
async fn finish(inner: &Inner, mut job: FineTuningJob, name: &str, trained: i64) -> Result<()> {
    match stored::store(inner, &job, name, trained).await {
        Ok(repo) => {
            let message = format!(
                "The adapter is in the hub: {repo} at revision {} (file {}).",
                job.id,
                stored::ADAPTER_FILE
            );
            event(inner, &job.id, "info", &message, None).await;
            job.hub_repo = Some(repo.to_string());
        }
        Err(why) => {
            // Served from this server's copy; the tenant is told why it is not in the hub.
            let message = format!(
                "The adapter could not be committed to the hub ({why}); the model is served \
                 from this server's copy."
            );
            event(inner, &job.id, "warn", &message, None).await;
            tracing::warn!(job = %job.id, error = %why, "fine-tuned adapter not committed to the hub");
        }
    }
    let published = Published {
        name: name.to_owned(),
        tenant_id: job.tenant_id.clone(),
        base: job.model.clone(),
        adapter: stored::served_adapter(&inner.config, &job),
    };
    if let Err(why) = inner.models.publish(&published).await {
        settle(inner, &job, trained).await;
        return fail(
            inner,
            job,
            "publish_failed",
            &format!("The adapter was trained but cannot be served: {why}"),
            None,
        )
        .await;
    }
    settle(inner, &job, trained).await;
    job.status = "succeeded".to_owned();
    job.fine_tuned_model = Some(name.to_owned());
    job.trained_tokens = Some(trained);
    job.finished_at = Some(now());
    job.estimated_finish = None;
    if inner
        .store
        .update_fine_tuning_job(&job, &["running"])
        .await?
    {
        event(
            inner,
            &job.id,
            "info",
            &format!("New fine-tuned model created: {name}"),
            None,
        )
        .await;
        event(
            inner,
            &job.id,
            "info",
            "The job has successfully completed.",
            None,
        )
        .await;
        tracing::info!(job = %job.id, model = %name, trained, "fine-tuning job succeeded");
    } else {
        inner.models.unpublish(name).await;
    }
    Ok(())
}
