//! Deployment specs on SQLite.

use async_trait::async_trait;
use sqlx::Row;

use super::rows::ts;
use super::SqliteStore;
use crate::deployments::{DeploymentRecord, DeploymentRecordStore};
use crate::error::{Result, StoreError};
use crate::model::Timestamp;

fn parse_time(text: &str) -> Result<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::Corrupt(format!("time '{text}': {e}")))
}

#[async_trait]
impl DeploymentRecordStore for SqliteStore {
    async fn deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let rows =
            sqlx::query("SELECT name, spec, created_at, updated_at FROM deployments ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(DeploymentRecord {
                    name: row.try_get("name")?,
                    spec: row.try_get("spec")?,
                    created_at: parse_time(&row.try_get::<String, _>("created_at")?)?,
                    updated_at: parse_time(&row.try_get::<String, _>("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn put_deployment(&self, name: &str, spec: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO deployments (name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(spec)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_deployment(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM deployments WHERE name = ?1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
