//! Deployment specs, on either database.

use async_trait::async_trait;

use super::{args, Db, Exec};
use crate::deployments::{DeploymentRecord, DeploymentRecordStore};
use crate::error::Result;
use crate::model::Timestamp;
use crate::rows::Columns;

#[async_trait]
impl<D: Db> DeploymentRecordStore for D {
    async fn deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let rows = self
            .reader()
            .fetch_all(
                "SELECT name, spec, created_at, updated_at FROM deployments ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DeploymentRecord {
                    name: row.text("name")?,
                    spec: row.text("spec")?,
                    created_at: row.time("created_at")?,
                    updated_at: row.time("updated_at")?,
                })
            })
            .collect()
    }

    async fn put_deployment(&self, name: &str, spec: &str, now: Timestamp) -> Result<()> {
        self.reader()
            .execute(
                "INSERT INTO deployments (name, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
                 spec = excluded.spec, updated_at = excluded.updated_at",
                &args![name, spec, now],
            )
            .await?;
        Ok(())
    }

    async fn delete_deployment(&self, name: &str) -> Result<()> {
        self.reader()
            .execute("DELETE FROM deployments WHERE name = $1", &args![name])
            .await?;
        Ok(())
    }
}
