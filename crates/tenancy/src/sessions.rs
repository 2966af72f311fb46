//! Console sessions, kept in the database: the cookie carries a random secret, the store its
//! SHA-256. A session ends when signed out, when idle longer than its idle limit (short for the
//! operator's), at its absolute expiry, or when its member is removed (the row goes with the
//! member). Every state-changing request carries the session's CSRF token.
//!
//! Failed sign-ins are counted per account and per address over [`FAILURE_WINDOW`]: past
//! [`SLOW_AFTER`] failures each attempt waits first, past [`REFUSE_AFTER`] it is refused until
//! the window has passed, even with the right password.

use chrono::TimeDelta;
use rand::distr::{Alphanumeric, SampleString};
use store::{SessionRecord, Tenant, Timestamp};

use crate::error::{Error, Result};
use crate::keys::{self, Scope};
use crate::members::{verify_password, Action, Member, Members};
use crate::{CreatedKey, KeySpec};

/// Idle limit of a member's session.
pub const MEMBER_IDLE: TimeDelta = TimeDelta::hours(2);
/// Idle limit of the operator's (admin key) session.
pub const OPERATOR_IDLE: TimeDelta = TimeDelta::minutes(15);
/// No session outlives this, however active.
pub const SESSION_LIFETIME: TimeDelta = TimeDelta::hours(12);
/// Failed sign-ins are counted over this window.
pub const FAILURE_WINDOW: TimeDelta = TimeDelta::minutes(15);
/// Per account (per address: four times as many).
pub const SLOW_AFTER: i64 = 3;
pub const REFUSE_AFTER: i64 = 10;
const ADDRESS_FACTOR: i64 = 4;
/// Sessions ended longer ago than this are deleted by [`Members::sweep`].
pub const ENDED_SESSIONS_KEPT: TimeDelta = TimeDelta::days(7);
/// A last-seen time older than this is written on the next request (not on every one).
const TOUCH_RESOLUTION: TimeDelta = TimeDelta::seconds(30);
/// Argon2id of a random password, verified when the email is unknown so that an unknown
/// account takes as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                          2q5Vq8UfUxKxKBXWZ4JUfbUF4ycpVw6AvwuCL0CmG6A";

/// Who a session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The operator, signed in with the admin key.
    Operator,
    /// A member of `tenant`.
    Member {
        member: Box<Member>,
        tenant: Box<Tenant>,
    },
}

/// A live session, resolved from its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie's secret.
    pub id: String,
    pub csrf_token: String,
    pub subject: Subject,
    pub expires_at: Timestamp,
    pub playground_key_id: Option<String>,
    /// The cookie's secret, held only while the session is resolved, to derive its
    /// playground key (never stored, never printed).
    secret: CookieSecret,
}

/// A session cookie's secret in memory; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
struct CookieSecret(String);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(…)")
    }
}

/// What the playground's key is derived under.
const PLAYGROUND_LABEL: &str = "console playground";

impl Session {
    /// The member's tenant; `None` for the operator.
    pub fn tenant_id(&self) -> Option<&str> {
        match &self.subject {
            Subject::Operator => None,
            Subject::Member { tenant, .. } => Some(&tenant.id),
        }
    }

    /// Whether the CSRF token presented with a state-changing request is this session's.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        keys::hashes_match(&self.csrf_token, presented)
    }

    /// The member, if `action` is allowed to it: the operator may not act as a member (its
    /// pages are the admin ones), a member only as its role allows.
    pub fn member_for(&self, action: Action) -> Result<(&Member, &Tenant)> {
        match &self.subject {
            Subject::Operator => Err(Error::denied(
                "the operator's session has no tenant; use the operator pages",
            )),
            Subject::Member { member, tenant } => {
                member.role.require(action)?;
                Ok((member.as_ref(), tenant.as_ref()))
            }
        }
    }
}

/// A session just started, with the cookie's secret (never stored).
#[derive(Debug, Clone)]
pub struct StartedSession {
    pub secret: String,
    pub session: Session,
}

/// Why a sign-in did not start a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("the email or password is wrong")]
    WrongCredentials,
    #[error("too many failed sign-ins; try again in {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
    #[error(transparent)]
    Other(#[from] Error),
}

fn account_subject(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn address_subject(address: &str) -> String {
    format!("address:{address}")
}

impl Members {
    /// Counts `subjects`' recent failures: refuses, or waits, as the policy says.
    async fn throttle(&self, account: &str, address: &str) -> Result<(), SignInError> {
        let since = self.clock.now() - FAILURE_WINDOW;
        let by_account = self
            .store
            .sign_in_failures(account, since)
            .await
            .map_err(Error::from)?;
        let by_address = self
            .store
            .sign_in_failures(address, since)
            .await
            .map_err(Error::from)?;
        if by_account >= REFUSE_AFTER || by_address >= REFUSE_AFTER * ADDRESS_FACTOR {
            return Err(SignInError::TooManyFailures {
                retry_after_secs: FAILURE_WINDOW.num_seconds().unsigned_abs(),
            });
        }
        if by_account >= SLOW_AFTER || by_address >= SLOW_AFTER * ADDRESS_FACTOR {
            tokio::time::sleep(self.sign_in_delay).await;
        }
        Ok(())
    }

    async fn failed(&self, subjects: &[String]) -> SignInError {
        if let Err(e) = self
            .store
            .record_sign_in_failure(subjects, self.clock.now())
            .await
        {
            return SignInError::Other(e.into());
        }
        SignInError::WrongCredentials
    }

    /// Signs a member in with email and password, from `address` (the client's).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        address: &str,
    ) -> Result<StartedSession, SignInError> {
        let (account, address) = (account_subject(email), address_subject(address));
        self.throttle(&account, &address).await?;
        let record = self
            .store
            .member_by_email(&email.trim().to_lowercase())
            .await
            .map_err(Error::from)?;
        let hash = record.as_ref().and_then(|r| r.password_hash.clone());
        let has_password = hash.is_some();
        let matches = verify_password(password, hash.as_deref().unwrap_or(DUMMY_HASH)).await;
        let record = match record {
            Some(record) if matches && has_password => record,
            _ => return Err(self.failed(&[account, address]).await),
        };
        self.store
            .clear_sign_in_failures(&account)
            .await
            .map_err(Error::from)?;
        let member = Member::try_from(record)?;
        let tenant = self.directory.tenant(&member.tenant_id).await?;
        if tenant.disabled || tenant.deleted_at.is_some() {
            return Err(Error::denied("this tenant is disabled; ask the operator").into());
        }
        Ok(self
            .start(Subject::Member {
                member: Box::new(member),
                tenant: Box::new(tenant),
            })
            .await?)
    }

    /// Signs the operator in, once the caller has compared the admin key: `key_matched`
    /// says whether it did. Failures count per address like a member's.
    pub async fn sign_in_operator(
        &self,
        key_matched: bool,
        address: &str,
    ) -> Result<StartedSession, SignInError> {
        let (account, address) = ("account:operator".to_owned(), address_subject(address));
        self.throttle(&account, &address).await?;
        if !key_matched {
            return Err(self.failed(&[account, address]).await);
        }
        Ok(self.start(Subject::Operator).await?)
    }

    async fn start(&self, subject: Subject) -> Result<StartedSession> {
        let now = self.clock.now();
        let secret = Alphanumeric.sample_string(&mut rand::rng(), 43);
        let idle = match subject {
            Subject::Operator => OPERATOR_IDLE,
            Subject::Member { .. } => MEMBER_IDLE,
        };
        let record = SessionRecord {
            id: keys::hash_hex(&secret),
            member_id: match &subject {
                Subject::Operator => None,
                Subject::Member { member, .. } => Some(member.id.clone()),
            },
            csrf_token: Alphanumeric.sample_string(&mut rand::rng(), 43),
            created_at: now,
            last_seen_at: now,
            idle_seconds: idle.num_seconds(),
            expires_at: now + SESSION_LIFETIME,
            playground_key_id: None,
            ended_at: None,
        };
        self.store.create_session(&record).await?;
        Ok(StartedSession {
            session: Session {
                id: record.id,
                csrf_token: record.csrf_token,
                subject,
                expires_at: record.expires_at,
                playground_key_id: None,
                secret: CookieSecret(secret.clone()),
            },
            secret,
        })
    }

    /// The live session a cookie's secret names: `None` if unknown, ended, idle too long,
    /// expired, its member removed or its tenant disabled (an expired one is ended here).
    pub async fn session(&self, secret: &str) -> Result<Option<Session>> {
        let Some(record) = self.store.session(&keys::hash_hex(secret)).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let idle_limit = TimeDelta::seconds(record.idle_seconds);
        if now - record.last_seen_at >= idle_limit || now >= record.expires_at {
            self.end_record(&record).await?;
            return Ok(None);
        }
        let subject = match &record.member_id {
            None => Subject::Operator,
            Some(member_id) => {
                let member = match self.store.member(member_id).await {
                    Ok(m) => Member::try_from(m)?,
                    Err(store::StoreError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let tenant = self.directory.tenant(&member.tenant_id).await?;
                if tenant.disabled || tenant.deleted_at.is_some() {
                    return Ok(None);
                }
                Subject::Member {
                    member: Box::new(member),
                    tenant: Box::new(tenant),
                }
            }
        };
        if now - record.last_seen_at >= TOUCH_RESOLUTION {
            self.store.touch_session(&record.id, now).await?;
        }
        Ok(Some(Session {
            id: record.id,
            csrf_token: record.csrf_token,
            subject,
            expires_at: record.expires_at,
            playground_key_id: record.playground_key_id,
            secret: CookieSecret(secret.to_owned()),
        }))
    }

    async fn end_record(&self, record: &SessionRecord) -> Result<()> {
        if let Some(key) = &record.playground_key_id {
            self.directory.revoke_key(key).await?;
        }
        Ok(self.store.end_session(&record.id, self.clock.now()).await?)
    }

    /// Housekeeping, run periodically: ends the sessions idle past their limit or past their
    /// expiry that no request came back to end (revoking their playground keys), and deletes
    /// failed sign-ins older than the counting window and sessions ended more than
    /// [`ENDED_SESSIONS_KEPT`] ago. Returns (sessions ended, failures deleted, sessions deleted).
    pub async fn sweep(&self) -> Result<(u64, u64, u64)> {
        let now = self.clock.now();
        let shortest_idle = OPERATOR_IDLE.min(MEMBER_IDLE);
        let mut ended = 0;
        for record in self.store.sessions_seen_before(now - shortest_idle).await? {
            let idle = TimeDelta::seconds(record.idle_seconds);
            if now - record.last_seen_at >= idle || now >= record.expires_at {
                self.end_record(&record).await?;
                ended += 1;
            }
        }
        let (failures, deleted) = self
            .store
            .sweep_sign_ins(now - FAILURE_WINDOW, now - ENDED_SESSIONS_KEPT)
            .await?;
        Ok((ended, failures, deleted))
    }

    /// Signs out: the session ends and its playground key is revoked (the one the database
    /// holds now: a key minted after `session` was resolved goes too).
    pub async fn end_session(&self, session: &Session) -> Result<()> {
        match self.store.session(&session.id).await? {
            Some(record) => self.end_record(&record).await,
            None => Ok(()),
        }
    }

    /// The API key of the member's playground in this session, with only the `inference`
    /// scope, expiring with the session. The playground calls the public API with it, so its
    /// requests are admitted and billed like any other key's. Its secret is derived from the
    /// session's cookie secret, so one session has one playground key however often the page
    /// loads: it is minted on the first call and shown again after (a session's earlier key
    /// that is not the derived one, or no longer works, is revoked and replaced).
    pub async fn playground_key(&self, session: &Session) -> Result<CreatedKey> {
        let (member, tenant) = session.member_for(Action::Infer)?;
        let derived = keys::derive(&session.secret.0, PLAYGROUND_LABEL);
        if let Some(old) = &session.playground_key_id {
            let now = self.clock.now();
            match self.directory.key_of(&tenant.id, old).await {
                Ok(key)
                    if keys::hashes_match(&key.hash, &derived.hash)
                        && key.revoked_at.is_none()
                        && key.expires_at.is_none_or(|t| t > now) =>
                {
                    return Ok(CreatedKey {
                        key,
                        secret: derived.text,
                    });
                }
                Ok(key) if key.revoked_at.is_some() => {}
                Ok(_) => {
                    self.directory.revoke_key(old).await?;
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let spec = KeySpec {
            name: format!("playground: {}", member.email),
            scopes: Some(vec![Scope::Inference]),
            expires_at: Some(session.expires_at),
            ..KeySpec::default()
        };
        let created = self
            .directory
            .create_key_with(&tenant.id, &spec, derived)
            .await?;
        self.store
            .set_playground_key(&session.id, &created.key.id)
            .await?;
        Ok(created)
    }
}
