//! `flywheel serve` settings of the Files API (flags, environment, or a `[files]` table in the
//! config file), and opening it.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Flags of the Files API; in the config file, the keys of the `[files]` table (without
/// `files_`).
#[derive(Debug, Args, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesArgs {
    /// Largest file one upload to /v1/files may carry, in bytes [default: 512 MiB].
    #[arg(long, env = "FLYWHEEL_FILES_MAX_FILE_BYTES")]
    #[serde(rename = "max_file_bytes")]
    pub files_max_file_bytes: Option<u64>,
    /// Bytes one tenant's files may hold, unless an admin set its own quota [default: 10 GiB].
    #[arg(long, env = "FLYWHEEL_FILES_TENANT_QUOTA_BYTES")]
    #[serde(rename = "tenant_quota_bytes")]
    pub files_tenant_quota_bytes: Option<u64>,
    /// Seconds between sweeps deleting expired files [default: 60].
    #[arg(long, env = "FLYWHEEL_FILES_SWEEP_SECONDS")]
    #[serde(rename = "sweep_seconds")]
    pub files_sweep_seconds: Option<u64>,
    /// Testing only: the shortest `expires_after[seconds]` accepted (OpenAI's is 3600).
    #[arg(long, env = "FLYWHEEL_FILES_MIN_EXPIRY_SECONDS", hide = true)]
    #[serde(rename = "min_expiry_seconds")]
    pub files_min_expiry_seconds: Option<u64>,
}

impl FilesArgs {
    /// These settings over the defaults, validated.
    pub fn resolve(&self) -> Result<files::FilesConfig> {
        let d = files::FilesConfig::default();
        let config = files::FilesConfig {
            max_file_bytes: self.files_max_file_bytes.unwrap_or(d.max_file_bytes),
            tenant_quota_bytes: self
                .files_tenant_quota_bytes
                .unwrap_or(d.tenant_quota_bytes),
            min_expiry: self
                .files_min_expiry_seconds
                .map_or(d.min_expiry, Duration::from_secs),
            max_expiry: d.max_expiry,
            sweep_interval: self
                .files_sweep_seconds
                .map_or(d.sweep_interval, Duration::from_secs),
        };
        if config.max_file_bytes == 0 {
            bail!("--files-max-file-bytes must be positive");
        }
        if config.min_expiry.is_zero() || config.min_expiry > config.max_expiry {
            bail!("--files-min-expiry-seconds must be between 1 and 2592000");
        }
        if !(1..=86_400).contains(&config.sweep_interval.as_secs()) {
            bail!("--files-sweep-seconds must be between 1 and 86400");
        }
        Ok(config)
    }
}

/// Opens the Files API over the hub's blob store and starts its expiry sweep.
pub fn open(
    store: std::sync::Arc<dyn store::Store>,
    hub: hub::Hub,
    data_dir: &std::path::Path,
    config: files::FilesConfig,
) -> Result<files::Files> {
    let files = files::Files::open(store, hub, data_dir, config).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the Files API under {}: {e}",
            data_dir.display()
        )
    })?;
    files.spawn_sweep();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_resolve() {
        let config = FilesArgs::default().resolve().expect("defaults");
        assert_eq!(config, files::FilesConfig::default());
        let bad = FilesArgs {
            files_min_expiry_seconds: Some(0),
            ..FilesArgs::default()
        };
        assert!(bad.resolve().is_err());
    }
}
