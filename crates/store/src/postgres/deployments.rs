//! Deployment specs on PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::PostgresStore;
use crate::deployments::{DeploymentRecord, DeploymentRecordStore};
use crate::error::Result;
use crate::model::Timestamp;

#[async_trait]
impl DeploymentRecordStore for PostgresStore {
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
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn put_deployment(&self, name: &str, spec: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO deployments (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, updated_at = EXCLUDED.updated_at",
        )
        .bind(name)
        .bind(spec)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_deployment(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM deployments WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
