//! Each tenant's budget-webhook signing secret, sealed at rest.
//!
//! The secret signs the alerts Flywheel sends (HMAC), so it must be readable by the server but
//! by no one who reads the database or a backup: it is stored sealed by a [`SecretSeal`] (the
//! server's secret key; `mcp::Sealer` implements it with AES-256-GCM), bound to its tenant, so
//! a sealed value copied to another tenant's row does not open. A secret stored before sealing
//! existed (plain `whsec_…`) still signs, and [`reseal_webhook_secrets`] seals it (at start)
//! or moves every secret to a new key (`flywheel rotate-secret-key`).

use std::sync::Arc;

use rand::RngCore;
use store::Store;

use crate::error::{Error, Result};
use crate::Budgets;

/// Seals secrets kept at rest; tenancy stores only what [`SecretSeal::seal`] returns.
pub trait SecretSeal: Send + Sync {
    /// `plain` sealed for the row `bound_to`.
    fn seal(&self, plain: &str, bound_to: &str) -> std::result::Result<String, String>;
    /// The plain text of `sealed`, sealed for `bound_to` (with the current or the previous key).
    fn open(&self, sealed: &str, bound_to: &str) -> std::result::Result<String, String>;
}

/// The prefix of every secret, and so of one stored before sealing existed.
const PLAIN_PREFIX: &str = "whsec_";

fn bound_to(tenant_id: &str) -> String {
    format!("webhook_secret:{tenant_id}")
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PLAIN_PREFIX}{hex}")
}

/// A secret that cannot be sealed or opened: logged (it names the key to use), a 500 outside.
fn sealed_error(e: String) -> Error {
    tracing::error!(error = %e, "a budget webhook secret");
    Error::Internal
}

/// The plain secret of a stored one.
fn open(seal: Option<&dyn SecretSeal>, tenant_id: &str, stored: &str) -> Result<String> {
    if stored.starts_with(PLAIN_PREFIX) {
        return Ok(stored.to_owned());
    }
    match seal {
        Some(seal) => seal
            .open(stored, &bound_to(tenant_id))
            .map_err(sealed_error),
        None => Err(sealed_error(
            "it is sealed, and this process has no secret key to open it".into(),
        )),
    }
}

impl Budgets {
    /// Seals the webhook secrets this service stores and opens.
    pub fn with_seal(mut self, seal: Arc<dyn SecretSeal>) -> Self {
        self.seal = Some(seal);
        self
    }

    /// What is stored for `secret`.
    fn stored(&self, tenant_id: &str, secret: &str) -> Result<String> {
        match &self.seal {
            Some(seal) => seal
                .seal(secret, &bound_to(tenant_id))
                .map_err(sealed_error),
            None => Ok(secret.to_owned()),
        }
    }

    /// The tenant's webhook signing secret, if it has one.
    pub async fn webhook_secret(&self, tenant_id: &str) -> Result<Option<String>> {
        match self.store.webhook_secret(tenant_id).await? {
            Some(stored) => open(self.seal.as_deref(), tenant_id, &stored).map(Some),
            None => Ok(None),
        }
    }

    /// Creates the tenant's webhook signing secret if it has none; returns it only when it
    /// was created now (it is shown once).
    pub async fn ensure_webhook_secret(&self, tenant_id: &str) -> Result<Option<String>> {
        let secret = new_secret();
        let stored = self.stored(tenant_id, &secret)?;
        let created = self
            .store
            .put_webhook_secret(tenant_id, &stored, self.clock.now(), false)
            .await?;
        Ok(created.then_some(secret))
    }

    /// Replaces the tenant's webhook signing secret with a new one, returned (shown once).
    pub async fn rotate_webhook_secret(&self, tenant_id: &str) -> Result<String> {
        let secret = new_secret();
        let stored = self.stored(tenant_id, &secret)?;
        self.store
            .put_webhook_secret(tenant_id, &stored, self.clock.now(), true)
            .await?;
        Ok(secret)
    }
}

/// Seals every stored webhook secret under `seal`'s current key: with `all`, every one (a key
/// rotation: opened with the current or previous key, sealed anew); without, only those stored
/// before sealing existed. A secret rotated meanwhile is left as it is. How many were written.
pub async fn reseal_webhook_secrets(
    store: &dyn Store,
    seal: &dyn SecretSeal,
    all: bool,
) -> Result<usize> {
    let mut changed = 0;
    for (tenant_id, stored) in store.webhook_secrets().await? {
        let plain = stored.starts_with(PLAIN_PREFIX);
        if !plain && !all {
            continue;
        }
        let secret = open(Some(seal), &tenant_id, &stored)?;
        let sealed = seal
            .seal(&secret, &bound_to(&tenant_id))
            .map_err(sealed_error)?;
        if store
            .reseal_webhook_secret(&tenant_id, &stored, &sealed)
            .await?
        {
            changed += 1;
        }
    }
    Ok(changed)
}
