//! The Files API's rows, on either database (see `crate::files`).

use async_trait::async_trait;

use super::{args, Arg, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::files::{
    unnamed_blob, FilePage, FilePut, FileQuery, FileRecord, FileRemoval, FileStore,
};
use crate::hub::Blob;
use crate::model::Timestamp;
use crate::rows::Columns;

const COLUMNS: &str = "id, tenant_id, filename, purpose, bytes, sha256, created_at, expires_at";

/// Live at the time bound to `{now}`: not expired.
fn live(now: &str) -> String {
    format!("(expires_at IS NULL OR expires_at > {now})")
}

fn file_row(row: &impl Columns) -> Result<FileRecord> {
    Ok(FileRecord {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        filename: row.text("filename")?,
        purpose: row.text("purpose")?,
        bytes: row.int("bytes")?,
        sha256: row.text("sha256")?,
        created_at: row.time("created_at")?,
        expires_at: row.opt_time("expires_at")?,
    })
}

/// Deletes the rows of blobs in `shas` that nothing names any more; the ones deleted.
async fn release<E: Exec>(ex: &mut E, shas: &[String]) -> Result<Vec<String>> {
    let sql = format!(
        "DELETE FROM hub_blobs WHERE sha256 = $1 AND {} RETURNING sha256",
        unnamed_blob("$1")
    );
    let mut shas = shas.to_vec();
    shas.sort();
    shas.dedup();
    let mut freed = Vec::new();
    for sha in &shas {
        for row in ex.fetch_all(&sql, &args![sha]).await? {
            freed.push(row.text("sha256")?);
        }
    }
    Ok(freed)
}

async fn usage<E: Exec>(ex: &mut E, tenant_id: &str, now: Timestamp) -> Result<i64> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS used FROM files \
         WHERE tenant_id = $1 AND {}",
        live("$2")
    );
    ex.fetch_one(&sql, &args![tenant_id, now])
        .await?
        .int("used")
}

/// The tenant, unless it is unknown or deleted (`NotFound`).
async fn existing_tenant<E: Exec>(ex: &mut E, tenant_id: &str) -> Result<()> {
    let row = ex
        .fetch_optional(
            "SELECT deleted_at FROM tenants WHERE id = $1",
            &args![tenant_id],
        )
        .await?;
    match row {
        Some(row) if row.opt_time("deleted_at")?.is_none() => Ok(()),
        _ => Err(StoreError::not_found("tenant", tenant_id)),
    }
}

#[async_trait]
impl<D: Db> FileStore for D {
    async fn put_file(&self, f: &FileRecord, blob: &Blob, default_quota: i64) -> Result<FilePut> {
        let mut tx = self.write().await?;
        // One tenant's uploads take turns, so concurrent ones cannot overshoot together.
        if let Some(lock) = D::LOCK_KEY {
            let key = format!("files_quota:{}", f.tenant_id);
            tx.execute(lock, &args![key.as_str()]).await?;
        }
        existing_tenant(&mut tx, &f.tenant_id).await?;
        let quota = tx
            .fetch_optional(
                "SELECT quota_bytes FROM file_quotas WHERE tenant_id = $1",
                &args![&f.tenant_id],
            )
            .await?
            .map(|r| r.int("quota_bytes"))
            .transpose()?
            .unwrap_or(default_quota);
        let used = usage(&mut tx, &f.tenant_id, f.created_at).await?;
        if used.saturating_add(f.bytes) > quota {
            return Ok(FilePut::OverQuota { used, quota });
        }
        tx.execute(
            "INSERT INTO hub_blobs (sha256, size, git_oid, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
            &args![&blob.sha256, blob.size, &blob.git_oid, blob.created_at],
        )
        .await?;
        tx.execute(
            &format!("INSERT INTO files ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &args![
                &f.id,
                &f.tenant_id,
                &f.filename,
                &f.purpose,
                f.bytes,
                &f.sha256,
                f.created_at,
                f.expires_at
            ],
        )
        .await
        .map_err(|e| StoreError::unique(e, || format!("file '{}' already exists", f.id)))?;
        tx.commit().await?;
        Ok(FilePut::Stored)
    }

    async fn file(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<FileRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE id = $1 AND tenant_id = $2 AND {}",
            live("$3")
        );
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id, tenant_id, now])
            .await?
            .ok_or_else(|| StoreError::not_found("file", id))?;
        file_row(&row)
    }

    async fn files(&self, tenant_id: &str, query: &FileQuery, now: Timestamp) -> Result<FilePage> {
        let mut ex = self.reader();
        let mut sql = format!(
            "SELECT {COLUMNS} FROM files WHERE tenant_id = $1 AND {}",
            live("$2")
        );
        let cursor: (Timestamp, String);
        let mut binds: Vec<Arg<'_>> = vec![Arg::from(tenant_id), Arg::from(now)];
        if let Some(purpose) = &query.purpose {
            binds.push(Arg::from(purpose));
            sql.push_str(&format!(" AND purpose = ${}", binds.len()));
        }
        if let Some(after) = &query.after {
            let find = format!(
                "SELECT created_at, id FROM files WHERE id = $1 AND tenant_id = $2 AND {}",
                live("$3")
            );
            let row = ex
                .fetch_optional(&find, &args![after, tenant_id, now])
                .await?
                .ok_or_else(|| StoreError::not_found("file", after))?;
            cursor = (row.time("created_at")?, row.text("id")?);
            binds.push(Arg::from(cursor.0));
            let at = binds.len();
            binds.push(Arg::from(&cursor.1));
            let id = binds.len();
            let cmp = if query.ascending { '>' } else { '<' };
            sql.push_str(&format!(
                " AND (created_at {cmp} ${at} OR (created_at = ${at} AND id {cmp} ${id}))"
            ));
        }
        let dir = if query.ascending { "ASC" } else { "DESC" };
        let limit = query.limit.max(0);
        sql.push_str(&format!(
            " ORDER BY created_at {dir}, id {dir} LIMIT {}",
            limit.saturating_add(1)
        ));
        let rows = ex.fetch_all(&sql, &binds).await?;
        let mut files = rows.iter().map(file_row).collect::<Result<Vec<_>>>()?;
        let has_more = files.len() as i64 > limit;
        files.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(FilePage { files, has_more })
    }

    async fn delete_file(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<FileRemoval> {
        let mut tx = self.write().await?;
        let sql = format!(
            "DELETE FROM files WHERE id = $1 AND tenant_id = $2 AND {} RETURNING {COLUMNS}",
            live("$3")
        );
        let row = tx
            .fetch_optional(&sql, &args![id, tenant_id, now])
            .await?
            .ok_or_else(|| StoreError::not_found("file", id))?;
        let file = file_row(&row)?;
        let blobs = release(&mut tx, std::slice::from_ref(&file.sha256)).await?;
        tx.commit().await?;
        Ok(FileRemoval {
            files: vec![file],
            blobs,
        })
    }

    async fn delete_expired_files(&self, now: Timestamp, limit: i64) -> Result<FileRemoval> {
        let mut tx = self.write().await?;
        let sql = format!(
            "DELETE FROM files WHERE id IN (SELECT id FROM files \
             WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2) \
             RETURNING {COLUMNS}"
        );
        let rows = tx.fetch_all(&sql, &args![now, limit.max(0)]).await?;
        let mut files = rows.iter().map(file_row).collect::<Result<Vec<_>>>()?;
        files.sort_by(|a, b| a.id.cmp(&b.id));
        let shas: Vec<String> = files.iter().map(|f| f.sha256.clone()).collect();
        let blobs = release(&mut tx, &shas).await?;
        tx.commit().await?;
        Ok(FileRemoval { files, blobs })
    }

    async fn release_blob(&self, sha256: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let exists = tx
            .fetch_optional(
                "SELECT sha256 FROM hub_blobs WHERE sha256 = $1",
                &args![sha256],
            )
            .await?
            .is_some();
        if !exists {
            return Ok(true);
        }
        let freed = release(&mut tx, &[sha256.to_owned()]).await?;
        tx.commit().await?;
        Ok(!freed.is_empty())
    }

    async fn file_usage(&self, tenant_id: &str, now: Timestamp) -> Result<i64> {
        usage(&mut self.reader(), tenant_id, now).await
    }

    async fn file_quota(&self, tenant_id: &str) -> Result<Option<i64>> {
        self.reader()
            .fetch_optional(
                "SELECT quota_bytes FROM file_quotas WHERE tenant_id = $1",
                &args![tenant_id],
            )
            .await?
            .map(|r| r.int("quota_bytes"))
            .transpose()
    }

    async fn set_file_quota(&self, tenant_id: &str, quota: Option<i64>) -> Result<()> {
        let mut tx = self.write().await?;
        existing_tenant(&mut tx, tenant_id).await?;
        match quota {
            Some(q) => {
                tx.execute(
                    "INSERT INTO file_quotas (tenant_id, quota_bytes) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id) DO UPDATE SET quota_bytes = excluded.quota_bytes",
                    &args![tenant_id, q],
                )
                .await?;
            }
            None => {
                tx.execute(
                    "DELETE FROM file_quotas WHERE tenant_id = $1",
                    &args![tenant_id],
                )
                .await?;
            }
        }
        tx.commit().await
    }
}
