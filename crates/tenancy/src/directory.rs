//! Tenants, orgs and keys: creation, listing, revocation and verification of presented keys.

use std::sync::Arc;

use chrono::TimeDelta;
use store::{ApiKey, NewTenant, Org, Store, Tenant, TenantPatch, Timestamp};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::{self, Principal, Scope};

/// How stale `last_used_at` may get before a verification refreshes it (saves a write per
/// request).
const LAST_USED_RESOLUTION: TimeDelta = TimeDelta::seconds(60);
const MAX_NAME_LEN: usize = 128;
const MAX_ORG_NAME_LEN: usize = 64;

/// What an admin asks for when creating a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: String,
    pub free_tier_only: bool,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    /// Overrides the configured free grant for this tenant.
    pub grant_tokens: Option<i64>,
}

/// What an admin asks for when creating a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// `None`: [`Scope::DEFAULT`].
    pub scopes: Option<Vec<Scope>>,
    /// Served model names the key may call; `None` allows all.
    pub models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub expires_at: Option<Timestamp>,
}

/// A new key with its secret, which is never available again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

#[derive(Clone)]
pub struct Directory {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    free_grant_tokens: i64,
}

fn new_id(kind: &str) -> String {
    format!("{kind}_{}", uuid::Uuid::new_v4().simple())
}

fn validate_name(param: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(
            param,
            format!("must be 1 to {MAX_NAME_LEN} characters, not blank"),
        ));
    }
    Ok(())
}

/// Org names are hub namespaces: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64 characters.
fn validate_org_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || name.len() > MAX_ORG_NAME_LEN {
        return Err(Error::invalid(
            "name",
            format!(
                "an org name is letters, digits, '.', '_' and '-', starts with a letter or \
                 digit, and has at most {MAX_ORG_NAME_LEN} characters"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn validate_limit(param: &str, limit: Option<i64>) -> Result<()> {
    match limit {
        Some(n) if n <= 0 => Err(Error::invalid(
            param,
            "must be a positive integer (omit it for no limit)",
        )),
        _ => Ok(()),
    }
}

impl Directory {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, free_grant_tokens: i64) -> Self {
        Self {
            store,
            clock,
            free_grant_tokens,
        }
    }

    pub async fn create_tenant(&self, spec: &TenantSpec) -> Result<Tenant> {
        validate_name("name", &spec.name)?;
        validate_limit("rpm", spec.rpm)?;
        validate_limit("tpm", spec.tpm)?;
        let grant_tokens = spec.grant_tokens.unwrap_or(self.free_grant_tokens);
        if grant_tokens < 0 {
            return Err(Error::invalid("grant_tokens", "must be 0 or more"));
        }
        let new = NewTenant {
            id: new_id("ten"),
            name: spec.name.clone(),
            created_at: self.clock.now(),
            free_tier_only: spec.free_tier_only,
            rpm: spec.rpm,
            tpm: spec.tpm,
            grant_tokens,
        };
        Ok(self.store.create_tenant(&new).await?)
    }

    /// A tenant, deleted or not (a deleted one has `deleted_at`).
    pub async fn tenant(&self, id: &str) -> Result<Tenant> {
        Ok(self.store.tenant(id).await?)
    }

    /// A tenant that is not deleted: `NotFound`, or `Conflict` for a deleted one (it can get
    /// no new keys, orgs, grants or money, and cannot be changed).
    pub async fn active_tenant(&self, id: &str) -> Result<Tenant> {
        let tenant = self.store.tenant(id).await?;
        match tenant.deleted_at {
            Some(at) => Err(crate::deletion::deleted(id, at)),
            None => Ok(tenant),
        }
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.store.tenants().await?)
    }

    pub async fn update_tenant(&self, id: &str, patch: &TenantPatch) -> Result<Tenant> {
        validate_limit("rpm", patch.rpm.flatten())?;
        validate_limit("tpm", patch.tpm.flatten())?;
        self.active_tenant(id).await?;
        Ok(self.store.update_tenant(id, patch).await?)
    }

    pub async fn create_org(&self, tenant_id: &str, name: &str) -> Result<Org> {
        validate_org_name(name)?;
        self.active_tenant(tenant_id).await?;
        let org = Org {
            id: new_id("org"),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            created_at: self.clock.now(),
        };
        Ok(self.store.create_org(&org).await?)
    }

    pub async fn orgs(&self, tenant_id: &str) -> Result<Vec<Org>> {
        Ok(self.store.orgs(tenant_id).await?)
    }

    pub async fn org(&self, name: &str) -> Result<Org> {
        Ok(self.store.org_by_name(name).await?)
    }

    /// Creates a key for the tenant and returns its secret, once.
    pub async fn create_key(&self, tenant_id: &str, spec: &KeySpec) -> Result<CreatedKey> {
        self.create_key_with(tenant_id, spec, keys::mint()).await
    }

    /// [`Self::create_key`] with a given secret (a derived one: the console's playground key).
    pub(crate) async fn create_key_with(
        &self,
        tenant_id: &str,
        spec: &KeySpec,
        secret: keys::Secret,
    ) -> Result<CreatedKey> {
        validate_name("name", &spec.name)?;
        validate_limit("rpm", spec.rpm)?;
        validate_limit("tpm", spec.tpm)?;
        let now = self.clock.now();
        if spec.expires_at.is_some_and(|t| t <= now) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let mut scopes = spec
            .scopes
            .clone()
            .unwrap_or_else(|| Scope::DEFAULT.to_vec());
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(Error::invalid("scopes", "must name at least one scope"));
        }
        if let Some(models) = &spec.models {
            if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
                return Err(Error::invalid(
                    "models",
                    "must list served model names (omit it to allow all models)",
                ));
            }
        }
        self.active_tenant(tenant_id).await?;
        let key = ApiKey {
            id: new_id("key"),
            tenant_id: tenant_id.to_owned(),
            name: spec.name.clone(),
            prefix: secret.prefix,
            hash: secret.hash,
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            models: spec.models.clone(),
            rpm: spec.rpm,
            tpm: spec.tpm,
            created_at: now,
            expires_at: spec.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let key = self.store.create_api_key(&key).await?;
        Ok(CreatedKey {
            key,
            secret: secret.text,
        })
    }

    /// The tenant's keys (prefixes and metadata; secrets are not kept).
    pub async fn keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        Ok(self.store.api_keys(tenant_id).await?)
    }

    /// A key, if it belongs to `tenant_id`; another tenant's key is `NotFound`.
    pub async fn key_of(&self, tenant_id: &str, key_id: &str) -> Result<ApiKey> {
        match self.store.api_key(key_id).await {
            Ok(key) if key.tenant_id == tenant_id => Ok(key),
            Ok(_) | Err(store::StoreError::NotFound { .. }) => Err(Error::NotFound {
                message: format!("key '{key_id}' not found"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Any tenant's key (admin).
    pub async fn key(&self, key_id: &str) -> Result<ApiKey> {
        Ok(self.store.api_key(key_id).await?)
    }

    /// Revokes a key at once (admin).
    pub async fn revoke_key(&self, key_id: &str) -> Result<ApiKey> {
        Ok(self.store.revoke_api_key(key_id, self.clock.now()).await?)
    }

    /// Resolves a presented bearer key. Unknown, malformed, revoked or expired keys and keys of
    /// disabled tenants are all `InvalidApiKey`, without saying which.
    pub async fn verify(&self, presented: &str) -> Result<Principal> {
        let prefix = keys::presented_prefix(presented).ok_or(Error::InvalidApiKey)?;
        let hash = keys::hash_hex(presented);
        let candidates = self.store.api_keys_by_prefix(prefix).await?;
        let mut found = None;
        for key in candidates {
            // Every candidate is compared, so timing does not depend on which one matches.
            if keys::hashes_match(&key.hash, &hash) {
                found = Some(key);
            }
        }
        let key = found.ok_or(Error::InvalidApiKey)?;
        let now = self.clock.now();
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|t| t <= now) {
            return Err(Error::InvalidApiKey);
        }
        let tenant = self.store.tenant(&key.tenant_id).await?;
        if tenant.disabled {
            return Err(Error::InvalidApiKey);
        }
        let stale = key
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION);
        let mut key = key;
        if stale {
            if let Err(e) = self.store.touch_api_key(&key.id, now).await {
                tracing::warn!(key_id = %key.id, error = %e, "could not record key use");
            } else {
                key.last_used_at = Some(now);
            }
        }
        Ok(Principal { key, tenant })
    }
}
