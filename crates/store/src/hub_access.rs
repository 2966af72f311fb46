//! Who may reach which hub blob, and what each tenant holds: the part of the hub's metadata
//! that keeps tenants apart although blobs are stored once for everyone.
//!
//! A tenant may name a blob without sending its bytes only if it uploaded those bytes itself
//! (`hub_blob_uploaders`) or a repository it may read holds them; knowing a hash is not
//! enough. A tenant holds the blobs it uploaded plus the sizes its open uploads declared, and
//! a new upload is admitted only within its quota, decided and written in one transaction.
//! The SQL is the same on both databases (apart from the spelling of "public").

use async_trait::async_trait;

use crate::error::Result;
use crate::hub::UploadSession;
use crate::model::Timestamp;

/// What one tenant holds in the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubUsage {
    /// Bytes of the blobs it uploaded.
    pub stored_bytes: i64,
    /// Sizes its open uploads declared.
    pub declared_bytes: i64,
    pub open_uploads: i64,
}

impl HubUsage {
    /// Stored plus declared bytes.
    pub fn bytes(&self) -> i64 {
        self.stored_bytes.saturating_add(self.declared_bytes)
    }
}

/// What one tenant may hold in the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubQuota {
    /// Stored plus declared bytes.
    pub max_bytes: i64,
    pub max_open_uploads: i64,
}

impl HubQuota {
    /// Whether `usage` plus one more upload of `size` bytes fits.
    pub fn admits(&self, usage: HubUsage, size: i64) -> bool {
        usage.open_uploads < self.max_open_uploads
            && usage.bytes().saturating_add(size) <= self.max_bytes
    }
}

/// The answer to [`HubAccessStore::create_upload_within`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadAdmission {
    Created(UploadSession),
    /// The upload would take the tenant past its quota; nothing was written.
    OverQuota(HubUsage),
}

/// Blob reachability and per-tenant hub usage. Every method is one statement or one
/// transaction.
#[async_trait]
pub trait HubAccessStore: Send + Sync + 'static {
    /// Creates `upload` for `tenant_id` only if the tenant's usage with it stays within
    /// `quota`, deciding and writing in one transaction that serialises with the tenant's
    /// other upload starts (so concurrent starts cannot overshoot together).
    async fn create_upload_within(
        &self,
        upload: &UploadSession,
        tenant_id: &str,
        quota: HubQuota,
    ) -> Result<UploadAdmission>;
    /// What `tenant_id` holds: uploaded blobs and open uploads in its repositories.
    async fn hub_usage(&self, tenant_id: &str) -> Result<HubUsage>;
    /// Records that `tenant_id` uploaded the bytes of blob `sha256` (again: nothing changes).
    async fn record_blob_uploader(
        &self,
        sha256: &str,
        tenant_id: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Whether `tenant_id` may name blob `sha256` without uploading it: it uploaded the bytes
    /// itself, or a repository it may read (public, or its own) holds them in some revision.
    async fn blob_reachable(&self, sha256: &str, tenant_id: &str) -> Result<bool>;
}

/// [`HubAccessStore::hub_usage`]; `$1` is the tenant.
pub(crate) const USAGE_SQL: &str = "SELECT \
    (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM hub_blob_uploaders u \
        JOIN hub_blobs b ON b.sha256 = u.sha256 WHERE u.tenant_id = $1) AS stored_bytes, \
    (SELECT CAST(COALESCE(SUM(s.size), 0) AS BIGINT) FROM hub_uploads s \
        JOIN hub_repos r ON r.id = s.repo_id WHERE r.owner_tenant_id = $1) AS declared_bytes, \
    (SELECT CAST(COUNT(*) AS BIGINT) FROM hub_uploads s \
        JOIN hub_repos r ON r.id = s.repo_id WHERE r.owner_tenant_id = $1) AS open_uploads";

/// Inserts an upload session (the columns of `hub_uploads`, `$1…$7`).
pub(crate) const INSERT_UPLOAD_SQL: &str = "INSERT INTO hub_uploads \
    (id, repo_id, sha256, size, received, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Records an uploader; `$1` sha256, `$2` tenant, `$3` time.
pub(crate) const RECORD_UPLOADER_SQL: &str = "INSERT INTO hub_blob_uploaders \
    (sha256, tenant_id, created_at) VALUES ($1, $2, $3) \
    ON CONFLICT (tenant_id, sha256) DO NOTHING";

/// [`HubAccessStore::blob_reachable`]; `$1` is the sha256, `$2` the tenant.
pub(crate) const REACHABLE_SQL: &str = "SELECT CAST(CASE WHEN EXISTS (SELECT 1 \
        FROM hub_blob_uploaders u WHERE u.sha256 = $1 AND u.tenant_id = $2) \
    OR EXISTS (SELECT 1 FROM hub_tree_entries e JOIN hub_repos r ON r.id = e.repo_id \
        WHERE e.sha256 = $1 AND (NOT r.private OR r.owner_tenant_id = $2)) \
    THEN 1 ELSE 0 END AS BIGINT) AS reachable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_bytes_and_open_uploads() {
        let q = HubQuota {
            max_bytes: 100,
            max_open_uploads: 2,
        };
        let u = |stored, declared, open| HubUsage {
            stored_bytes: stored,
            declared_bytes: declared,
            open_uploads: open,
        };
        assert!(q.admits(u(50, 0, 0), 50));
        assert!(!q.admits(u(50, 1, 1), 50));
        assert!(!q.admits(u(0, 0, 2), 1));
        assert!(!q.admits(u(i64::MAX, 0, 0), i64::MAX), "no overflow");
    }
}
