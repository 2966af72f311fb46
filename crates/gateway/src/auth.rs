//! Who is calling, resolved by extractors before a handler runs, so a handler cannot forget
//! to check.
//!
//! A bearer key is either the bootstrap admin key (every scope, every tenant) or a tenant key,
//! verified against the store by [`tenancy::Directory::verify`]. The extractors work in any
//! router whose state yields an [`Authenticator`] through [`FromRef`], so other HTTP crates
//! (the hub) use the same rules:
//! - [`Caller`]: a key is required (401 without one or with a bad one);
//! - [`MaybeCaller`]: no key is fine (anonymous), a bad key is still a 401;
//! - [`Admin`]: the admin key is required (401 without a key, 403 for a tenant key).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{header, request::Parts};
use tenancy::{Directory, Principal, Scope};

use crate::error::{ApiError, Code};

/// Resolves presented keys. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    admin_key: Arc<str>,
    directory: Directory,
}

impl Authenticator {
    pub fn new(admin_key: impl Into<Arc<str>>, directory: Directory) -> Self {
        Self {
            admin_key: admin_key.into(),
            directory,
        }
    }

    /// Whether `presented` is the admin key.
    pub fn is_admin_key(&self, presented: &str) -> bool {
        same_secret(presented, &self.admin_key)
    }

    /// The caller a presented key stands for.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, ApiError> {
        if self.is_admin_key(presented) {
            return Ok(Caller::Admin);
        }
        match self.directory.verify(presented).await {
            Ok(principal) => Ok(Caller::Tenant(Box::new(principal))),
            Err(tenancy::Error::InvalidApiKey) => Err(ApiError::new(
                Code::InvalidApiKey,
                "Incorrect API key provided. Check the key, or ask your administrator for a \
                 new one if it was revoked or has expired.",
            )),
            Err(err) => Err(ApiError::from_tenancy(err)),
        }
    }
}

/// The key a request presents: its bearer token, else its `x-api-key` header (Anthropic's
/// clients send that), if it sent one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let from_authorization = || {
        let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    };
    from_authorization().or_else(|| {
        let value = parts.headers.get("x-api-key")?.to_str().ok()?.trim();
        (!value.is_empty()).then_some(value)
    })
}

/// Compares without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn missing_key() -> ApiError {
    ApiError::new(
        Code::InvalidApiKey,
        "You didn't provide an API key. Send it in an 'Authorization: Bearer KEY' header (or \
         'x-api-key: KEY').",
    )
}

/// A verified caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The bootstrap admin key: every scope, every tenant.
    Admin,
    /// A tenant's key.
    Tenant(Box<Principal>),
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// The tenant key's principal; `None` for the admin.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(principal) => Some(principal),
        }
    }

    /// The calling tenant's id; `None` for the admin.
    pub fn tenant_id(&self) -> Option<&str> {
        self.principal().map(|p| p.tenant.id.as_str())
    }

    /// 403 `permission_denied` unless the caller has `scope` (the admin has all).
    pub(crate) fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(principal) => principal.require(scope).map_err(ApiError::from_tenancy),
        }
    }

    /// Whether the caller may act for `tenant_id`: the admin, or that tenant's own key.
    pub fn may_act_for(&self, tenant_id: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(principal) => principal.tenant.id == tenant_id,
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let presented = bearer(parts).ok_or_else(missing_key)?;
        Authenticator::from_ref(state).authenticate(presented).await
    }
}

/// A caller whose key may run inference (the `inference` scope; 403 otherwise), checked
/// before the handler runs, so a generating route cannot forget it.
#[derive(Debug, Clone)]
pub struct Inference(pub Caller);

impl<S> FromRequestParts<S> for Inference
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        scoped(parts, state, Scope::Inference).await.map(Inference)
    }
}

/// A caller whose key may use MCP services (the `mcp` scope; 403 otherwise): the registry,
/// the `/mcp` endpoint and its call log.
#[derive(Debug, Clone)]
pub struct McpUser(pub Caller);

impl<S> FromRequestParts<S> for McpUser
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        scoped(parts, state, Scope::Mcp).await.map(McpUser)
    }
}

async fn scoped<S>(parts: &mut Parts, state: &S, scope: Scope) -> Result<Caller, ApiError>
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    let caller = Caller::from_request_parts(parts, state).await?;
    caller.require(scope)?;
    Ok(caller)
}

/// A caller who may be anonymous (public hub reads). A key that is sent must be valid.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl<S> FromRequestParts<S> for MaybeCaller
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match bearer(parts) {
            None => Ok(MaybeCaller(None)),
            Some(presented) => Authenticator::from_ref(state)
                .authenticate(presented)
                .await
                .map(|caller| MaybeCaller(Some(caller))),
        }
    }
}

/// The admin key (admin routes under `/admin/v1/`).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let presented = bearer(parts).ok_or_else(missing_key)?;
        let auth = Authenticator::from_ref(state);
        if auth.is_admin_key(presented) {
            return Ok(Admin);
        }
        // A valid tenant key is a 403, anything else a 401.
        auth.authenticate(presented).await?;
        Err(ApiError::new(
            Code::PermissionDenied,
            "This route needs the admin key; tenant keys cannot use /admin/v1/.",
        ))
    }
}

/// Access to `GET /metrics`: the admin key, unless metrics are configured open.
#[derive(Debug, Clone, Copy)]
pub struct MetricsReader;

impl FromRequestParts<crate::AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, ApiError> {
        if state.metrics_open() {
            return Ok(MetricsReader);
        }
        match bearer(parts) {
            Some(key) if Authenticator::from_ref(state).is_admin_key(key) => Ok(MetricsReader),
            Some(_) => Err(ApiError::new(
                Code::InvalidApiKey,
                "Incorrect API key provided. /metrics needs the admin key.",
            )),
            None => Err(ApiError::new(
                Code::InvalidApiKey,
                "You didn't provide an API key. /metrics needs the admin key in an 'Authorization: Bearer KEY' header.",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
