//! Tenants, orgs, keys and prices, on either database.

use async_trait::async_trait;

use super::{args, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::model::{ApiKey, LedgerKind, NewTenant, Org, Price, Tenant, TenantPatch, Timestamp};
use crate::rows;
use crate::TenantStore;

#[async_trait]
impl<D: Db> TenantStore for D {
    async fn create_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        let mut tx = self.write().await?;
        let sql = format!(
            "INSERT INTO tenants (id, name, created_at, free_tier_only, rpm, tpm, \
             grant_tokens_total) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
            rows::TENANT
        );
        let row = tx
            .fetch_one(
                &sql,
                &args![
                    &new.id,
                    &new.name,
                    new.created_at,
                    new.free_tier_only,
                    new.rpm,
                    new.tpm,
                    new.grant_tokens
                ],
            )
            .await
            .map_err(|e| {
                StoreError::unique(e, || format!("a tenant named '{}' exists", new.name))
            })?;
        if new.grant_tokens > 0 {
            tx.execute(
                "INSERT INTO ledger_entries (tenant_id, kind, tokens, amount, idempotency_key, \
                 created_at) VALUES ($1, $2, $3, 0, $1, $4)",
                &args![
                    &new.id,
                    LedgerKind::Grant.as_str(),
                    new.grant_tokens,
                    new.created_at
                ],
            )
            .await?;
        }
        let tenant = rows::tenant(&row)?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant(&self, id: &str) -> Result<Tenant> {
        let sql = format!("SELECT {} FROM tenants WHERE id = $1", rows::TENANT);
        let row = self.reader().fetch_optional(&sql, &args![id]).await?;
        rows::tenant(&row.ok_or_else(|| StoreError::not_found("tenant", id))?)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let sql = format!(
            "SELECT {} FROM tenants ORDER BY created_at, id",
            rows::TENANT
        );
        let all = self.reader().fetch_all(&sql, &[]).await?;
        all.iter().map(rows::tenant).collect()
    }

    async fn update_tenant(&self, id: &str, patch: &TenantPatch) -> Result<Tenant> {
        let sql = format!(
            "UPDATE tenants SET free_tier_only = COALESCE($2, free_tier_only), \
             disabled = COALESCE($3, disabled), \
             rpm = CASE WHEN $4 THEN $5 ELSE rpm END, \
             tpm = CASE WHEN $6 THEN $7 ELSE tpm END \
             WHERE id = $1 RETURNING {}",
            rows::TENANT
        );
        let args = args![
            id,
            patch.free_tier_only,
            patch.disabled,
            patch.rpm.is_some(),
            patch.rpm.flatten(),
            patch.tpm.is_some(),
            patch.tpm.flatten()
        ];
        let row = self.reader().fetch_optional(&sql, &args).await?;
        rows::tenant(&row.ok_or_else(|| StoreError::not_found("tenant", id))?)
    }

    async fn create_org(&self, org: &Org) -> Result<Org> {
        let sql = format!(
            "INSERT INTO orgs (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {}",
            rows::ORG
        );
        let args = args![&org.id, &org.tenant_id, &org.name, org.created_at];
        let row =
            self.reader().fetch_one(&sql, &args).await.map_err(|e| {
                StoreError::unique(e, || format!("the name '{}' is taken", org.name))
            })?;
        rows::org(&row)
    }

    async fn orgs(&self, tenant_id: &str) -> Result<Vec<Org>> {
        let sql = format!(
            "SELECT {} FROM orgs WHERE tenant_id = $1 ORDER BY name",
            rows::ORG
        );
        let all = self.reader().fetch_all(&sql, &args![tenant_id]).await?;
        all.iter().map(rows::org).collect()
    }

    async fn org_by_name(&self, name: &str) -> Result<Org> {
        let sql = format!("SELECT {} FROM orgs WHERE name = $1", rows::ORG);
        let row = self.reader().fetch_optional(&sql, &args![name]).await?;
        rows::org(&row.ok_or_else(|| StoreError::not_found("org", name))?)
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<ApiKey> {
        let sql = format!(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, models, rpm, \
             tpm, created_at, expires_at, revoked_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {}",
            rows::API_KEY
        );
        let args = args![
            &key.id,
            &key.tenant_id,
            &key.name,
            &key.prefix,
            &key.hash,
            &key.scopes,
            &key.models,
            key.rpm,
            key.tpm,
            key.created_at,
            key.expires_at,
            key.revoked_at,
            key.last_used_at
        ];
        let row = self
            .reader()
            .fetch_one(&sql, &args)
            .await
            .map_err(|e| StoreError::unique(e, || "key id or secret collision".into()))?;
        rows::api_key(&row)
    }

    async fn api_key(&self, id: &str) -> Result<ApiKey> {
        let sql = format!("SELECT {} FROM api_keys WHERE id = $1", rows::API_KEY);
        let row = self.reader().fetch_optional(&sql, &args![id]).await?;
        rows::api_key(&row.ok_or_else(|| StoreError::not_found("key", id))?)
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
            rows::API_KEY
        );
        let all = self.reader().fetch_all(&sql, &args![tenant_id]).await?;
        all.iter().map(rows::api_key).collect()
    }

    async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {} FROM api_keys WHERE prefix = $1", rows::API_KEY);
        let all = self.reader().fetch_all(&sql, &args![prefix]).await?;
        all.iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> Result<ApiKey> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
             RETURNING {}",
            rows::API_KEY
        );
        let row = self.reader().fetch_optional(&sql, &args![id, now]).await?;
        rows::api_key(&row.ok_or_else(|| StoreError::not_found("key", id))?)
    }

    async fn touch_api_key(&self, id: &str, now: Timestamp) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1",
                &args![id, now],
            )
            .await?;
        Ok(())
    }

    async fn put_price(&self, price: &Price) -> Result<Price> {
        let sql = format!(
            "INSERT INTO prices (served_model, input_per_million, output_per_million, \
             cached_input_per_million, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (served_model) DO UPDATE SET \
             input_per_million = excluded.input_per_million, \
             output_per_million = excluded.output_per_million, \
             cached_input_per_million = excluded.cached_input_per_million, \
             updated_at = excluded.updated_at RETURNING {}",
            rows::PRICE
        );
        let args = args![
            &price.served_model,
            price.rates.input_per_million,
            price.rates.output_per_million,
            price.rates.cached_input_per_million,
            price.updated_at
        ];
        let row = self.reader().fetch_one(&sql, &args).await?;
        rows::price(&row)
    }

    async fn price(&self, served_model: &str) -> Result<Option<Price>> {
        let sql = format!("SELECT {} FROM prices WHERE served_model = $1", rows::PRICE);
        let row = self
            .reader()
            .fetch_optional(&sql, &args![served_model])
            .await?;
        row.as_ref().map(rows::price).transpose()
    }

    async fn prices(&self) -> Result<Vec<Price>> {
        let sql = format!("SELECT {} FROM prices ORDER BY served_model", rows::PRICE);
        let all = self.reader().fetch_all(&sql, &[]).await?;
        all.iter().map(rows::price).collect()
    }
}
