//! A tenant's members: people with an email, an argon2id password and a role, who use the web
//! console. Owners (or the operator) add them, with a password or with an invite link whose
//! token sets it; removing a member ends its sessions at once (`sessions.rs`).
//!
//! What a role may do is [`Role::allows`]: the console asks it before every action, and the
//! actions themselves are the same domain calls the API makes (keys through
//! [`crate::Directory`], usage through [`crate::UsageReports`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::TimeDelta;
use rand::distr::{Alphanumeric, SampleString};
use store::{MemberRecord, Store, Timestamp};

use crate::clock::Clock;
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::keys;

/// How long an invite link stays valid.
pub const INVITE_VALID_FOR: TimeDelta = TimeDelta::days(7);
const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_BYTES: usize = 512;
const MAX_EMAIL_LEN: usize = 254;

/// A member's role in its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything a developer may, and the tenant's members.
    Owner,
    /// Keys, the playground and usage.
    Developer,
    /// Reads only.
    Viewer,
}

/// What a member may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The account, usage, key listing and models.
    Read,
    /// Create and revoke the tenant's API keys.
    ManageKeys,
    /// Run inference (the playground), as a key with the `inference` scope does.
    Infer,
    /// Invite and remove members.
    ManageMembers,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::ManageKeys | Action::Infer => matches!(self, Role::Owner | Role::Developer),
            Action::ManageMembers => self == Role::Owner,
        }
    }

    /// `PermissionDenied` naming the role, unless it allows `action`.
    pub fn require(self, action: Action) -> Result<()> {
        if self.allows(action) {
            return Ok(());
        }
        let what = match action {
            Action::Read => "read this tenant",
            Action::ManageKeys => "create or revoke API keys",
            Action::Infer => "run models",
            Action::ManageMembers => "invite or remove members",
        };
        Err(Error::denied(format!(
            "a {} may not {what}; ask an owner of this tenant",
            self.as_str()
        )))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "role",
                    format!("unknown role '{s}'; expected owner, developer or viewer"),
                )
            })
    }
}

/// A member as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub role: Role,
    /// Whether an invite is still pending (no password yet).
    pub invited: bool,
    pub invite_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl TryFrom<MemberRecord> for Member {
    type Error = Error;

    fn try_from(r: MemberRecord) -> Result<Self> {
        let role = r.role.parse().map_err(|_| {
            tracing::error!(member = %r.id, role = %r.role, "stored member has an unknown role");
            Error::Internal
        })?;
        Ok(Member {
            invited: r.password_hash.is_none(),
            id: r.id,
            tenant_id: r.tenant_id,
            email: r.email,
            role,
            invite_expires_at: r.invite_expires_at,
            created_at: r.created_at,
        })
    }
}

/// What an owner or the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    pub email: String,
    /// `None`: the member is invited and sets it through the invite link.
    pub password: Option<String>,
    pub role: Role,
}

/// A member just added, with its invite token when it was invited (shown once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedMember {
    pub member: Member,
    pub invite_token: Option<String>,
}

/// Members of tenants. Cheap to clone.
#[derive(Clone)]
pub struct Members {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) directory: Directory,
    pub(crate) sign_in_delay: Duration,
}

fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_LEN
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(Error::invalid(
            "email",
            "must be an email address such as dev@example.com",
        ));
    }
    Ok(email)
}

fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            "password",
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters long"),
        ));
    }
    Ok(())
}

/// argon2id with the crate's defaults (m = 19 MiB, t = 2), on the blocking pool.
pub(crate) async fn hash_password(password: &str) -> Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| {
            tracing::error!(error = %e, "cannot encode a salt");
            Error::Internal
        })?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| {
                tracing::error!(error = %e, "cannot hash a password");
                Error::Internal
            })
    })
    .await
    .map_err(|_| Error::Internal)?
}

/// Whether `password` matches the PHC string `hash`; a hash that does not parse never does.
pub(crate) async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

impl Members {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, directory: Directory) -> Self {
        Self {
            store,
            clock,
            directory,
            sign_in_delay: Duration::from_secs(1),
        }
    }

    /// The pause before each sign-in attempt of an account or address that failed often
    /// (1 s by default; tests shorten it).
    pub fn with_sign_in_delay(mut self, delay: Duration) -> Self {
        self.sign_in_delay = delay;
        self
    }

    /// Adds a member to an active tenant: with a password, or invited (the token is returned
    /// once; only its SHA-256 is kept).
    pub async fn add(&self, tenant_id: &str, new: &NewMember) -> Result<AddedMember> {
        let email = normalize_email(&new.email)?;
        if let Some(password) = &new.password {
            validate_password(password)?;
        }
        self.directory.active_tenant(tenant_id).await?;
        let now = self.clock.now();
        let (password_hash, invite_token) = match &new.password {
            Some(password) => (Some(hash_password(password).await?), None),
            None => (None, Some(Alphanumeric.sample_string(&mut rand::rng(), 40))),
        };
        let record = MemberRecord {
            id: format!("mem_{}", uuid::Uuid::new_v4().simple()),
            tenant_id: tenant_id.to_owned(),
            email,
            role: new.role.as_str().to_owned(),
            password_hash,
            invite_hash: invite_token.as_deref().map(keys::hash_hex),
            invite_expires_at: invite_token.as_ref().map(|_| now + INVITE_VALID_FOR),
            created_at: now,
        };
        let member = self.store.create_member(&record).await?.try_into()?;
        Ok(AddedMember {
            member,
            invite_token,
        })
    }

    pub async fn list(&self, tenant_id: &str) -> Result<Vec<Member>> {
        self.directory.tenant(tenant_id).await?;
        self.store
            .members(tenant_id)
            .await?
            .into_iter()
            .map(Member::try_from)
            .collect()
    }

    pub async fn get(&self, member_id: &str) -> Result<Member> {
        self.store.member(member_id).await?.try_into()
    }

    /// Removes a member: its sessions end in the same transaction and their playground keys
    /// are revoked.
    pub async fn remove(&self, member_id: &str) -> Result<Member> {
        let (record, keys) = self.store.delete_member(member_id).await?;
        for key in keys {
            self.directory.revoke_key(&key).await?;
        }
        record.try_into()
    }

    /// The member a pending, unexpired invite token names.
    pub async fn invite(&self, token: &str) -> Result<Member> {
        let not_found = || Error::NotFound {
            message: "this invite link is unknown, used or expired; ask for a new one".into(),
        };
        let record = self
            .store
            .member_by_invite(&keys::hash_hex(token))
            .await?
            .ok_or_else(not_found)?;
        if record
            .invite_expires_at
            .is_none_or(|t| t <= self.clock.now())
        {
            return Err(not_found());
        }
        record.try_into()
    }

    /// Sets an invited member's password; the token cannot be used again.
    pub async fn accept_invite(&self, token: &str, password: &str) -> Result<Member> {
        validate_password(password)?;
        let member = self.invite(token).await?;
        let hash = hash_password(password).await?;
        self.store.set_member_password(&member.id, &hash).await?;
        self.get(&member.id).await
    }
}
