//! The Files API's records: a tenant's uploaded files, each naming the hub blob that holds its
//! bytes (`hub_blobs`; blobs are shared with hub repositories and with other files, so a blob
//! goes only once nothing names it), and per-tenant quota overrides. Policy (ids, purposes,
//! limits, expiry bounds) is the `files` crate's; the store keeps rows and decides, inside
//! its transactions, what must be decided there: whether an upload fits its tenant's quota,
//! and whether a blob is still named.

use async_trait::async_trait;

use crate::error::Result;
use crate::hub::Blob;
use crate::model::Timestamp;

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// `file-…`, unique.
    pub id: String,
    pub tenant_id: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: i64,
    /// The blob holding its bytes.
    pub sha256: String,
    pub created_at: Timestamp,
    /// After this it is gone for its tenant (listings, reads, deletes), and the sweep removes
    /// it; `None`: kept until deleted.
    pub expires_at: Option<Timestamp>,
}

/// Which of a tenant's files to list, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileQuery {
    /// Only files of this purpose.
    pub purpose: Option<String>,
    /// At most this many (the store reads one more to tell whether more follow).
    pub limit: i64,
    /// Oldest first (`created_at`, then id); newest first otherwise.
    pub ascending: bool,
    /// Only files after this one of the tenant's, in the chosen order. An id that is not one
    /// of the tenant's live files is `NotFound`.
    pub after: Option<String>,
}

/// A page of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    pub files: Vec<FileRecord>,
    pub has_more: bool,
}

/// What [`FileStore::put_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePut {
    Stored,
    /// The tenant's live files already hold `used` bytes and the file would take it past
    /// `quota`: nothing was written.
    OverQuota {
        used: i64,
        quota: i64,
    },
}

/// Files removed, and the blobs that went with them because nothing else names them (their
/// files on disk are the caller's to delete, while no upload can take them up again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRemoval {
    pub files: Vec<FileRecord>,
    /// sha256 of the blobs whose rows were deleted.
    pub blobs: Vec<String>,
}

/// A tenant's files.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Records `file` and, if the store does not have it yet, its `blob` (whose bytes the
    /// caller has put in place), if the tenant's live files (unexpired at `file.created_at`)
    /// plus this one stay within its quota: its override, else `default_quota`. One
    /// transaction that serialises with the tenant's other uploads. `NotFound` for an unknown
    /// or deleted tenant; a taken id is `Conflict`.
    async fn put_file(&self, file: &FileRecord, blob: &Blob, default_quota: i64)
        -> Result<FilePut>;
    /// The tenant's file `id` if it is live at `now`; `NotFound` otherwise (missing, another
    /// tenant's, or expired: all alike).
    async fn file(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<FileRecord>;
    /// The tenant's files live at `now`, by `query`.
    async fn files(&self, tenant_id: &str, query: &FileQuery, now: Timestamp) -> Result<FilePage>;
    /// Deletes the tenant's file `id` (live at `now`) and its blob if nothing else names it.
    /// `NotFound` like [`FileStore::file`].
    async fn delete_file(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<FileRemoval>;
    /// Deletes at most `limit` files (of any tenant) expired at `now`, oldest expiry first,
    /// and the blobs nothing names any more.
    async fn delete_expired_files(&self, now: Timestamp, limit: i64) -> Result<FileRemoval>;
    /// Deletes blob `sha256`'s row if no file, repository revision or uploader names it;
    /// whether the store no longer has it (deleted now, or never there): then its bytes may
    /// go. For bytes put in place by an upload that was then refused.
    async fn release_blob(&self, sha256: &str) -> Result<bool>;
    /// Bytes the tenant's live files hold at `now`.
    async fn file_usage(&self, tenant_id: &str, now: Timestamp) -> Result<i64>;
    /// The tenant's quota override, if the operator set one.
    async fn file_quota(&self, tenant_id: &str) -> Result<Option<i64>>;
    /// Sets (`Some`) or removes (`None`) the tenant's quota override. `NotFound` for an
    /// unknown tenant.
    async fn set_file_quota(&self, tenant_id: &str, quota: Option<i64>) -> Result<()>;
}

/// A blob is unnamed when no file, repository revision or uploader names it: `{sha}` is the
/// SQL expression of its sha256.
pub(crate) fn unnamed_blob(sha: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = {sha}) \
         AND NOT EXISTS (SELECT 1 FROM hub_tree_entries e WHERE e.sha256 = {sha}) \
         AND NOT EXISTS (SELECT 1 FROM hub_blob_uploaders u WHERE u.sha256 = {sha})"
    )
}
