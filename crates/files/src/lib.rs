//! The Files API's domain (`/v1/files`), without HTTP: a tenant's files, stored as hub blobs
//! (content-addressed under `DATA_DIR/hub/blobs`, shared with hub repositories and other
//! files), with a purpose, an optional expiry, a size limit per file and a quota per tenant.
//! Inputs for the Batch and fine-tuning APIs (`batch`, `fine-tune`) must be JSONL.
//!
//! An upload is streamed to a staging file under `DATA_DIR/files/staging` (never held in
//! memory; removed on any refusal), hashed and checked there, then moved into the blob store
//! and recorded. Blobs are shared, so every step that may create or delete one takes the
//! hub's blob gate ([`hub::Hub::use_blobs`] / [`hub::Hub::hold_blobs`]): a deletion cannot
//! remove a blob between an upload finding it in place and its row naming it.
//!
//! Lives beside the hub rather than in it: the hub is model repositories and their protocols;
//! files are per-tenant working data with their own policies (purposes, expiry, quota), and
//! use the hub only as a blob store.

mod error;
pub mod jsonl;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use store::{FileQuery, FileRemoval, Store};

pub use error::{FilesError, Result};
pub use store::{FilePage, FileRecord, Timestamp};
pub use upload::Staged;

/// Limits and policy, from the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Largest file.
    pub max_file_bytes: u64,
    /// Bytes one tenant's files may hold, unless the operator set another quota for it.
    pub tenant_quota_bytes: u64,
    /// Shortest `expires_after` (OpenAI's: an hour; lower only for tests).
    pub min_expiry: Duration,
    /// Longest `expires_after` (OpenAI's: 30 days).
    pub max_expiry: Duration,
    /// How often expired files are deleted.
    pub sweep_interval: Duration,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 512 << 20,
            tenant_quota_bytes: 10 << 30,
            min_expiry: Duration::from_secs(3600),
            max_expiry: Duration::from_secs(30 * 86_400),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// What a file is for, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Batch,
    FineTune,
    Assistants,
    UserData,
    Evals,
    Vision,
    /// A batch's output or error file: written by the server, never uploaded.
    BatchOutput,
}

impl Purpose {
    /// The purposes a client may upload.
    pub const ALL: [Purpose; 6] = [
        Purpose::Batch,
        Purpose::FineTune,
        Purpose::Assistants,
        Purpose::UserData,
        Purpose::Evals,
        Purpose::Vision,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Batch => "batch",
            Purpose::FineTune => "fine-tune",
            Purpose::Assistants => "assistants",
            Purpose::UserData => "user_data",
            Purpose::Evals => "evals",
            Purpose::Vision => "vision",
            Purpose::BatchOutput => "batch_output",
        }
    }

    /// An uploadable purpose by name; `None` for a name OpenAI does not define or one only
    /// the server writes.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Any purpose by name, the server's own (`batch_output`) too: for listing filters.
    pub fn parse_any(name: &str) -> Option<Self> {
        Self::parse(name).or((name == "batch_output").then_some(Purpose::BatchOutput))
    }

    /// Whether content of this purpose must be JSONL (requests of a batch, training examples).
    pub fn wants_jsonl(self) -> bool {
        matches!(self, Purpose::Batch | Purpose::FineTune)
    }
}

/// What a new file is, besides its bytes (validated by [`Files::create`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub filename: String,
    pub purpose: Purpose,
    /// Seconds after its creation it expires (`expires_after[seconds]`, anchored at
    /// `created_at`).
    pub expires_after: Option<u64>,
}

/// Which files to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub purpose: Option<Purpose>,
    pub limit: u32,
    pub ascending: bool,
    pub after: Option<String>,
}

/// Most files one listing returns (OpenAI's).
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// A tenant's files quota: its override, else the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub quota_bytes: i64,
    pub used_bytes: i64,
    /// Whether `quota_bytes` is the operator's override for this tenant.
    pub overridden: bool,
}

/// The Files API over one store and the hub's blob store. Cheap to clone.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    hub: hub::Hub,
    config: FilesConfig,
    staging: PathBuf,
}

impl Files {
    /// The hub whose blob store holds the files.
    pub fn hub(&self) -> &hub::Hub {
        &self.inner.hub
    }

    /// The Files API whose staging area is `data_dir/files/staging`: emptied here, since
    /// what a previous process left there is uploads it never finished.
    pub fn open(
        store: Arc<dyn Store>,
        hub: hub::Hub,
        data_dir: &Path,
        config: FilesConfig,
    ) -> Result<Self> {
        let staging = data_dir.join("files").join("staging");
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e.into());
            }
        }
        std::fs::create_dir_all(&staging)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                hub,
                config,
                staging,
            }),
        })
    }

    pub fn config(&self) -> &FilesConfig {
        &self.inner.config
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    fn default_quota(&self) -> i64 {
        i64::try_from(self.inner.config.tenant_quota_bytes).unwrap_or(i64::MAX)
    }

    /// The tenant's live file `id`.
    pub async fn get(&self, tenant_id: &str, id: &str) -> Result<FileRecord> {
        Ok(self.store().file(tenant_id, id, now()).await?)
    }

    /// The tenant's live file `id` and where its bytes are.
    pub async fn content(&self, tenant_id: &str, id: &str) -> Result<(FileRecord, PathBuf)> {
        let file = self.get(tenant_id, id).await?;
        let path = self.inner.hub.blobs().blob_path(&file.sha256)?;
        Ok((file, path))
    }

    /// A page of the tenant's live files.
    pub async fn list(&self, tenant_id: &str, listing: &Listing) -> Result<FilePage> {
        if !(1..=MAX_LIST_LIMIT).contains(&listing.limit) {
            return Err(FilesError::invalid(
                "limit",
                format!(
                    "Invalid 'limit': {}; expected 1 to {MAX_LIST_LIMIT}.",
                    listing.limit
                ),
            ));
        }
        let query = FileQuery {
            purpose: listing.purpose.map(|p| p.as_str().to_owned()),
            limit: i64::from(listing.limit),
            ascending: listing.ascending,
            after: listing.after.clone(),
        };
        self.store()
            .files(tenant_id, &query, now())
            .await
            .map_err(|e| match FilesError::from(e) {
                FilesError::NotFound(id) => FilesError::invalid(
                    "after",
                    format!("Invalid 'after': '{id}' is not one of your files."),
                ),
                other => other,
            })
    }

    /// Deletes the tenant's live file `id`, and its blob if nothing else names it.
    pub async fn delete(&self, tenant_id: &str, id: &str) -> Result<FileRecord> {
        let hold = self.inner.hub.hold_blobs().await;
        let removal = self.store().delete_file(tenant_id, id, now()).await?;
        self.remove_blobs(&hold, &removal).await;
        drop(hold);
        removal
            .files
            .into_iter()
            .next()
            .ok_or_else(|| FilesError::NotFound(id.to_owned()))
    }

    /// Deletes files expired by now, in batches, with the blobs nothing else names; how many.
    pub async fn sweep(&self) -> Result<usize> {
        const BATCH: i64 = 500;
        let mut deleted = 0;
        loop {
            let hold = self.inner.hub.hold_blobs().await;
            let removal = self.store().delete_expired_files(now(), BATCH).await?;
            self.remove_blobs(&hold, &removal).await;
            drop(hold);
            deleted += removal.files.len();
            if (removal.files.len() as i64) < BATCH {
                return Ok(deleted);
            }
        }
    }

    /// Deletes the files of blobs whose rows went; a failure is logged (the rows are gone,
    /// so the bytes are only unreachable space).
    async fn remove_blobs(&self, hold: &hub::BlobHold, removal: &FileRemoval) {
        if let Err(e) = self.inner.hub.remove_files(hold, &removal.blobs, &[]).await {
            tracing::error!(error = %e, "could not delete the blob of a deleted file");
        }
    }

    /// The tenant's quota and what its live files hold.
    pub async fn quota(&self, tenant_id: &str) -> Result<Quota> {
        let overridden = self.store().file_quota(tenant_id).await?;
        Ok(Quota {
            quota_bytes: overridden.unwrap_or_else(|| self.default_quota()),
            used_bytes: self.store().file_usage(tenant_id, now()).await?,
            overridden: overridden.is_some(),
        })
    }

    /// Sets (or with `None` removes) the tenant's quota override.
    pub async fn set_quota(&self, tenant_id: &str, quota_bytes: Option<u64>) -> Result<Quota> {
        let quota = quota_bytes
            .map(|q| {
                i64::try_from(q).map_err(|_| {
                    FilesError::invalid("quota_bytes", "Invalid 'quota_bytes': too large.")
                })
            })
            .transpose()?;
        self.store().set_file_quota(tenant_id, quota).await?;
        self.quota(tenant_id).await
    }

    /// Spawns the sweep: expired files are deleted now and every `sweep_interval`.
    pub fn spawn_sweep(&self) -> tokio::task::JoinHandle<()> {
        let files = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(files.inner.config.sweep_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match files.sweep().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "deleted expired files"),
                    Err(e) => tracing::warn!(error = %e, "could not sweep expired files"),
                }
            }
        })
    }
}

fn now() -> Timestamp {
    chrono::Utc::now()
}
