//! Members, console sessions and failed sign-ins, on either database.

use async_trait::async_trait;

use super::{args, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::members::{MemberRecord, MemberStore, SessionRecord};
use crate::model::Timestamp;
use crate::rows::Columns;

const MEMBER: &str =
    "id, tenant_id, email, role, password_hash, invite_hash, invite_expires_at, created_at";
const SESSION: &str = "id, member_id, csrf_token, created_at, last_seen_at, idle_seconds, \
                       expires_at, playground_key_id, ended_at";

fn member<R: Columns>(row: &R) -> Result<MemberRecord> {
    Ok(MemberRecord {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        email: row.text("email")?,
        role: row.text("role")?,
        password_hash: row.opt_text("password_hash")?,
        invite_hash: row.opt_text("invite_hash")?,
        invite_expires_at: row.opt_time("invite_expires_at")?,
        created_at: row.time("created_at")?,
    })
}

fn session<R: Columns>(row: &R) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.text("id")?,
        member_id: row.opt_text("member_id")?,
        csrf_token: row.text("csrf_token")?,
        created_at: row.time("created_at")?,
        last_seen_at: row.time("last_seen_at")?,
        idle_seconds: row.int("idle_seconds")?,
        expires_at: row.time("expires_at")?,
        playground_key_id: row.opt_text("playground_key_id")?,
        ended_at: row.opt_time("ended_at")?,
    })
}

#[async_trait]
impl<D: Db> MemberStore for D {
    async fn create_member(&self, m: &MemberRecord) -> Result<MemberRecord> {
        self.reader()
            .execute(
                &format!("INSERT INTO members ({MEMBER}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &args![
                    &m.id,
                    &m.tenant_id,
                    &m.email,
                    &m.role,
                    &m.password_hash,
                    &m.invite_hash,
                    m.invite_expires_at,
                    m.created_at
                ],
            )
            .await
            .map_err(|e| StoreError::unique(e, || format!("a member '{}' exists", m.email)))?;
        Ok(m.clone())
    }

    async fn member(&self, id: &str) -> Result<MemberRecord> {
        let sql = format!("SELECT {MEMBER} FROM members WHERE id = $1");
        let row = self.reader().fetch_optional(&sql, &args![id]).await?;
        member(&row.ok_or_else(|| StoreError::not_found("member", id))?)
    }

    async fn member_by_email(&self, email: &str) -> Result<Option<MemberRecord>> {
        let sql = format!("SELECT {MEMBER} FROM members WHERE email = $1");
        let row = self.reader().fetch_optional(&sql, &args![email]).await?;
        row.as_ref().map(member).transpose()
    }

    async fn member_by_invite(&self, invite_hash: &str) -> Result<Option<MemberRecord>> {
        let sql = format!("SELECT {MEMBER} FROM members WHERE invite_hash = $1");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![invite_hash])
            .await?;
        row.as_ref().map(member).transpose()
    }

    async fn members(&self, tenant_id: &str) -> Result<Vec<MemberRecord>> {
        let sql =
            format!("SELECT {MEMBER} FROM members WHERE tenant_id = $1 ORDER BY created_at, id");
        let rows = self.reader().fetch_all(&sql, &args![tenant_id]).await?;
        rows.iter().map(member).collect()
    }

    async fn set_member_password(&self, id: &str, password_hash: &str) -> Result<()> {
        let changed = self
            .reader()
            .execute(
                "UPDATE members SET password_hash = $2, invite_hash = NULL, \
                 invite_expires_at = NULL WHERE id = $1",
                &args![id, password_hash],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::not_found("member", id));
        }
        Ok(())
    }

    async fn delete_member(&self, id: &str) -> Result<(MemberRecord, Vec<String>)> {
        let mut tx = self.write().await?;
        let sql = format!("SELECT {MEMBER} FROM members WHERE id = $1{}", D::LOCK_ROWS);
        let row = tx.fetch_optional(&sql, &args![id]).await?;
        let found = member(&row.ok_or_else(|| StoreError::not_found("member", id))?)?;
        let keys = tx
            .fetch_all(
                "SELECT playground_key_id FROM console_sessions WHERE member_id = $1 \
                 AND ended_at IS NULL AND playground_key_id IS NOT NULL",
                &args![id],
            )
            .await?
            .iter()
            .map(|r| r.text("playground_key_id"))
            .collect::<Result<Vec<_>>>()?;
        tx.execute(
            "DELETE FROM console_sessions WHERE member_id = $1",
            &args![id],
        )
        .await?;
        tx.execute("DELETE FROM members WHERE id = $1", &args![id])
            .await?;
        tx.commit().await?;
        Ok((found, keys))
    }

    async fn create_session(&self, s: &SessionRecord) -> Result<()> {
        self.reader()
            .execute(
                &format!(
                    "INSERT INTO console_sessions ({SESSION}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &args![
                    &s.id,
                    &s.member_id,
                    &s.csrf_token,
                    s.created_at,
                    s.last_seen_at,
                    s.idle_seconds,
                    s.expires_at,
                    &s.playground_key_id,
                    s.ended_at
                ],
            )
            .await?;
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let sql =
            format!("SELECT {SESSION} FROM console_sessions WHERE id = $1 AND ended_at IS NULL");
        let row = self.reader().fetch_optional(&sql, &args![id]).await?;
        row.as_ref().map(session).transpose()
    }

    async fn touch_session(&self, id: &str, now: Timestamp) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE console_sessions SET last_seen_at = $2 WHERE id = $1",
                &args![id, now],
            )
            .await?;
        Ok(())
    }

    async fn set_playground_key(&self, id: &str, key_id: &str) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE console_sessions SET playground_key_id = $2 WHERE id = $1",
                &args![id, key_id],
            )
            .await?;
        Ok(())
    }

    async fn end_session(&self, id: &str, now: Timestamp) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE console_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL",
                &args![id, now],
            )
            .await?;
        Ok(())
    }

    async fn record_sign_in_failure(&self, subjects: &[String], now: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        for subject in subjects {
            tx.execute(
                "INSERT INTO console_sign_in_failures (subject, failed_at) VALUES ($1, $2)",
                &args![subject, now],
            )
            .await?;
        }
        tx.commit().await
    }

    async fn sign_in_failures(&self, subject: &str, since: Timestamp) -> Result<i64> {
        let row = self
            .reader()
            .fetch_one(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM console_sign_in_failures \
                 WHERE subject = $1 AND failed_at >= $2",
                &args![subject, since],
            )
            .await?;
        row.int("n")
    }

    async fn clear_sign_in_failures(&self, subject: &str) -> Result<()> {
        self.reader()
            .execute(
                "DELETE FROM console_sign_in_failures WHERE subject = $1",
                &args![subject],
            )
            .await?;
        Ok(())
    }

    async fn sessions_seen_before(&self, before: Timestamp) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION} FROM console_sessions \
             WHERE ended_at IS NULL AND last_seen_at < $1 ORDER BY last_seen_at LIMIT 1000"
        );
        let rows = self.reader().fetch_all(&sql, &args![before]).await?;
        rows.iter().map(session).collect()
    }

    async fn sweep_sign_ins(
        &self,
        before: Timestamp,
        ended_before: Timestamp,
    ) -> Result<(u64, u64)> {
        let mut tx = self.write().await?;
        let failures = tx
            .execute(
                "DELETE FROM console_sign_in_failures WHERE failed_at < $1",
                &args![before],
            )
            .await?;
        let sessions = tx
            .execute(
                "DELETE FROM console_sessions WHERE ended_at IS NOT NULL AND ended_at < $1",
                &args![ended_before],
            )
            .await?;
        tx.commit().await?;
        Ok((failures, sessions))
    }
}
