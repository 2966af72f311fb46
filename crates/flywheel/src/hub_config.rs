//! `flywheel serve` settings of the model hub (flags, environment, or a `[hub]` table in the
//! config file) and `--model hub:ORG/NAME[@REV][#FILE][=NAME]` specs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Flags of the hub; in the config file, the keys of the `[hub]` table (without `hub_`).
#[derive(Debug, Args, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubArgs {
    /// Let anyone read public hub repositories without a key [default: true].
    #[arg(long, env = "FLYWHEEL_HUB_ANONYMOUS_READS")]
    #[serde(rename = "anonymous_reads")]
    pub hub_anonymous_reads: Option<bool>,
    /// Largest file a hub repository may hold, in bytes [default: 256 GiB].
    #[arg(long, env = "FLYWHEEL_HUB_MAX_FILE_BYTES")]
    #[serde(rename = "max_file_bytes")]
    pub hub_max_file_bytes: Option<u64>,
    /// Largest upload chunk (one request body), in bytes [default: 64 MiB].
    #[arg(long, env = "FLYWHEEL_HUB_MAX_CHUNK_BYTES")]
    #[serde(rename = "max_chunk_bytes")]
    pub hub_max_chunk_bytes: Option<u64>,
    /// Most files in one revision [default: 10000].
    #[arg(long, env = "FLYWHEEL_HUB_MAX_FILES")]
    #[serde(rename = "max_files")]
    pub hub_max_files: Option<usize>,
    /// Most bytes one tenant may hold in the hub: files it uploaded plus the sizes its open
    /// uploads declared [default: 1 TiB].
    #[arg(long, env = "FLYWHEEL_HUB_TENANT_QUOTA_BYTES")]
    #[serde(rename = "tenant_quota_bytes")]
    pub hub_tenant_quota_bytes: Option<u64>,
    /// Most unfinished uploads one tenant may have open [default: 1000].
    #[arg(long, env = "FLYWHEEL_HUB_MAX_OPEN_UPLOADS")]
    #[serde(rename = "max_open_uploads")]
    pub hub_max_open_uploads: Option<usize>,
    /// Testing only: pace every hub download to this many bytes per second.
    #[arg(long, env = "FLYWHEEL_HUB_THROTTLE_BYTES_PER_SEC", hide = true)]
    #[serde(rename = "throttle_bytes_per_sec")]
    pub hub_throttle_bytes_per_sec: Option<u64>,
    /// Hours an unfinished hub upload is kept before it is removed [default: 168].
    #[arg(long, env = "FLYWHEEL_HUB_UPLOAD_TTL_HOURS")]
    #[serde(rename = "upload_ttl_hours")]
    pub hub_upload_ttl_hours: Option<u64>,
}

impl HubArgs {
    /// These settings over the defaults, validated.
    pub fn resolve(&self) -> Result<hub::HubConfig> {
        let d = hub::HubConfig::default();
        let config = hub::HubConfig {
            max_file_bytes: self.hub_max_file_bytes.unwrap_or(d.max_file_bytes),
            max_chunk_bytes: self.hub_max_chunk_bytes.unwrap_or(d.max_chunk_bytes),
            max_files: self.hub_max_files.unwrap_or(d.max_files),
            anonymous_reads: self.hub_anonymous_reads.unwrap_or(d.anonymous_reads),
            tenant_quota_bytes: self.hub_tenant_quota_bytes.unwrap_or(d.tenant_quota_bytes),
            max_open_uploads: self.hub_max_open_uploads.unwrap_or(d.max_open_uploads),
            upload_ttl: self.hub_upload_ttl_hours.map_or(d.upload_ttl, |h| {
                Duration::from_secs(h.saturating_mul(3600))
            }),
            serve_throttle_bytes_per_sec: self.hub_throttle_bytes_per_sec.filter(|r| *r > 0),
        };
        if config.max_chunk_bytes < 1 << 20 {
            bail!("--hub-max-chunk-bytes must be at least 1 MiB (push sends 16 MiB chunks)");
        }
        if config.max_files == 0 || config.max_file_bytes == 0 {
            bail!("--hub-max-files and --hub-max-file-bytes must be positive");
        }
        if config.upload_ttl.is_zero() {
            bail!("--hub-upload-ttl-hours must be at least 1");
        }
        if config.tenant_quota_bytes == 0 || config.max_open_uploads == 0 {
            bail!("--hub-tenant-quota-bytes and --hub-max-open-uploads must be positive");
        }
        Ok(config)
    }
}

/// A model to serve from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModelRef {
    pub repo: hub::path::RepoId,
    pub revision: String,
    /// The `.gguf` to serve; `None`: the only one in the revision.
    pub file: Option<String>,
}

/// Parses `hub:ORG/NAME[@REV][#FILE][=NAME]` into the ref and the served name (NAME, else the
/// file's name without `.gguf`, else the repository's name).
pub fn parse_hub_spec(spec: &str) -> Result<(HubModelRef, String)> {
    let Some(rest) = spec.strip_prefix("hub:") else {
        bail!("model '{spec}': a hub model starts with hub:");
    };
    let (rest, name) = match rest.rsplit_once('=') {
        Some((r, n)) => (r, Some(n.to_owned())),
        None => (rest, None),
    };
    let (rest, file) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f.to_owned())),
        None => (rest, None),
    };
    let (repo, revision) = match rest.split_once('@') {
        Some((r, v)) => (r, v.to_owned()),
        None => (rest, "main".to_owned()),
    };
    let repo = hub::path::RepoId::parse(repo).map_err(|e| {
        anyhow::anyhow!("model '{spec}': {e}; expected hub:ORG/NAME[@REV][#FILE][=NAME]")
    })?;
    hub::path::validate_revision(&revision).map_err(|e| anyhow::anyhow!("model '{spec}': {e}"))?;
    if let Some(f) = &file {
        hub::path::ValidPath::parse(f).map_err(|e| anyhow::anyhow!("model '{spec}': {e}"))?;
    }
    let name = name.unwrap_or_else(|| match &file {
        Some(f) => {
            let leaf = f.rsplit('/').next().unwrap_or(f);
            leaf.strip_suffix(".gguf").unwrap_or(leaf).to_owned()
        }
        None => repo.name.clone(),
    });
    Ok((
        HubModelRef {
            repo,
            revision,
            file,
        },
        name,
    ))
}

/// Opens the hub over `store` with its files under `data_dir/hub`, and removes expired
/// uploads.
pub async fn open(
    store: std::sync::Arc<dyn store::Store>,
    data_dir: &std::path::Path,
    config: hub::HubConfig,
) -> Result<hub::Hub> {
    let hub = hub::Hub::open(store, data_dir, config)
        .map_err(|e| anyhow::anyhow!("cannot open the hub under {}: {e}", data_dir.display()))?;
    match hub.clean_stale_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed expired hub uploads"),
        Err(e) => tracing::warn!(error = %e, "could not clean expired hub uploads"),
    }
    Ok(hub)
}

/// Where a hub model's bytes are: resolved against the opened hub at start.
pub async fn resolve_model(hub: &hub::Hub, r: &HubModelRef) -> Result<PathBuf> {
    let view = hub
        .gguf(&r.repo, &r.revision, r.file.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("hub:{}@{}: {e}", r.repo, r.revision))?;
    tracing::info!(repo = %r.repo, commit = %view.commit.id, file = %view.entry.path, "serving a model from the hub");
    Ok(view.blob_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_specs_parse() {
        let (r, n) = parse_hub_spec("hub:org/smol").expect("plain");
        assert_eq!(
            (r.repo.to_string(), r.revision.as_str(), r.file, n.as_str()),
            ("org/smol".into(), "main", None, "smol")
        );
        let (r, n) = parse_hub_spec("hub:org/smol@v1#q/m.Q4.gguf=fast").expect("full");
        assert_eq!(
            (r.revision.as_str(), r.file.as_deref(), n.as_str()),
            ("v1", Some("q/m.Q4.gguf"), "fast")
        );
        let (_, n) = parse_hub_spec("hub:org/smol#m.Q4.gguf").expect("file");
        assert_eq!(n, "m.Q4");
        for bad in ["hub:org", "hub:../x", "hub:o/n#../a.gguf", "hub:o/n@a..b"] {
            assert!(parse_hub_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_resolve() {
        let c = HubArgs::default().resolve().expect("defaults");
        assert_eq!(c, hub::HubConfig::default());
    }
}
