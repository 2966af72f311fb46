//! Hub metadata on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::rows::ts;
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::hub::{
    search_sql, Blob, CardSummary, Commit, HubStore, NewCommit, NewRepo, Ref, RefKind, Repo,
    RepoQuery, TreeEntry, UploadSession,
};
use crate::model::Timestamp;

const REPO: &str = "id, org, name, owner_tenant_id, private, created_at, updated_at, downloads, \
    card_license, card_pipeline, card_base_model, card_languages";
const COMMIT: &str = "id, repo_id, parent_id, message, author, created_at";
const UPLOAD: &str = "id, repo_id, sha256, size, received, created_at, updated_at";

fn time(row: &SqliteRow, column: &str) -> Result<Timestamp> {
    let text: String = row.try_get(column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time '{text}': {e}")))
}

fn json_list(items: &[String]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("list '{text}': {e}")))
}

fn repo_row(row: &SqliteRow, tags: Vec<String>) -> Result<Repo> {
    Ok(Repo {
        id: row.try_get("id")?,
        org: row.try_get("org")?,
        name: row.try_get("name")?,
        owner_tenant_id: row.try_get("owner_tenant_id")?,
        private: row.try_get("private")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        downloads: row.try_get("downloads")?,
        card: CardSummary {
            license: row.try_get("card_license")?,
            pipeline_tag: row.try_get("card_pipeline")?,
            base_model: row.try_get("card_base_model")?,
            languages: parse_list(&row.try_get::<String, _>("card_languages")?)?,
            tags,
        },
    })
}

fn commit_row(row: &SqliteRow) -> Result<Commit> {
    Ok(Commit {
        id: row.try_get("id")?,
        repo_id: row.try_get("repo_id")?,
        parent_id: row.try_get("parent_id")?,
        message: row.try_get("message")?,
        author: row.try_get("author")?,
        created_at: time(row, "created_at")?,
    })
}

fn entry_row(row: &SqliteRow) -> Result<TreeEntry> {
    Ok(TreeEntry {
        path: row.try_get("path")?,
        sha256: row.try_get("sha256")?,
        git_oid: row.try_get("git_oid")?,
        size: row.try_get("size")?,
    })
}

fn ref_row(row: &SqliteRow) -> Result<Ref> {
    let kind: String = row.try_get("kind")?;
    Ok(Ref {
        name: row.try_get("name")?,
        kind: match kind.as_str() {
            "tag" => RefKind::Tag,
            "branch" => RefKind::Branch,
            other => return Err(StoreError::Corrupt(format!("ref kind '{other}'"))),
        },
        commit_id: row.try_get("commit_id")?,
        updated_at: time(row, "updated_at")?,
    })
}

fn upload_row(row: &SqliteRow) -> Result<UploadSession> {
    Ok(UploadSession {
        id: row.try_get("id")?,
        repo_id: row.try_get("repo_id")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        received: row.try_get("received")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

impl SqliteStore {
    async fn repo_tags(&self, repo_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM hub_repo_tags WHERE repo_id = $1 ORDER BY tag")
            .bind(repo_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("tag").map_err(StoreError::from))
            .collect()
    }

    async fn head_in(
        tx: &mut super::WriteTx,
        repo_id: &str,
        branch: &str,
    ) -> Result<Option<(String, String)>> {
        let row =
            sqlx::query("SELECT kind, commit_id FROM hub_refs WHERE repo_id = $1 AND name = $2")
                .bind(repo_id)
                .bind(branch)
                .fetch_optional(&mut **tx)
                .await?;
        row.map(|r| Ok((r.try_get("kind")?, r.try_get("commit_id")?)))
            .transpose()
    }
}

#[async_trait]
impl HubStore for SqliteStore {
    async fn create_repo(&self, new: &NewRepo) -> Result<Repo> {
        let sql = format!(
            "INSERT INTO hub_repos (id, org, name, owner_tenant_id, private, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {REPO}"
        );
        let row = sqlx::query(&sql)
            .bind(&new.id)
            .bind(&new.org)
            .bind(&new.name)
            .bind(&new.owner_tenant_id)
            .bind(new.private)
            .bind(ts(new.created_at))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                StoreError::unique(e, || {
                    format!("the repository '{}/{}' exists", new.org, new.name)
                })
            })?;
        repo_row(&row, Vec::new())
    }

    async fn repo(&self, org: &str, name: &str) -> Result<Repo> {
        let sql = format!("SELECT {REPO} FROM hub_repos WHERE org = $1 AND name = $2");
        let row = sqlx::query(&sql)
            .bind(org)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("repository", format!("{org}/{name}")))?;
        let id: String = row.try_get("id")?;
        repo_row(&row, self.repo_tags(&id).await?)
    }

    async fn set_repo_private(&self, repo_id: &str, private: bool) -> Result<()> {
        let done = sqlx::query("UPDATE hub_repos SET private = $2 WHERE id = $1")
            .bind(repo_id)
            .bind(private)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("repository", repo_id));
        }
        Ok(())
    }

    async fn search_repos(&self, q: &RepoQuery) -> Result<Vec<Repo>> {
        let (sql, binds) = search_sql(q, "r.private = 0");
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b);
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            out.push(repo_row(row, self.repo_tags(&id).await?)?);
        }
        Ok(out)
    }

    async fn count_download(&self, repo_id: &str) -> Result<()> {
        sqlx::query("UPDATE hub_repos SET downloads = downloads + 1 WHERE id = $1")
            .bind(repo_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn commit(&self, new: &NewCommit) -> Result<Commit> {
        let c = &new.commit;
        let mut tx = self.write().await?;
        let head = Self::head_in(&mut tx, &c.repo_id, &new.branch).await?;
        match head {
            Some((kind, _)) if kind == "tag" => {
                return Err(StoreError::Conflict(format!(
                    "'{}' is a tag, and tags do not move; commit to a branch",
                    new.branch
                )))
            }
            Some((_, id)) if new.expected_parent.as_deref() != Some(id.as_str()) => {
                return Err(StoreError::Conflict(format!(
                    "branch '{}' moved to {id} meanwhile; rebuild the commit on it",
                    new.branch
                )))
            }
            None if new.expected_parent.is_some() => {
                return Err(StoreError::Conflict(format!(
                    "branch '{}' does not exist",
                    new.branch
                )))
            }
            _ => {}
        }
        let sql = format!(
            "INSERT INTO hub_commits ({COMMIT}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COMMIT}"
        );
        let row = sqlx::query(&sql)
            .bind(&c.id)
            .bind(&c.repo_id)
            .bind(&c.parent_id)
            .bind(&c.message)
            .bind(&c.author)
            .bind(ts(c.created_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::unique(e, || format!("commit {} exists", c.id)))?;
        for f in &new.files {
            sqlx::query(
                "INSERT INTO hub_tree_entries (repo_id, commit_id, path, sha256, git_oid, size) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.repo_id)
            .bind(&c.id)
            .bind(&f.path)
            .bind(&f.sha256)
            .bind(&f.git_oid)
            .bind(f.size)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO hub_refs (repo_id, name, kind, commit_id, updated_at) \
             VALUES ($1, $2, 'branch', $3, $4) \
             ON CONFLICT (repo_id, name) DO UPDATE SET commit_id = $3, updated_at = $4",
        )
        .bind(&c.repo_id)
        .bind(&new.branch)
        .bind(&c.id)
        .bind(ts(c.created_at))
        .execute(&mut *tx)
        .await?;
        let card = &new.card;
        sqlx::query(
            "UPDATE hub_repos SET updated_at = $2, card_license = $3, card_pipeline = $4, \
             card_base_model = $5, card_languages = $6 WHERE id = $1",
        )
        .bind(&c.repo_id)
        .bind(ts(c.created_at))
        .bind(&card.license)
        .bind(&card.pipeline_tag)
        .bind(&card.base_model)
        .bind(json_list(&card.languages)?)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM hub_repo_tags WHERE repo_id = $1")
            .bind(&c.repo_id)
            .execute(&mut *tx)
            .await?;
        for tag in &card.tags {
            sqlx::query(
                "INSERT INTO hub_repo_tags (repo_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&c.repo_id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        }
        let commit = commit_row(&row)?;
        tx.commit().await?;
        Ok(commit)
    }

    async fn commit_by_id(&self, repo_id: &str, commit_id: &str) -> Result<Commit> {
        let sql = format!("SELECT {COMMIT} FROM hub_commits WHERE repo_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(repo_id)
            .bind(commit_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("commit", commit_id))?;
        commit_row(&row)
    }

    async fn refs(&self, repo_id: &str) -> Result<Vec<Ref>> {
        let rows = sqlx::query(
            "SELECT name, kind, commit_id, updated_at FROM hub_refs WHERE repo_id = $1 \
             ORDER BY kind, name",
        )
        .bind(repo_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ref_row).collect()
    }

    async fn find_ref(&self, repo_id: &str, name: &str) -> Result<Option<Ref>> {
        let row = sqlx::query(
            "SELECT name, kind, commit_id, updated_at FROM hub_refs \
             WHERE repo_id = $1 AND name = $2",
        )
        .bind(repo_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ref_row).transpose()
    }

    async fn create_tag(
        &self,
        repo_id: &str,
        name: &str,
        commit_id: &str,
        now: Timestamp,
    ) -> Result<Ref> {
        self.commit_by_id(repo_id, commit_id).await?;
        let row = sqlx::query(
            "INSERT INTO hub_refs (repo_id, name, kind, commit_id, updated_at) \
             VALUES ($1, $2, 'tag', $3, $4) RETURNING name, kind, commit_id, updated_at",
        )
        .bind(repo_id)
        .bind(name)
        .bind(commit_id)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            StoreError::unique(e, || format!("the ref '{name}' exists; tags do not move"))
        })?;
        ref_row(&row)
    }

    async fn tree(&self, repo_id: &str, commit_id: &str) -> Result<Vec<TreeEntry>> {
        let rows = sqlx::query(
            "SELECT path, sha256, git_oid, size FROM hub_tree_entries \
             WHERE repo_id = $1 AND commit_id = $2 ORDER BY path",
        )
        .bind(repo_id)
        .bind(commit_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_row).collect()
    }

    async fn tree_entry(
        &self,
        repo_id: &str,
        commit_id: &str,
        path: &str,
    ) -> Result<Option<TreeEntry>> {
        let row = sqlx::query(
            "SELECT path, sha256, git_oid, size FROM hub_tree_entries \
             WHERE repo_id = $1 AND commit_id = $2 AND path = $3",
        )
        .bind(repo_id)
        .bind(commit_id)
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(entry_row).transpose()
    }

    async fn put_blob(&self, b: &Blob) -> Result<()> {
        sqlx::query(
            "INSERT INTO hub_blobs (sha256, size, git_oid, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&b.sha256)
        .bind(b.size)
        .bind(&b.git_oid)
        .bind(ts(b.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn blob(&self, sha256: &str) -> Result<Option<Blob>> {
        let row = sqlx::query(
            "SELECT sha256, size, git_oid, created_at FROM hub_blobs WHERE sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Blob {
                sha256: r.try_get("sha256")?,
                size: r.try_get("size")?,
                git_oid: r.try_get("git_oid")?,
                created_at: time(&r, "created_at")?,
            })
        })
        .transpose()
    }

    async fn create_upload(&self, u: &UploadSession) -> Result<UploadSession> {
        let sql = format!(
            "INSERT INTO hub_uploads ({UPLOAD}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING {UPLOAD}"
        );
        let row = sqlx::query(&sql)
            .bind(&u.id)
            .bind(&u.repo_id)
            .bind(&u.sha256)
            .bind(u.size)
            .bind(u.received)
            .bind(ts(u.created_at))
            .bind(ts(u.updated_at))
            .fetch_one(&self.pool)
            .await?;
        upload_row(&row)
    }

    async fn upload(&self, id: &str) -> Result<UploadSession> {
        let sql = format!("SELECT {UPLOAD} FROM hub_uploads WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("upload", id))?;
        upload_row(&row)
    }

    async fn find_upload(
        &self,
        repo_id: &str,
        sha256: &str,
        size: i64,
    ) -> Result<Option<UploadSession>> {
        let sql = format!(
            "SELECT {UPLOAD} FROM hub_uploads WHERE repo_id = $1 AND sha256 = $2 AND size = $3 \
             ORDER BY received DESC, created_at LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(repo_id)
            .bind(sha256)
            .bind(size)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(upload_row).transpose()
    }

    async fn advance_upload(
        &self,
        id: &str,
        from: i64,
        received: i64,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE hub_uploads SET received = $3, updated_at = $4 WHERE id = $1 AND received = $2",
        )
        .bind(id)
        .bind(from)
        .bind(received)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM hub_uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn stale_uploads(&self, before: Timestamp) -> Result<Vec<UploadSession>> {
        let sql = format!("SELECT {UPLOAD} FROM hub_uploads WHERE updated_at < $1");
        let rows = sqlx::query(&sql)
            .bind(ts(before))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(upload_row).collect()
    }
}
