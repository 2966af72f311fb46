//! Blob reachability and per-tenant hub usage on SQLite (the SQL is shared, see
//! [`crate::hub_access`]).

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::rows::ts;
use super::SqliteStore;
use crate::error::Result;
use crate::hub::UploadSession;
use crate::hub_access::{
    reachable_sql, HubAccessStore, HubQuota, HubUsage, UploadAdmission, INSERT_UPLOAD_SQL,
    RECORD_UPLOADER_SQL, USAGE_SQL,
};
use crate::model::Timestamp;

fn usage_row(row: &SqliteRow) -> Result<HubUsage> {
    Ok(HubUsage {
        stored_bytes: row.try_get("stored_bytes")?,
        declared_bytes: row.try_get("declared_bytes")?,
        open_uploads: row.try_get("open_uploads")?,
    })
}

#[async_trait]
impl HubAccessStore for SqliteStore {
    async fn create_upload_within(
        &self,
        u: &UploadSession,
        tenant_id: &str,
        quota: HubQuota,
    ) -> Result<UploadAdmission> {
        let mut tx = self.write().await?;
        let row = sqlx::query(USAGE_SQL)
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await?;
        let usage = usage_row(&row)?;
        if !quota.admits(usage, u.size) {
            return Ok(UploadAdmission::OverQuota(usage));
        }
        sqlx::query(INSERT_UPLOAD_SQL)
            .bind(&u.id)
            .bind(&u.repo_id)
            .bind(&u.sha256)
            .bind(u.size)
            .bind(u.received)
            .bind(ts(u.created_at))
            .bind(ts(u.updated_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(UploadAdmission::Created(u.clone()))
    }

    async fn hub_usage(&self, tenant_id: &str) -> Result<HubUsage> {
        let row = sqlx::query(USAGE_SQL)
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        usage_row(&row)
    }

    async fn record_blob_uploader(
        &self,
        sha256: &str,
        tenant_id: &str,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(RECORD_UPLOADER_SQL)
            .bind(sha256)
            .bind(tenant_id)
            .bind(ts(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn blob_reachable(&self, sha256: &str, tenant_id: &str) -> Result<bool> {
        let row = sqlx::query(&reachable_sql("r.private = 0"))
            .bind(sha256)
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i32, _>("reachable")? == 1)
    }
}
