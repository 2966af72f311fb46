//! Deleting a tenant, in the order the serving path needs: first disable it and revoke its
//! keys (no new request is admitted or authenticated), then its running requests end and are
//! settled (the caller ends this process's through `serving`, and [`crate::Ledger::close_open`]
//! settles what is left), then [`Directory::remove`] removes its data in one transaction
//! (`store::removal` says what goes and what stays) and marks it deleted.

use store::{Removal, Timestamp};

use crate::directory::Directory;
use crate::error::{Error, Result};

/// The refusal for anything that would change a deleted tenant.
pub(crate) fn deleted(tenant_id: &str, at: Timestamp) -> Error {
    Error::Conflict {
        message: format!(
            "tenant '{tenant_id}' was deleted at {}; it cannot be changed, topped up or given \
             keys (its ledger is kept: GET /admin/v1/tenants/{tenant_id})",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    }
}

impl Directory {
    /// What deleting the tenant would remove now (a dry run). `NotFound`, or `Conflict` for a
    /// tenant already deleted.
    pub async fn removal_plan(&self, tenant_id: &str) -> Result<Removal> {
        Ok(self.store.tenant_removal(tenant_id).await?)
    }

    /// Disables the tenant and revokes its keys, at once: the next request with one of them
    /// is refused as an invalid key. Returns the keys revoked.
    pub async fn disable_for_removal(&self, tenant_id: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .disable_for_removal(tenant_id, self.clock.now())
            .await?)
    }

    /// Removes the tenant's data and marks it deleted (see the module docs); lists what went.
    /// The caller deletes the files of the removed hub blobs and uploads.
    pub async fn remove(&self, tenant_id: &str) -> Result<Removal> {
        Ok(self
            .store
            .remove_tenant(tenant_id, self.clock.now())
            .await?)
    }

    /// Overwrites what deleted rows left in the database's files, where that can be done
    /// online; whether it was (see `store::RemovalStore::scrub`).
    pub async fn scrub(&self) -> Result<bool> {
        Ok(self.store.scrub().await?)
    }
}
