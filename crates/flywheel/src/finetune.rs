//! `flywheel finetune`: train a LoRA adapter for a llama GGUF on a chat JSONL file (OpenAI's
//! fine-tuning format) on this machine's CPUs, and write it as a GGUF LoRA adapter that
//! `flywheel serve --model 'BASE.gguf+lora:ADAPTER.gguf=NAME'` (or llama.cpp's
//! `--lora`) serves. Progress goes to stdout, one JSON object a step; with `--checkpoint-dir`
//! an interrupted run started again resumes from its last checkpoint.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use finetune::data::Limits;
use finetune::job::{self, JobSpec};
use finetune::train::{Outcome, TrainConfig};
use finetune::LoraConfig;

#[derive(clap::Args)]
pub struct FinetuneArgs {
    /// The base model (a llama-architecture GGUF).
    #[arg(long)]
    pub model: PathBuf,
    /// The training file: one `{"messages": [...]}` conversation a line.
    #[arg(long)]
    pub training_file: PathBuf,
    #[arg(long)]
    pub validation_file: Option<PathBuf>,
    /// The adapter GGUF to write.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens one conversation may have.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Keep checkpoints here (and resume from the newest one found).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    pub threads: usize,
}

pub fn run(args: FinetuneArgs) -> anyhow::Result<()> {
    let name = args
        .output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("adapter")
        .to_owned();
    let spec = JobSpec {
        base_model: args.model,
        training_file: args.training_file,
        validation_file: args.validation_file,
        config: TrainConfig {
            lora: LoraConfig {
                rank: args.rank,
                alpha: args.alpha,
            },
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            max_steps: args.max_steps,
            seed: args.seed,
            checkpoint_every: args.checkpoint_every,
            eval_every: args.checkpoint_every,
            threads: args.threads.max(1),
        },
        limits: Limits {
            max_tokens: args.max_tokens,
            ..Limits::default()
        },
        checkpoint_dir: args.checkpoint_dir,
        output: args.output.clone(),
        name,
    };
    let summary = job::run(&spec, &AtomicBool::new(false), &mut |p| {
        if let Ok(line) = serde_json::to_string(p) {
            println!("{line}");
        }
    })
    .context("fine-tuning failed")?;
    if let Some(step) = summary.resumed_from {
        eprintln!("resumed from the checkpoint of step {step}");
    }
    match summary.outcome {
        Outcome::Finished { .. } => eprintln!(
            "trained {} steps ({} tokens, {:.0}s, {:.0} tokens/s; loss {:.3} -> {:.3}); wrote {}",
            summary.steps,
            summary.tokens_seen,
            summary.seconds,
            summary.tokens_seen as f64 / summary.seconds.max(1e-9),
            summary.first_loss.unwrap_or(f32::NAN),
            summary.last_loss.unwrap_or(f32::NAN),
            args.output.display()
        ),
        Outcome::Cancelled { step } => eprintln!("cancelled at step {step}"),
    }
    Ok(())
}
