//! The training loop: seeded shuffles per epoch, right-padded batches, cross-entropy on the
//! assistant tokens, AdamW with warm-up and linear decay, a progress callback, checkpoints
//! every N steps (LoRA matrices and optimizer moments; the data order is a function of the
//! seed and the step, so a resumed run repeats exactly what the interrupted one would have
//! done), and cancellation between steps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::TokenizedExample;
use crate::lora::{LoraConfig, LoraParams};
use crate::model::{hidden_states, logits, Rope};
use crate::optim::{AdamW, AdamWParams};
use crate::weights::BaseModel;
use crate::{FinetuneError, Result};

/// What and how long to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Stop after this many steps even if epochs remain (`None`: all epochs).
    pub max_steps: Option<usize>,
    pub seed: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Compute the validation loss every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Threads for the tensor work.
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lora: LoraConfig::default(),
            epochs: 3,
            batch_size: 4,
            learning_rate: 2e-3,
            max_steps: None,
            seed: 0,
            checkpoint_every: 25,
            eval_every: 25,
            threads: 2,
        }
    }
}

/// Reported after every step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub train_loss: f32,
    pub valid_loss: Option<f32>,
    /// Tokens run through the model so far (all steps, including before a resume).
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    /// Tokens per second in this run.
    pub tokens_per_s: f64,
    /// A checkpoint was written after this step.
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished { steps: usize, tokens_seen: u64 },
    Cancelled { step: usize },
}

/// What a checkpoint's `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CheckpointState {
    step: usize,
    tokens_seen: u64,
    config: TrainConfig,
    train_examples: usize,
}

pub struct Trainer<'m> {
    model: &'m BaseModel,
    lora: LoraParams,
    opt: AdamW,
    train: Vec<TokenizedExample>,
    valid: Vec<TokenizedExample>,
    config: TrainConfig,
    rope: Rope,
    tokens_seen: u64,
}

impl<'m> Trainer<'m> {
    pub fn new(
        model: &'m BaseModel,
        train: Vec<TokenizedExample>,
        valid: Vec<TokenizedExample>,
        config: TrainConfig,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(FinetuneError::Invalid("no training examples".into()));
        }
        if config.epochs == 0 || config.batch_size == 0 || config.learning_rate <= 0.0 {
            return Err(FinetuneError::Invalid(
                "epochs, batch size and learning rate must be positive".into(),
            ));
        }
        let vocab = model.config.vocab as u32;
        for ex in train.iter().chain(&valid) {
            if ex.tokens.len() != ex.targets.len() || ex.tokens.len() < 2 {
                return Err(FinetuneError::Invalid(
                    "an example has no tokens to learn".into(),
                ));
            }
            if ex.tokens.iter().any(|t| *t >= vocab) {
                return Err(FinetuneError::Invalid(
                    "an example has a token outside the model's vocabulary".into(),
                ));
            }
        }
        let max_len = train
            .iter()
            .chain(&valid)
            .map(|e| e.tokens.len())
            .max()
            .unwrap_or(1);
        let lora = LoraParams::init(&model.config, config.lora, config.seed)?;
        let named = lora
            .named()
            .into_iter()
            .map(|(n, v)| (n, v.clone()))
            .collect();
        let opt = AdamW::new(named, AdamWParams::default())?;
        Ok(Self {
            model,
            lora,
            opt,
            train,
            valid,
            rope: Rope::new(model, max_len)?,
            config,
            tokens_seen: 0,
        })
    }

    pub fn lora(&self) -> &LoraParams {
        &self.lora
    }

    pub fn step(&self) -> usize {
        self.opt.step
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.config.batch_size)
    }

    pub fn total_steps(&self) -> usize {
        let all = self.steps_per_epoch() * self.config.epochs;
        self.config.max_steps.map_or(all, |m| m.min(all))
    }

    /// Tokens the loss covers in one pass over the training data.
    pub fn trained_tokens_per_epoch(&self) -> usize {
        self.train.iter().map(|e| e.trained_tokens()).sum()
    }

    /// The learning rate at `step` (0-based): linear warm-up over the first 5% of the steps,
    /// then linear decay to a tenth.
    fn lr_at(&self, step: usize) -> f64 {
        let total = self.total_steps().max(1) as f64;
        let warm = (total * 0.05).ceil().max(1.0);
        let s = step as f64;
        let base = self.config.learning_rate;
        if s < warm {
            base * (s + 1.0) / warm
        } else {
            base * (1.0 - 0.9 * (s - warm) / (total - warm).max(1.0))
        }
    }

    /// The training examples of `step`.
    fn batch_at(&self, step: usize) -> Vec<usize> {
        let spe = self.steps_per_epoch();
        let epoch = step / spe;
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64 + 1),
        );
        order.shuffle(&mut rng);
        let at = (step % spe) * self.config.batch_size;
        order[at..(at + self.config.batch_size).min(order.len())].to_vec()
    }

    /// Mean cross-entropy over the assistant tokens of `batch`, and the tokens it ran.
    fn loss(
        &self,
        batch: &[&TokenizedExample],
        lora: Option<&LoraParams>,
    ) -> Result<(Tensor, u64)> {
        let t = batch.iter().map(|e| e.tokens.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(batch.len() * t);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        let mut seen = 0u64;
        for (b, ex) in batch.iter().enumerate() {
            seen += ex.tokens.len() as u64;
            ids.extend_from_slice(&ex.tokens);
            ids.extend(std::iter::repeat_n(0u32, t - ex.tokens.len()));
            for p in 0..ex.tokens.len() - 1 {
                if ex.targets[p + 1] {
                    rows.push((b * t + p) as u32);
                    labels.push(ex.tokens[p + 1]);
                }
            }
        }
        if rows.is_empty() {
            return Err(FinetuneError::Invalid(
                "a batch has no assistant tokens".into(),
            ));
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (batch.len(), t), &dev)?;
        let h = hidden_states(self.model, lora, &self.rope, &ids)?;
        let h = h.reshape((batch.len() * t, self.model.config.n_embd))?;
        let n = rows.len();
        let h = h.index_select(&Tensor::from_vec(rows, n, &dev)?, 0)?;
        let logits = logits(self.model, &h)?;
        let labels = Tensor::from_vec(labels, n, &dev)?;
        Ok((candle_nn::loss::cross_entropy(&logits, &labels)?, seen))
    }

    /// Mean loss over the validation examples (`None` without any).
    pub fn validation_loss(&self) -> Result<Option<f32>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0f64;
        let mut count = 0usize;
        for chunk in self.valid.chunks(self.config.batch_size) {
            let batch: Vec<&TokenizedExample> = chunk.iter().collect();
            let (loss, _) = self.loss(&batch, Some(&self.lora))?;
            let loss = loss.detach().to_scalar::<f32>()? as f64;
            let w = chunk.iter().map(|e| e.trained_tokens()).sum::<usize>();
            total += loss * w as f64;
            count += w;
        }
        Ok(Some((total / count.max(1) as f64) as f32))
    }

    /// Mean training loss of the base model or the adapter over the given examples.
    pub fn mean_loss(&self, examples: &[TokenizedExample], adapted: bool) -> Result<f32> {
        let batch: Vec<&TokenizedExample> = examples.iter().collect();
        let lora = adapted.then_some(&self.lora);
        Ok(self.loss(&batch, lora)?.0.detach().to_scalar::<f32>()?)
    }

    /// One optimisation step; returns the batch's loss.
    fn train_step(&mut self) -> Result<f32> {
        let step = self.opt.step;
        let batch_idx = self.batch_at(step);
        let batch: Vec<&TokenizedExample> = batch_idx.iter().map(|i| &self.train[*i]).collect();
        let (loss, seen) = self.loss(&batch, Some(&self.lora))?;
        let grads = loss.backward()?;
        let lr = self.lr_at(step);
        self.opt.step(&grads, lr)?;
        self.tokens_seen += seen;
        Ok(loss.to_scalar::<f32>()?)
    }

    /// Train until the last step, cancellation, or an error. Checkpoints go to `checkpoints`
    /// when given (`step-NNNNNN/` each, and `latest` naming the newest).
    pub fn run(
        &mut self,
        checkpoints: Option<&Path>,
        cancel: &AtomicBool,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<Outcome> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.config.threads.max(1))
            .thread_name(|i| format!("finetune-{i}"))
            .build()
            .map_err(|e| FinetuneError::Invalid(format!("cannot start training threads: {e}")))?;
        pool.install(|| self.run_here(checkpoints, cancel, on_progress))
    }

    fn run_here(
        &mut self,
        checkpoints: Option<&Path>,
        cancel: &AtomicBool,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<Outcome> {
        let total = self.total_steps();
        let started = Instant::now();
        let first_step = self.opt.step;
        let seen_at_start = self.tokens_seen;
        while self.opt.step < total {
            if cancel.load(Ordering::Relaxed) {
                return Ok(Outcome::Cancelled {
                    step: self.opt.step,
                });
            }
            let train_loss = self.train_step()?;
            let step = self.opt.step;
            let last = step == total;
            let every = |n: usize| n > 0 && step.is_multiple_of(n);
            let valid_loss = if every(self.config.eval_every) || last {
                self.validation_loss()?
            } else {
                None
            };
            let checkpoint = match checkpoints {
                Some(dir) if every(self.config.checkpoint_every) || last => {
                    Some(self.save_checkpoint(dir)?)
                }
                _ => None,
            };
            let elapsed = started.elapsed().as_secs_f64();
            let done = (step - first_step) as f64;
            on_progress(&Progress {
                step,
                total_steps: total,
                epoch: (step - 1) / self.steps_per_epoch() + 1,
                train_loss,
                valid_loss,
                tokens_seen: self.tokens_seen,
                elapsed_s: elapsed,
                eta_s: elapsed / done * (total - step) as f64,
                tokens_per_s: (self.tokens_seen - seen_at_start) as f64 / elapsed.max(1e-9),
                checkpoint,
            });
        }
        Ok(Outcome::Finished {
            steps: self.opt.step,
            tokens_seen: self.tokens_seen,
        })
    }

    /// Write a checkpoint of the current step under `dir`; returns its directory.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf> {
        let ck = |e: &dyn std::fmt::Display| FinetuneError::Checkpoint(format!("checkpoint: {e}"));
        let name = format!("step-{:06}", self.opt.step);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.part"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| ck(&e))?;
        let mut tensors: HashMap<String, Tensor> = self.lora.tensors();
        tensors.extend(self.opt.state());
        candle_core::safetensors::save(&tensors, tmp.join("state.safetensors"))?;
        let state = CheckpointState {
            step: self.opt.step,
            tokens_seen: self.tokens_seen,
            config: self.config.clone(),
            train_examples: self.train.len(),
        };
        let json = serde_json::to_vec_pretty(&state).map_err(|e| ck(&e))?;
        std::fs::write(tmp.join("state.json"), json)?;
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&tmp, &target).map_err(|e| ck(&e))?;
        let latest_tmp = dir.join(".latest.part");
        std::fs::write(&latest_tmp, &name)?;
        std::fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| ck(&e))?;
        Ok(target)
    }

    /// Continue from the newest checkpoint under `dir`, if there is one; returns its step.
    /// A checkpoint of another configuration or data set is refused.
    pub fn resume(&mut self, dir: &Path) -> Result<Option<usize>> {
        let Ok(name) = std::fs::read_to_string(dir.join("latest")) else {
            return Ok(None);
        };
        let ck_dir = dir.join(name.trim());
        let raw = std::fs::read(ck_dir.join("state.json")).map_err(|e| {
            FinetuneError::Checkpoint(format!("checkpoint {}: {e}", ck_dir.display()))
        })?;
        let state: CheckpointState = serde_json::from_slice(&raw)
            .map_err(|e| FinetuneError::Checkpoint(format!("checkpoint state: {e}")))?;
        if state.config != self.config || state.train_examples != self.train.len() {
            return Err(FinetuneError::Checkpoint(
                "the checkpoint belongs to another configuration or training set".into(),
            ));
        }
        let tensors =
            candle_core::safetensors::load(ck_dir.join("state.safetensors"), &Device::Cpu)?;
        self.lora.load(&tensors)?;
        self.opt.restore(&tensors, state.step)?;
        self.tokens_seen = state.tokens_seen;
        Ok(Some(state.step))
    }
}
