//! A whole fine-tuning job on files: read the base GGUF (its tokenizer and chat template
//! through the engine, its weights through candle), check and tokenize the training and
//! validation files, train (resuming from the checkpoint directory when it holds a
//! checkpoint of the same job), and write the adapter. What the CLI runs, and what a job
//! service runs on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use engine::model::LoadedModel;

use crate::data::{self, Limits};
use crate::train::{Outcome, Progress, TrainConfig, Trainer};
use crate::weights::BaseModel;
use crate::{FinetuneError, Result};

/// What to train.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub base_model: PathBuf,
    pub training_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    pub config: TrainConfig,
    pub limits: Limits,
    /// Where checkpoints go and a resumed job finds them.
    pub checkpoint_dir: Option<PathBuf>,
    /// The adapter GGUF to write.
    pub output: PathBuf,
    /// `general.name` of the adapter.
    pub name: String,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub outcome: Outcome,
    pub resumed_from: Option<usize>,
    pub steps: usize,
    pub total_steps: usize,
    /// Assistant tokens of the training file (the loss covers these each epoch).
    pub trained_tokens_per_epoch: usize,
    /// Tokens run through the model, all steps.
    pub tokens_seen: u64,
    pub seconds: f64,
    pub first_loss: Option<f32>,
    pub last_loss: Option<f32>,
    pub last_valid_loss: Option<f32>,
}

/// Read and check the training data against the base model's tokenizer (the validation
/// stage): `(training, validation)` examples.
pub fn prepare_data(
    model: &LoadedModel,
    spec: &JobSpec,
) -> Result<(Vec<data::TokenizedExample>, Vec<data::TokenizedExample>)> {
    let train = data::load_file(model, &spec.training_file, &spec.limits, "training file")?;
    let valid = match &spec.validation_file {
        Some(p) => {
            let limits = Limits {
                min_examples: 1,
                ..spec.limits
            };
            data::load_file(model, p, &limits, "validation file")?
        }
        None => Vec::new(),
    };
    Ok((train, valid))
}

/// Run the job to its end, cancellation or an error.
pub fn run(
    spec: &JobSpec,
    cancel: &AtomicBool,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<JobSummary> {
    let started = Instant::now();
    let tokenizer = LoadedModel::load(&spec.base_model, "finetune-base")
        .map_err(|e| FinetuneError::Model(e.to_string()))?;
    let (train, valid) = prepare_data(&tokenizer, spec)?;
    drop(tokenizer);
    let base = BaseModel::load(&spec.base_model)?;
    let mut trainer = Trainer::new(&base, train, valid, spec.config.clone())?;
    let resumed_from = match &spec.checkpoint_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            trainer.resume(dir)?
        }
        None => None,
    };
    let mut first_loss = None;
    let mut last_loss = None;
    let mut last_valid_loss = None;
    let outcome = trainer.run(spec.checkpoint_dir.as_deref(), cancel, &mut |p| {
        first_loss.get_or_insert(p.train_loss);
        last_loss = Some(p.train_loss);
        if p.valid_loss.is_some() {
            last_valid_loss = p.valid_loss;
        }
        on_progress(p)
    })?;
    if let Outcome::Finished { .. } = outcome {
        write_adapter(&spec.output, &trainer, &base, &spec.name)?;
    }
    Ok(JobSummary {
        steps: trainer.step(),
        total_steps: trainer.total_steps(),
        trained_tokens_per_epoch: trainer.trained_tokens_per_epoch(),
        tokens_seen: match outcome {
            Outcome::Finished { tokens_seen, .. } => tokens_seen,
            Outcome::Cancelled { .. } => 0,
        },
        outcome,
        resumed_from,
        seconds: started.elapsed().as_secs_f64(),
        first_loss,
        last_loss,
        last_valid_loss,
    })
}

fn write_adapter(path: &Path, trainer: &Trainer<'_>, base: &BaseModel, name: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::export::save_adapter(path, trainer.lora(), &base.architecture, name)
}
