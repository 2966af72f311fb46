//! Blob reachability and per-tenant hub usage, on either database (the statements are in
//! [`crate::hub_access`]).

use async_trait::async_trait;

use super::{args, Db, Exec, WriteTx};
use crate::error::Result;
use crate::hub::UploadSession;
use crate::hub_access::{
    HubAccessStore, HubQuota, HubUsage, UploadAdmission, INSERT_UPLOAD_SQL, REACHABLE_SQL,
    RECORD_UPLOADER_SQL, USAGE_SQL,
};
use crate::model::Timestamp;
use crate::rows::Columns;

fn usage_row(row: &impl Columns) -> Result<HubUsage> {
    Ok(HubUsage {
        stored_bytes: row.int("stored_bytes")?,
        declared_bytes: row.int("declared_bytes")?,
        open_uploads: row.int("open_uploads")?,
    })
}

#[async_trait]
impl<D: Db> HubAccessStore for D {
    async fn create_upload_within(
        &self,
        u: &UploadSession,
        tenant_id: &str,
        quota: HubQuota,
    ) -> Result<UploadAdmission> {
        let mut tx = self.write().await?;
        // One tenant's upload starts take turns, so concurrent ones cannot overshoot together.
        if let Some(lock) = D::LOCK_KEY {
            let key = format!("hub_quota:{tenant_id}");
            tx.execute(lock, &args![key.as_str()]).await?;
        }
        let usage = usage_row(&tx.fetch_one(USAGE_SQL, &args![tenant_id]).await?)?;
        if !quota.admits(usage, u.size) {
            return Ok(UploadAdmission::OverQuota(usage));
        }
        tx.execute(INSERT_UPLOAD_SQL, &super::hub::upload_args(u))
            .await?;
        tx.commit().await?;
        Ok(UploadAdmission::Created(u.clone()))
    }

    async fn hub_usage(&self, tenant_id: &str) -> Result<HubUsage> {
        usage_row(
            &self
                .reader()
                .fetch_one(USAGE_SQL, &args![tenant_id])
                .await?,
        )
    }

    async fn record_blob_uploader(
        &self,
        sha256: &str,
        tenant_id: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.reader()
            .execute(RECORD_UPLOADER_SQL, &args![sha256, tenant_id, now])
            .await?;
        Ok(())
    }

    async fn blob_reachable(&self, sha256: &str, tenant_id: &str) -> Result<bool> {
        let row = self
            .reader()
            .fetch_one(REACHABLE_SQL, &args![sha256, tenant_id])
            .await?;
        Ok(row.int("reachable")? == 1)
    }
}
