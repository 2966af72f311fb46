//! The console's people: a tenant's members, their server-side sessions (and the operator's)
//! and failed sign-ins. The store keeps records; `tenancy::members` holds the policy (roles,
//! hashing, expiry, rate limits).

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// A member of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: String,
    pub tenant_id: String,
    /// Lowercased, unique across the server.
    pub email: String,
    /// `owner`, `developer` or `viewer`.
    pub role: String,
    /// The argon2id PHC string; `None` while an invite is pending.
    pub password_hash: Option<String>,
    /// SHA-256 of the invite token while one is pending.
    pub invite_hash: Option<String>,
    pub invite_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A console session. Its id is the SHA-256 of the cookie's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    /// `None`: the operator's session (signed in with the admin key).
    pub member_id: Option<String>,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub idle_seconds: i64,
    pub expires_at: Timestamp,
    pub playground_key_id: Option<String>,
    pub ended_at: Option<Timestamp>,
}

/// Members, sessions and failed sign-ins.
#[async_trait]
pub trait MemberStore: Send + Sync + 'static {
    /// A taken email is `Conflict`.
    async fn create_member(&self, member: &MemberRecord) -> Result<MemberRecord>;
    async fn member(&self, id: &str) -> Result<MemberRecord>;
    async fn member_by_email(&self, email: &str) -> Result<Option<MemberRecord>>;
    async fn member_by_invite(&self, invite_hash: &str) -> Result<Option<MemberRecord>>;
    /// A tenant's members, oldest first.
    async fn members(&self, tenant_id: &str) -> Result<Vec<MemberRecord>>;
    /// Sets the password and clears the invite; `NotFound` if the member is gone.
    async fn set_member_password(&self, id: &str, password_hash: &str) -> Result<()>;
    /// Deletes the member, ending its sessions in the same transaction; returns it and the
    /// playground keys of its sessions that were still open (the caller revokes them).
    async fn delete_member(&self, id: &str) -> Result<(MemberRecord, Vec<String>)>;

    async fn create_session(&self, session: &SessionRecord) -> Result<()>;
    /// An open (not ended) session, if any.
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>>;
    async fn touch_session(&self, id: &str, now: Timestamp) -> Result<()>;
    async fn set_playground_key(&self, id: &str, key_id: &str) -> Result<()>;
    /// Ends it (a no-op if already ended).
    async fn end_session(&self, id: &str, now: Timestamp) -> Result<()>;

    async fn record_sign_in_failure(&self, subjects: &[String], now: Timestamp) -> Result<()>;
    /// Failures of `subject` at or after `since`.
    async fn sign_in_failures(&self, subject: &str, since: Timestamp) -> Result<i64>;
    async fn clear_sign_in_failures(&self, subject: &str) -> Result<()>;

    /// Open sessions last seen before `before` (candidates for ending when idle too long).
    async fn sessions_seen_before(&self, before: Timestamp) -> Result<Vec<SessionRecord>>;
    /// Deletes failed sign-ins before `before` and sessions ended before `ended_before`;
    /// returns how many rows of each went.
    async fn sweep_sign_ins(
        &self,
        before: Timestamp,
        ended_before: Timestamp,
    ) -> Result<(u64, u64)>;
}
