//! RPM and TPM per key and per tenant, over a sliding 60-second window kept in the shared
//! store, so every process on one database enforces one limit.
//!
//! A request is admitted with its worst-case tokens ([`Limiter::admit`]); at settlement
//! [`Limiter::correct`] gives back what it did not use. A refused reservation should be
//! corrected to 0 tokens; it still counts as a request.

use std::sync::Arc;

use store::{ApiKey, LimitSubject, Store, Tenant};

use crate::clock::Clock;
use crate::error::{Error, Result};

/// An admitted request's place in the window, for [`Limiter::correct`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    subjects: Vec<String>,
    second: i64,
    tokens: i64,
}

impl Admission {
    /// The worst-case tokens counted at admission.
    pub fn tokens(&self) -> i64 {
        self.tokens
    }
}

#[derive(Clone)]
pub struct Limiter {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

/// The subject name of a key's window.
pub fn key_subject(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// The subject name of a tenant's window.
pub fn tenant_subject(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

impl Limiter {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Counts one request of `worst_case_tokens` against the key's and the tenant's limits,
    /// both or neither, in one store transaction. Over a limit: `RateLimited` with the seconds
    /// until the window has room; a request larger than a TPM limit: `Invalid` (`max_tokens`).
    /// Without limits nothing is written.
    pub async fn admit(
        &self,
        key: Option<&ApiKey>,
        tenant: &Tenant,
        worst_case_tokens: i64,
    ) -> Result<Admission> {
        if worst_case_tokens < 0 {
            return Err(Error::invalid("max_tokens", "must be 0 or more"));
        }
        let mut subjects = Vec::with_capacity(2);
        if let Some(key) = key.filter(|k| k.rpm.is_some() || k.tpm.is_some()) {
            subjects.push(LimitSubject {
                subject: key_subject(&key.id),
                rpm: key.rpm,
                tpm: key.tpm,
            });
        }
        if tenant.rpm.is_some() || tenant.tpm.is_some() {
            subjects.push(LimitSubject {
                subject: tenant_subject(&tenant.id),
                rpm: tenant.rpm,
                tpm: tenant.tpm,
            });
        }
        let now = self.clock.now();
        let second = if subjects.is_empty() {
            now.timestamp()
        } else {
            self.store.admit(&subjects, worst_case_tokens, now).await?
        };
        Ok(Admission {
            subjects: subjects.into_iter().map(|s| s.subject).collect(),
            second,
            tokens: worst_case_tokens,
        })
    }

    /// Replaces the worst case counted at admission with the tokens actually used.
    pub async fn correct(&self, admission: &Admission, used_tokens: i64) -> Result<()> {
        let delta = admission.tokens - used_tokens.max(0);
        if admission.subjects.is_empty() || delta <= 0 {
            return Ok(());
        }
        Ok(self
            .store
            .correct_tokens(&admission.subjects, admission.second, delta)
            .await?)
    }
}
