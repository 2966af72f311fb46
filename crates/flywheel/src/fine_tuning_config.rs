//! `flywheel serve` settings of the fine-tuning API (flags, environment, or a `[fine_tuning]`
//! table in the config file).

use std::path::Path;

use ::finetune::jobs::JobsConfig;
use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Flags of the fine-tuning API; in the config file, the keys of the `[fine_tuning]` table
/// (without `fine_tuning_`).
#[derive(Debug, Args, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuningArgs {
    /// Largest training or validation file of a fine-tuning job, in bytes [default: 50 MiB].
    #[arg(long, env = "FLYWHEEL_FINE_TUNING_MAX_FILE_BYTES")]
    #[serde(rename = "max_file_bytes")]
    pub fine_tuning_max_file_bytes: Option<u64>,
    /// Most epochs a job may ask for [default: 10].
    #[arg(long, env = "FLYWHEEL_FINE_TUNING_MAX_EPOCHS")]
    #[serde(rename = "max_epochs")]
    pub fine_tuning_max_epochs: Option<u32>,
    /// Unfinished fine-tuning jobs one tenant may have [default: 2].
    #[arg(long, env = "FLYWHEEL_FINE_TUNING_MAX_JOBS")]
    #[serde(rename = "max_jobs")]
    pub fine_tuning_max_jobs: Option<u32>,
    /// Threads one training uses (it pauses between steps while serving has work) [default: 2].
    #[arg(long, env = "FLYWHEEL_FINE_TUNING_THREADS")]
    #[serde(rename = "threads")]
    pub fine_tuning_threads: Option<usize>,
    /// A job saves a checkpoint every this many steps [default: 10].
    #[arg(long, env = "FLYWHEEL_FINE_TUNING_CHECKPOINT_EVERY")]
    #[serde(rename = "checkpoint_every")]
    pub fine_tuning_checkpoint_every: Option<usize>,
}

impl FineTuningArgs {
    /// These settings over the defaults, validated; jobs keep their files under
    /// `DATA_DIR/fine_tuning`.
    pub fn resolve(&self, data_dir: &Path) -> Result<JobsConfig> {
        let d = JobsConfig::default();
        let config = JobsConfig {
            data_dir: data_dir.join("fine_tuning"),
            max_file_bytes: self.fine_tuning_max_file_bytes.unwrap_or(d.max_file_bytes),
            max_epochs: self.fine_tuning_max_epochs.unwrap_or(d.max_epochs),
            max_jobs_per_tenant: self.fine_tuning_max_jobs.unwrap_or(d.max_jobs_per_tenant),
            threads: self.fine_tuning_threads.unwrap_or(d.threads),
            checkpoint_every: self
                .fine_tuning_checkpoint_every
                .unwrap_or(d.checkpoint_every),
            ..d
        };
        if config.max_file_bytes == 0 {
            bail!("--fine-tuning-max-file-bytes must be positive");
        }
        if !(1..=100).contains(&config.max_epochs) {
            bail!("--fine-tuning-max-epochs must be between 1 and 100");
        }
        if !(1..=1000).contains(&config.max_jobs_per_tenant) {
            bail!("--fine-tuning-max-jobs must be between 1 and 1000");
        }
        if !(1..=256).contains(&config.threads) {
            bail!("--fine-tuning-threads must be between 1 and 256");
        }
        if config.checkpoint_every == 0 {
            bail!("--fine-tuning-checkpoint-every must be positive");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let d = FineTuningArgs::default()
            .resolve(Path::new("/data"))
            .expect("defaults");
        assert_eq!(d.data_dir, Path::new("/data/fine_tuning"));
        assert_eq!(d.max_jobs_per_tenant, 2);
        let bad = FineTuningArgs {
            fine_tuning_max_epochs: Some(0),
            ..FineTuningArgs::default()
        };
        assert!(bad.resolve(Path::new("/d")).is_err());
    }
}
