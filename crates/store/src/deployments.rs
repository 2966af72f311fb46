//! What the control plane persists: one record per deployment, its spec as JSON text. The
//! `control` crate owns the spec's shape; the store only keeps it, keyed by served name.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// A stored deployment spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    /// The served name (unique).
    pub name: String,
    /// The spec, as JSON text.
    pub spec: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Deployment specs across restarts.
#[async_trait]
pub trait DeploymentRecordStore: Send + Sync + 'static {
    /// Every stored deployment, by name.
    async fn deployments(&self) -> Result<Vec<DeploymentRecord>>;
    /// Inserts the spec under `name`, or replaces it (keeping `created_at`).
    async fn put_deployment(&self, name: &str, spec: &str, now: Timestamp) -> Result<()>;
    /// Removes the record; removing a missing one is not an error.
    async fn delete_deployment(&self, name: &str) -> Result<()>;
}
