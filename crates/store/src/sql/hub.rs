//! Hub metadata, on either database. A commit locks its repository row (on PostgreSQL; SQLite's
//! write transaction excludes every other writer), so two commits to one repository serialise.

use async_trait::async_trait;

use super::{args, Arg, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::hub::{
    search_sql, Blob, CardSummary, Commit, HubStore, NewCommit, NewRepo, Ref, RefKind, Repo,
    RepoQuery, TreeEntry, UploadSession,
};
use crate::hub_access::INSERT_UPLOAD_SQL;
use crate::model::Timestamp;
use crate::rows::{json_list, parse_list, Columns};

const REPO: &str = "id, org, name, owner_tenant_id, private, created_at, updated_at, downloads, \
    card_license, card_pipeline, card_base_model, card_languages";
const COMMIT: &str = "id, repo_id, parent_id, message, author, created_at";
const UPLOAD: &str = "id, repo_id, sha256, size, received, created_at, updated_at";
const REF: &str = "name, kind, commit_id, updated_at";
const ENTRY: &str = "path, sha256, git_oid, size";

fn repo_row(row: &impl Columns, tags: Vec<String>) -> Result<Repo> {
    Ok(Repo {
        id: row.text("id")?,
        org: row.text("org")?,
        name: row.text("name")?,
        owner_tenant_id: row.opt_text("owner_tenant_id")?,
        private: row.flag("private")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        downloads: row.int("downloads")?,
        card: CardSummary {
            license: row.opt_text("card_license")?,
            pipeline_tag: row.opt_text("card_pipeline")?,
            base_model: row.opt_text("card_base_model")?,
            // JSON text on both databases.
            languages: parse_list(&row.text("card_languages")?)?,
            tags,
        },
    })
}

fn commit_row(row: &impl Columns) -> Result<Commit> {
    Ok(Commit {
        id: row.text("id")?,
        repo_id: row.text("repo_id")?,
        parent_id: row.opt_text("parent_id")?,
        message: row.text("message")?,
        author: row.text("author")?,
        created_at: row.time("created_at")?,
    })
}

fn entry_row(row: &impl Columns) -> Result<TreeEntry> {
    Ok(TreeEntry {
        path: row.text("path")?,
        sha256: row.text("sha256")?,
        git_oid: row.text("git_oid")?,
        size: row.int("size")?,
    })
}

fn ref_row(row: &impl Columns) -> Result<Ref> {
    let kind = row.text("kind")?;
    Ok(Ref {
        name: row.text("name")?,
        kind: match kind.as_str() {
            "tag" => RefKind::Tag,
            "branch" => RefKind::Branch,
            other => return Err(StoreError::Corrupt(format!("ref kind '{other}'"))),
        },
        commit_id: row.text("commit_id")?,
        updated_at: row.time("updated_at")?,
    })
}

fn upload_row(row: &impl Columns) -> Result<UploadSession> {
    Ok(UploadSession {
        id: row.text("id")?,
        repo_id: row.text("repo_id")?,
        sha256: row.text("sha256")?,
        size: row.int("size")?,
        received: row.int("received")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

/// The columns of `hub_uploads`, in [`INSERT_UPLOAD_SQL`]'s order.
pub(super) fn upload_args(u: &UploadSession) -> [Arg<'_>; 7] {
    args![
        &u.id,
        &u.repo_id,
        &u.sha256,
        u.size,
        u.received,
        u.created_at,
        u.updated_at
    ]
}

async fn repo_tags<D: Db>(db: &D, repo_id: &str) -> Result<Vec<String>> {
    let rows = db
        .reader()
        .fetch_all(
            "SELECT tag FROM hub_repo_tags WHERE repo_id = $1 ORDER BY tag",
            &args![repo_id],
        )
        .await?;
    rows.iter().map(|r| r.text("tag")).collect()
}

/// Checks that a commit may move `new.branch` (it is no tag, and it still points where the
/// commit was built on), with the repository's row locked where the database needs it.
async fn check_head<D: Db>(tx: &mut D::Tx, new: &NewCommit) -> Result<()> {
    let c = &new.commit;
    let lock = format!("SELECT id FROM hub_repos WHERE id = $1{}", D::LOCK_ROWS);
    tx.fetch_optional(&lock, &args![&c.repo_id])
        .await?
        .ok_or_else(|| StoreError::not_found("repository", c.repo_id.clone()))?;
    let head = tx
        .fetch_optional(
            "SELECT kind, commit_id FROM hub_refs WHERE repo_id = $1 AND name = $2",
            &args![&c.repo_id, &new.branch],
        )
        .await?
        .map(|r| Ok::<_, StoreError>((r.text("kind")?, r.text("commit_id")?)))
        .transpose()?;
    match head {
        Some((kind, _)) if kind == "tag" => Err(StoreError::Conflict(format!(
            "'{}' is a tag, and tags do not move; commit to a branch",
            new.branch
        ))),
        Some((_, id)) if new.expected_parent.as_deref() != Some(id.as_str()) => {
            Err(StoreError::Conflict(format!(
                "branch '{}' moved to {id} meanwhile; rebuild the commit on it",
                new.branch
            )))
        }
        None if new.expected_parent.is_some() => Err(StoreError::Conflict(format!(
            "branch '{}' does not exist",
            new.branch
        ))),
        _ => Ok(()),
    }
}

#[async_trait]
impl<D: Db> HubStore for D {
    async fn create_repo(&self, new: &NewRepo) -> Result<Repo> {
        let sql = format!(
            "INSERT INTO hub_repos (id, org, name, owner_tenant_id, private, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {REPO}"
        );
        let args = args![
            &new.id,
            &new.org,
            &new.name,
            &new.owner_tenant_id,
            new.private,
            new.created_at
        ];
        let row = self.reader().fetch_one(&sql, &args).await.map_err(|e| {
            StoreError::unique(e, || {
                format!("the repository '{}/{}' exists", new.org, new.name)
            })
        })?;
        repo_row(&row, Vec::new())
    }

    async fn repo(&self, org: &str, name: &str) -> Result<Repo> {
        let sql = format!("SELECT {REPO} FROM hub_repos WHERE org = $1 AND name = $2");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![org, name])
            .await?
            .ok_or_else(|| StoreError::not_found("repository", format!("{org}/{name}")))?;
        let id = row.text("id")?;
        repo_row(&row, repo_tags(self, &id).await?)
    }

    async fn set_repo_private(&self, repo_id: &str, private: bool) -> Result<()> {
        let done = self
            .reader()
            .execute(
                "UPDATE hub_repos SET private = $2 WHERE id = $1",
                &args![repo_id, private],
            )
            .await?;
        if done == 0 {
            return Err(StoreError::not_found("repository", repo_id));
        }
        Ok(())
    }

    async fn search_repos(&self, q: &RepoQuery) -> Result<Vec<Repo>> {
        let (sql, binds) = search_sql(q, "NOT r.private");
        let mut args: Vec<Arg<'_>> = binds.iter().map(Arg::from).collect();
        args.push(Arg::from(q.limit));
        let rows = self.reader().fetch_all(&sql, &args).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = row.text("id")?;
            out.push(repo_row(row, repo_tags(self, &id).await?)?);
        }
        Ok(out)
    }

    async fn count_download(&self, repo_id: &str) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE hub_repos SET downloads = downloads + 1 WHERE id = $1",
                &args![repo_id],
            )
            .await?;
        Ok(())
    }

    async fn commit(&self, new: &NewCommit) -> Result<Commit> {
        let c = &new.commit;
        let mut tx = self.write().await?;
        check_head::<D>(&mut tx, new).await?;
        let sql = format!(
            "INSERT INTO hub_commits ({COMMIT}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COMMIT}"
        );
        let args = args![
            &c.id,
            &c.repo_id,
            &c.parent_id,
            &c.message,
            &c.author,
            c.created_at
        ];
        let row = tx
            .fetch_one(&sql, &args)
            .await
            .map_err(|e| StoreError::unique(e, || format!("commit {} exists", c.id)))?;
        for f in &new.files {
            tx.execute(
                "INSERT INTO hub_tree_entries (repo_id, commit_id, path, sha256, git_oid, size) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &args![&c.repo_id, &c.id, &f.path, &f.sha256, &f.git_oid, f.size],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO hub_refs (repo_id, name, kind, commit_id, updated_at) \
             VALUES ($1, $2, 'branch', $3, $4) \
             ON CONFLICT (repo_id, name) DO UPDATE SET commit_id = $3, updated_at = $4",
            &args![&c.repo_id, &new.branch, &c.id, c.created_at],
        )
        .await?;
        let card = &new.card;
        let languages = json_list(&card.languages);
        tx.execute(
            "UPDATE hub_repos SET updated_at = $2, card_license = $3, card_pipeline = $4, \
             card_base_model = $5, card_languages = $6 WHERE id = $1",
            &args![
                &c.repo_id,
                c.created_at,
                &card.license,
                &card.pipeline_tag,
                &card.base_model,
                &languages
            ],
        )
        .await?;
        tx.execute(
            "DELETE FROM hub_repo_tags WHERE repo_id = $1",
            &args![&c.repo_id],
        )
        .await?;
        for tag in &card.tags {
            tx.execute(
                "INSERT INTO hub_repo_tags (repo_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &args![&c.repo_id, tag],
            )
            .await?;
        }
        let commit = commit_row(&row)?;
        tx.commit().await?;
        Ok(commit)
    }

    async fn commit_by_id(&self, repo_id: &str, commit_id: &str) -> Result<Commit> {
        let sql = format!("SELECT {COMMIT} FROM hub_commits WHERE repo_id = $1 AND id = $2");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![repo_id, commit_id])
            .await?
            .ok_or_else(|| StoreError::not_found("commit", commit_id))?;
        commit_row(&row)
    }

    async fn refs(&self, repo_id: &str) -> Result<Vec<Ref>> {
        let sql = format!("SELECT {REF} FROM hub_refs WHERE repo_id = $1 ORDER BY kind, name");
        let rows = self.reader().fetch_all(&sql, &args![repo_id]).await?;
        rows.iter().map(ref_row).collect()
    }

    async fn find_ref(&self, repo_id: &str, name: &str) -> Result<Option<Ref>> {
        let sql = format!("SELECT {REF} FROM hub_refs WHERE repo_id = $1 AND name = $2");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![repo_id, name])
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
        let sql = format!(
            "INSERT INTO hub_refs (repo_id, name, kind, commit_id, updated_at) \
             VALUES ($1, $2, 'tag', $3, $4) RETURNING {REF}"
        );
        let row = self
            .reader()
            .fetch_one(&sql, &args![repo_id, name, commit_id, now])
            .await
            .map_err(|e| {
                StoreError::unique(e, || format!("the ref '{name}' exists; tags do not move"))
            })?;
        ref_row(&row)
    }

    async fn tree(&self, repo_id: &str, commit_id: &str) -> Result<Vec<TreeEntry>> {
        let sql = format!(
            "SELECT {ENTRY} FROM hub_tree_entries WHERE repo_id = $1 AND commit_id = $2 \
             ORDER BY path"
        );
        let rows = self
            .reader()
            .fetch_all(&sql, &args![repo_id, commit_id])
            .await?;
        rows.iter().map(entry_row).collect()
    }

    async fn tree_entry(
        &self,
        repo_id: &str,
        commit_id: &str,
        path: &str,
    ) -> Result<Option<TreeEntry>> {
        let sql = format!(
            "SELECT {ENTRY} FROM hub_tree_entries \
             WHERE repo_id = $1 AND commit_id = $2 AND path = $3"
        );
        let row = self
            .reader()
            .fetch_optional(&sql, &args![repo_id, commit_id, path])
            .await?;
        row.as_ref().map(entry_row).transpose()
    }

    async fn put_blob(&self, b: &Blob) -> Result<()> {
        self.reader()
            .execute(
                "INSERT INTO hub_blobs (sha256, size, git_oid, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
                &args![&b.sha256, b.size, &b.git_oid, b.created_at],
            )
            .await?;
        Ok(())
    }

    async fn blob(&self, sha256: &str) -> Result<Option<Blob>> {
        let row = self
            .reader()
            .fetch_optional(
                "SELECT sha256, size, git_oid, created_at FROM hub_blobs WHERE sha256 = $1",
                &args![sha256],
            )
            .await?;
        row.map(|r| {
            Ok(Blob {
                sha256: r.text("sha256")?,
                size: r.int("size")?,
                git_oid: r.text("git_oid")?,
                created_at: r.time("created_at")?,
            })
        })
        .transpose()
    }

    async fn create_upload(&self, u: &UploadSession) -> Result<UploadSession> {
        self.reader()
            .execute(INSERT_UPLOAD_SQL, &upload_args(u))
            .await?;
        Ok(u.clone())
    }

    async fn upload(&self, id: &str) -> Result<UploadSession> {
        let sql = format!("SELECT {UPLOAD} FROM hub_uploads WHERE id = $1");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id])
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
        let row = self
            .reader()
            .fetch_optional(&sql, &args![repo_id, sha256, size])
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
        let done = self
            .reader()
            .execute(
                "UPDATE hub_uploads SET received = $3, updated_at = $4 \
                 WHERE id = $1 AND received = $2",
                &args![id, from, received, now],
            )
            .await?;
        Ok(done == 1)
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        self.reader()
            .execute("DELETE FROM hub_uploads WHERE id = $1", &args![id])
            .await?;
        Ok(())
    }

    async fn stale_uploads(&self, before: Timestamp) -> Result<Vec<UploadSession>> {
        let sql = format!("SELECT {UPLOAD} FROM hub_uploads WHERE updated_at < $1");
        let rows = self.reader().fetch_all(&sql, &args![before]).await?;
        rows.iter().map(upload_row).collect()
    }
}
