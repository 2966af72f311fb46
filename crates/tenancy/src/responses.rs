//! Stored responses of the Responses API, per tenant: a tenant reads and deletes only its own
//! (another tenant's id is not found, as if it did not exist); the admin key reaches all. Old
//! ones are swept after the retention period.

use std::sync::Arc;
use std::time::Duration;

use store::{Store, StoredResponse};

use crate::clock::Clock;
use crate::error::{Error, Result};

/// Stored responses over the store.
#[derive(Clone)]
pub struct Responses {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

/// A response to store: everything but its time, which the clock gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewResponse {
    pub id: String,
    pub tenant_id: Option<String>,
    pub model: String,
    pub previous_id: Option<String>,
    /// The response object, JSON text.
    pub response: String,
    /// This turn's input items, JSON text.
    pub input_items: String,
    /// The conversation through this response, JSON text.
    pub conversation: String,
}

impl Responses {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub async fn save(&self, new: NewResponse) -> Result<()> {
        let record = StoredResponse {
            id: new.id,
            tenant_id: new.tenant_id,
            model: new.model,
            previous_id: new.previous_id,
            response: new.response,
            input_items: new.input_items,
            conversation: new.conversation,
            created_at: self.clock.now(),
        };
        Ok(self.store.put_response(&record).await?)
    }

    /// The response `id` as `tenant` (`None`: the admin) may see it.
    pub async fn get(&self, tenant: Option<&str>, id: &str) -> Result<StoredResponse> {
        let found = match self.store.response(id).await {
            Ok(found) => found,
            Err(store::StoreError::NotFound { .. }) => return Err(not_found(id)),
            Err(err) => return Err(err.into()),
        };
        match tenant {
            Some(tenant) if found.tenant_id.as_deref() != Some(tenant) => Err(not_found(id)),
            _ => Ok(found),
        }
    }

    pub async fn delete(&self, tenant: Option<&str>, id: &str) -> Result<()> {
        self.get(tenant, id).await?;
        if self.store.delete_response(id).await? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// Deletes the responses older than `retention`; how many.
    pub async fn sweep(&self, retention: Duration) -> Result<u64> {
        let age = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let before = self
            .clock
            .now()
            .checked_sub_signed(age)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        Ok(self.store.delete_responses_before(before).await?)
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        message: format!("No response with id '{id}' found."),
    }
}
