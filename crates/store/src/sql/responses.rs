//! Stored responses of the Responses API, on either database.

use async_trait::async_trait;

use super::{args, Db, Exec};
use crate::error::{Result, StoreError};
use crate::model::Timestamp;
use crate::responses::{ResponseStore, StoredResponse};
use crate::rows::Columns;

#[async_trait]
impl<D: Db> ResponseStore for D {
    async fn put_response(&self, r: &StoredResponse) -> Result<()> {
        self.reader()
            .execute(
                "INSERT INTO responses (id, tenant_id, model, previous_id, response, \
                 input_items, conversation, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &args![
                    &r.id,
                    &r.tenant_id,
                    &r.model,
                    &r.previous_id,
                    &r.response,
                    &r.input_items,
                    &r.conversation,
                    r.created_at
                ],
            )
            .await
            .map_err(|e| StoreError::unique(e, || format!("response '{}' already exists", r.id)))?;
        Ok(())
    }

    async fn response(&self, id: &str) -> Result<StoredResponse> {
        let row = self
            .reader()
            .fetch_optional(
                "SELECT id, tenant_id, model, previous_id, response, input_items, conversation, \
                 created_at FROM responses WHERE id = $1",
                &args![id],
            )
            .await?
            .ok_or_else(|| StoreError::not_found("response", id))?;
        Ok(StoredResponse {
            id: row.text("id")?,
            tenant_id: row.opt_text("tenant_id")?,
            model: row.text("model")?,
            previous_id: row.opt_text("previous_id")?,
            response: row.text("response")?,
            input_items: row.text("input_items")?,
            conversation: row.text("conversation")?,
            created_at: row.time("created_at")?,
        })
    }

    async fn delete_response(&self, id: &str) -> Result<bool> {
        let deleted = self
            .reader()
            .execute("DELETE FROM responses WHERE id = $1", &args![id])
            .await?;
        Ok(deleted > 0)
    }

    async fn delete_responses_before(&self, before: Timestamp) -> Result<u64> {
        Ok(self
            .reader()
            .execute(
                "DELETE FROM responses WHERE created_at < $1",
                &args![before],
            )
            .await?)
    }
}
