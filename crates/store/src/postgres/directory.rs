//! Tenants, orgs, keys and prices on PostgreSQL.

use async_trait::async_trait;

use super::rows;
use super::PostgresStore;
use crate::error::{Result, StoreError};
use crate::model::{ApiKey, LedgerKind, NewTenant, Org, Price, Tenant, TenantPatch, Timestamp};
use crate::TenantStore;

#[async_trait]
impl TenantStore for PostgresStore {
    async fn create_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO tenants (id, name, created_at, free_tier_only, rpm, tpm, \
             grant_tokens_total) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
            rows::TENANT
        );
        let row = sqlx::query(&sql)
            .bind(&new.id)
            .bind(&new.name)
            .bind(new.created_at)
            .bind(new.free_tier_only)
            .bind(new.rpm)
            .bind(new.tpm)
            .bind(new.grant_tokens)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique(e, || format!("a tenant named '{}' exists", new.name))
            })?;
        if new.grant_tokens > 0 {
            sqlx::query(
                "INSERT INTO ledger_entries (tenant_id, kind, tokens, amount, idempotency_key, \
                 created_at) VALUES ($1, $2, $3, 0, $1, $4)",
            )
            .bind(&new.id)
            .bind(LedgerKind::Grant.as_str())
            .bind(new.grant_tokens)
            .bind(new.created_at)
            .execute(&mut *tx)
            .await?;
        }
        let tenant = rows::tenant(&row)?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant(&self, id: &str) -> Result<Tenant> {
        let sql = format!("SELECT {} FROM tenants WHERE id = $1", rows::TENANT);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::tenant(&row.ok_or_else(|| StoreError::not_found("tenant", id))?)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let sql = format!(
            "SELECT {} FROM tenants ORDER BY created_at, id",
            rows::TENANT
        );
        let all = sqlx::query(&sql).fetch_all(&self.pool).await?;
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
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(patch.free_tier_only)
            .bind(patch.disabled)
            .bind(patch.rpm.is_some())
            .bind(patch.rpm.flatten())
            .bind(patch.tpm.is_some())
            .bind(patch.tpm.flatten())
            .fetch_optional(&self.pool)
            .await?;
        rows::tenant(&row.ok_or_else(|| StoreError::not_found("tenant", id))?)
    }

    async fn create_org(&self, org: &Org) -> Result<Org> {
        let sql = format!(
            "INSERT INTO orgs (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {}",
            rows::ORG
        );
        let row = sqlx::query(&sql)
            .bind(&org.id)
            .bind(&org.tenant_id)
            .bind(&org.name)
            .bind(org.created_at)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::unique(e, || format!("the name '{}' is taken", org.name)))?;
        rows::org(&row)
    }

    async fn orgs(&self, tenant_id: &str) -> Result<Vec<Org>> {
        let sql = format!(
            "SELECT {} FROM orgs WHERE tenant_id = $1 ORDER BY name",
            rows::ORG
        );
        let all = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        all.iter().map(rows::org).collect()
    }

    async fn org_by_name(&self, name: &str) -> Result<Org> {
        let sql = format!("SELECT {} FROM orgs WHERE name = $1", rows::ORG);
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        rows::org(&row.ok_or_else(|| StoreError::not_found("org", name))?)
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<ApiKey> {
        let sql = format!(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, models, rpm, \
             tpm, created_at, expires_at, revoked_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {}",
            rows::API_KEY
        );
        let row = sqlx::query(&sql)
            .bind(&key.id)
            .bind(&key.tenant_id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.hash)
            .bind(&key.scopes)
            .bind(&key.models)
            .bind(key.rpm)
            .bind(key.tpm)
            .bind(key.created_at)
            .bind(key.expires_at)
            .bind(key.revoked_at)
            .bind(key.last_used_at)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::unique(e, || "key id or secret collision".into()))?;
        rows::api_key(&row)
    }

    async fn api_key(&self, id: &str) -> Result<ApiKey> {
        let sql = format!("SELECT {} FROM api_keys WHERE id = $1", rows::API_KEY);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::api_key(&row.ok_or_else(|| StoreError::not_found("key", id))?)
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
            rows::API_KEY
        );
        let all = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        all.iter().map(rows::api_key).collect()
    }

    async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {} FROM api_keys WHERE prefix = $1", rows::API_KEY);
        let all = sqlx::query(&sql).bind(prefix).fetch_all(&self.pool).await?;
        all.iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> Result<ApiKey> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
             RETURNING {}",
            rows::API_KEY
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        rows::api_key(&row.ok_or_else(|| StoreError::not_found("key", id))?)
    }

    async fn touch_api_key(&self, id: &str, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
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
        let row = sqlx::query(&sql)
            .bind(&price.served_model)
            .bind(price.rates.input_per_million)
            .bind(price.rates.output_per_million)
            .bind(price.rates.cached_input_per_million)
            .bind(price.updated_at)
            .fetch_one(&self.pool)
            .await?;
        rows::price(&row)
    }

    async fn price(&self, served_model: &str) -> Result<Option<Price>> {
        let sql = format!("SELECT {} FROM prices WHERE served_model = $1", rows::PRICE);
        let row = sqlx::query(&sql)
            .bind(served_model)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::price).transpose()
    }

    async fn prices(&self) -> Result<Vec<Price>> {
        let sql = format!("SELECT {} FROM prices ORDER BY served_model", rows::PRICE);
        let all = sqlx::query(&sql).fetch_all(&self.pool).await?;
        all.iter().map(rows::price).collect()
    }
}
