//! RPM and TPM per key and per tenant, over a sliding 60-second window kept in the shared
//! store, so every process on one database enforces one limit.
//!
//! A request is counted in two steps, because its token count is known only once its prompt
//! is tokenized, and nothing should be done for a request over its RPM:
//! 1. [`Limiter::admit_request`], before any work: one request against the RPM windows (a
//!    request refused here is not counted), refused too if a TPM window is already full;
//! 2. [`Limiter::admit_tokens`], once the worst case is known: its tokens against the TPM
//!    windows. At settlement [`Limiter::correct`] gives back what it did not use.
//!
//! A request counted in step 1 stays counted whatever happens to it later (refused by the
//! backend, by TPM or by the ledger); a refused reservation should be corrected to 0 tokens.
//! Requests and tokens are kept under separate subjects (`key:ID` and `key:ID:tokens`, the same
//! for tenants), so step 2 adds tokens without counting the request again.

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

/// A request counted against its RPM windows by [`Limiter::admit_request`], whose tokens
/// are yet to be counted with [`Limiter::admit_tokens`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The TPM windows of the key and the tenant that have a TPM limit.
    token_windows: Vec<LimitSubject>,
}

impl Counted {
    /// A request outside the RPM/TPM windows (a batch line: batches have their own limits,
    /// the lines each batch runs at once), whose tokens count nowhere.
    pub fn outside_windows() -> Self {
        Self {
            token_windows: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct Limiter {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

/// The subject name of a key's request window.
pub fn key_subject(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// The subject name of a tenant's request window.
pub fn tenant_subject(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

/// The subject name of a request window's token window.
fn tokens_subject(subject: &str) -> String {
    format!("{subject}:tokens")
}

impl Limiter {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Counts one request against the key's and the tenant's RPM, both or neither, in one store
    /// transaction, before anything is done for it. Over a limit, or with a TPM window already
    /// full: `RateLimited` with the seconds until the window has room, and nothing counted.
    /// Without limits nothing is written.
    pub async fn admit_request(&self, key: Option<&ApiKey>, tenant: &Tenant) -> Result<Counted> {
        let mut windows = Vec::with_capacity(4);
        let mut token_windows = Vec::with_capacity(2);
        let owners = [
            key.map(|k| (key_subject(&k.id), k.rpm, k.tpm)),
            Some((tenant_subject(&tenant.id), tenant.rpm, tenant.tpm)),
        ];
        for (subject, rpm, tpm) in owners.into_iter().flatten() {
            if tpm.is_some() {
                token_windows.push(LimitSubject {
                    subject: tokens_subject(&subject),
                    rpm: None,
                    tpm,
                });
            }
            if rpm.is_some() {
                windows.push(LimitSubject {
                    subject,
                    rpm,
                    tpm: None,
                });
            }
        }
        // A full token window refuses the request now (with 0 tokens, only a window already
        // over its limit does), rather than after the backend tokenized its prompt.
        windows.extend(token_windows.iter().cloned());
        if !windows.is_empty() {
            self.store.admit(&windows, 0, self.clock.now()).await?;
        }
        Ok(Counted { token_windows })
    }

    /// Counts a [`Counted`] request's worst-case tokens against its TPM windows, all or none.
    /// Over a limit: `RateLimited`; a request larger than a TPM limit: `Invalid`
    /// (`max_tokens`). Without TPM limits nothing is written.
    pub async fn admit_tokens(
        &self,
        counted: &Counted,
        worst_case_tokens: i64,
    ) -> Result<Admission> {
        if worst_case_tokens < 0 {
            return Err(Error::invalid("worst_case_tokens", "must be 0 or more"));
        }
        let now = self.clock.now();
        let second = if counted.token_windows.is_empty() {
            now.timestamp()
        } else {
            self.store
                .admit(&counted.token_windows, worst_case_tokens, now)
                .await?
        };
        Ok(Admission {
            subjects: counted
                .token_windows
                .iter()
                .map(|s| s.subject.clone())
                .collect(),
            second,
            tokens: worst_case_tokens,
        })
    }

    /// [`Limiter::admit_request`] then [`Limiter::admit_tokens`], for a request whose worst
    /// case is known up front. Refused by TPM, the request still counts against RPM.
    pub async fn admit(
        &self,
        key: Option<&ApiKey>,
        tenant: &Tenant,
        worst_case_tokens: i64,
    ) -> Result<Admission> {
        if worst_case_tokens < 0 {
            return Err(Error::invalid("worst_case_tokens", "must be 0 or more"));
        }
        let counted = self.admit_request(key, tenant).await?;
        self.admit_tokens(&counted, worst_case_tokens).await
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
