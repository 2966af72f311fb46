//! The model hub: repositories `org/name` with immutable revisions over file trees, files
//! stored once by sha256 in the data directory, model cards parsed for search, public and
//! private repositories, download counts, and resumable uploads that become visible only in
//! a commit. Knows no HTTP server: the gateway renders the Hugging Face and ModelScope wire
//! formats over [`Hub`]. [`remote`] is the client side of those protocols (for `pull`) and of
//! Flywheel's upload API (for `push`).
//!
//! Metadata lives in the store ([`store::HubStore`]); bytes in [`blobs::BlobStore`]. A
//! revision names only blobs whose bytes were hashed and moved into place, so a failed or
//! partial upload can never be read through a revision.

pub mod blobs;
pub mod card;
pub mod commit;
mod error;
pub mod listing;
mod local;
pub mod path;
mod read;
pub mod remote;
mod write;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::Store;

pub use error::{ErrorKind, HubError, Result};
pub use local::LocalFile;
pub use read::{FileView, SearchQuery};
pub use store::hub::{CardSummary, Commit, Ref, RefKind, Repo, RepoSort, TreeEntry};
pub use store::Timestamp;
pub use write::{CommitRequest, FileOp, UploadState};

/// Limits and policy, from the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Largest file a repository may hold.
    pub max_file_bytes: u64,
    /// Largest body of one upload request.
    pub max_chunk_bytes: u64,
    /// Most files in one revision.
    pub max_files: usize,
    /// Whether public repositories may be read without a key. When not, a tenant key needs
    /// `hub:read` (or `hub:write`) to read them too.
    pub anonymous_reads: bool,
    /// The most one tenant may hold in the hub: the bytes of the blobs it uploaded plus the
    /// sizes its open uploads declared.
    pub tenant_quota_bytes: u64,
    /// The most unfinished uploads one tenant may have open at once.
    pub max_open_uploads: usize,
    /// Unfinished uploads untouched this long are removed.
    pub upload_ttl: Duration,
    /// Paces every file download to this many bytes per second (a test-only setting that
    /// makes interrupted downloads reproducible); `None` sends at full speed.
    pub serve_throttle_bytes_per_sec: Option<u64>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 256 << 30,
            max_chunk_bytes: 64 << 20,
            max_files: 10_000,
            anonymous_reads: true,
            tenant_quota_bytes: 1 << 40,
            max_open_uploads: 1000,
            upload_ttl: Duration::from_secs(7 * 24 * 3600),
            serve_throttle_bytes_per_sec: None,
        }
    }
}

/// Who is asking, as far as the hub cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Anonymous,
    Tenant {
        tenant_id: String,
        /// Shown as a commit's author.
        tenant_name: String,
        /// The key has `hub:read`.
        read: bool,
        /// The key has `hub:write`.
        write: bool,
    },
    /// The admin key: reads and writes everything.
    Admin,
}

impl Access {
    fn author(&self) -> String {
        match self {
            Access::Anonymous => "anonymous".into(),
            Access::Tenant { tenant_name, .. } => tenant_name.clone(),
            Access::Admin => "admin".into(),
        }
    }
}

/// The hub over one store and one data directory. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    blobs: blobs::BlobStore,
    config: HubConfig,
    /// Upload sessions with a chunk being written by this process.
    busy: Mutex<HashSet<String>>,
    /// Read-held while an upload finishes or a commit names blobs; write-held while blobs a
    /// removed tenant left unnamed are deleted ([`Hub::hold_blobs`]), so none is deleted
    /// between a blob's row being found or written and its file or tree entry being used.
    blob_gate: Arc<tokio::sync::RwLock<()>>,
}

/// Holds off every upload finishing and every commit in this process (see
/// [`Hub::hold_blobs`]) until dropped.
pub struct BlobHold(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>);

/// Keeps blobs from being deleted in this process while held (see [`Hub::use_blobs`]).
pub struct BlobUse(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>);

impl Hub {
    /// Opens the hub whose blobs live under `data_dir/hub`.
    pub fn open(store: Arc<dyn Store>, data_dir: &Path, config: HubConfig) -> Result<Self> {
        let blobs = blobs::BlobStore::open(data_dir.join("hub"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                config,
                busy: Mutex::new(HashSet::new()),
                blob_gate: Arc::new(tokio::sync::RwLock::new(())),
            }),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    pub fn blobs(&self) -> &blobs::BlobStore {
        &self.inner.blobs
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// Whether `access` may see `repo` (a private repo is visible to its tenant and admins;
    /// a public one to anyone who may read at all, see [`Hub::check_may_read`]).
    fn may_read(&self, access: &Access, repo: &Repo) -> bool {
        match access {
            Access::Admin => true,
            Access::Anonymous => !repo.private && self.inner.config.anonymous_reads,
            Access::Tenant {
                tenant_id,
                read,
                write,
                ..
            } => {
                let scoped = *read || *write;
                (!repo.private && (scoped || self.inner.config.anonymous_reads))
                    || (scoped && repo.owner_tenant_id.as_deref() == Some(tenant_id))
            }
        }
    }

    /// Refuses a caller who may read nothing at all: anonymous, or a key without `hub:read`
    /// or `hub:write`, when anonymous reads are off.
    fn check_may_read(&self, access: &Access) -> Result<()> {
        if self.inner.config.anonymous_reads {
            return Ok(());
        }
        match access {
            Access::Anonymous => Err(HubError::Unauthenticated),
            Access::Tenant {
                read: false,
                write: false,
                ..
            } => Err(HubError::Forbidden(
                "this API key lacks the 'hub:read' scope, and this server does not allow \
                 anonymous reads; ask an admin for a key with 'hub:read'"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Waits for uploads finishing and commits in progress in this process, and holds off new
    /// ones until the hold is dropped: take it before the store removes a tenant's hub rows
    /// (and the blobs nothing names any more), and keep it until [`Hub::remove_files`] has
    /// deleted their files, so no upload or commit can take up a blob in between.
    pub async fn hold_blobs(&self) -> BlobHold {
        BlobHold(self.inner.blob_gate.clone().write_owned().await)
    }

    /// Holds off [`Hub::hold_blobs`] (so every deletion of blobs) in this process until
    /// dropped, as the hub's own uploads and commits do: take it before putting bytes in place
    /// as a blob that may already exist, and keep it until the store names the blob, so a
    /// deletion cannot remove the blob in between (other users of the blob store, the Files
    /// API).
    pub async fn use_blobs(&self) -> BlobUse {
        BlobUse(self.inner.blob_gate.clone().read_owned().await)
    }

    /// Deletes the files of blobs and upload sessions the store removed (under `hold`).
    /// Files already gone are fine; it goes on past a failure and reports the first.
    pub async fn remove_files(
        &self,
        _hold: &BlobHold,
        blobs: &[String],
        uploads: &[String],
    ) -> Result<()> {
        let mut first = Ok(());
        for sha256 in blobs {
            if let Err(e) = self.inner.blobs.remove(sha256).await {
                tracing::error!(sha256 = %sha256, error = %e, "could not delete a removed blob");
                first = first.and(Err(e));
            }
        }
        for upload in uploads {
            if let Err(e) = self.inner.blobs.discard(upload).await {
                tracing::error!(upload = %upload, error = %e, "could not delete a removed upload's staging file");
                first = first.and(Err(e));
            }
        }
        first
    }

    /// Removes upload sessions untouched for longer than the configured TTL, with their
    /// staging files. Returns how many went.
    pub async fn clean_stale_uploads(&self) -> Result<usize> {
        let ttl = chrono::TimeDelta::from_std(self.inner.config.upload_ttl)
            .unwrap_or(chrono::TimeDelta::days(7));
        let stale = self.store().stale_uploads(chrono::Utc::now() - ttl).await?;
        for upload in &stale {
            self.inner.blobs.discard(&upload.id).await?;
            self.store().delete_upload(&upload.id).await?;
        }
        Ok(stale.len())
    }
}
