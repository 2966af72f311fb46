//! Writing: repository creation, resumable uploads of blobs, commits that make a new
//! revision atomically, tags. Every write needs the admin key or a tenant key with
//! `hub:write` whose tenant owns the org.

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use store::hub::{Blob, Commit, NewCommit, NewRepo, Ref, Repo, TreeEntry, UploadSession};
use store::hub_access::{HubQuota, UploadAdmission};
use store::StoreError;

use crate::card;
use crate::commit::{commit_id, TreeEdit};
use crate::error::{HubError, Result};
use crate::path::{validate_name, validate_revision, RepoId, ValidPath};
use crate::{blobs, Access, Hub};

/// The largest README read for its card.
const MAX_CARD_BYTES: i64 = 1 << 20;
const MAX_MESSAGE_BYTES: usize = 16 << 10;

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// The session to send chunks to; `None` once nothing more is needed.
    pub upload_id: Option<String>,
    pub sha256: String,
    pub size: i64,
    /// Bytes received so far: the next chunk starts here.
    pub offset: i64,
    /// The blob is stored and may be named in a commit.
    pub complete: bool,
}

/// One file a commit adds or replaces, by the sha256 of an uploaded blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// A new revision of a branch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    #[serde(default)]
    pub message: String,
    /// The head the client built on; another head is a conflict. `None`: the current head.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub files: Vec<FileOp>,
    /// Files or directories to remove.
    #[serde(default)]
    pub deletes: Vec<String>,
    /// Start from an empty tree instead of the parent's (a whole-directory push).
    #[serde(default)]
    pub replace: bool,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_sha256(s: &str) -> Result<()> {
    if is_sha256(s) {
        Ok(())
    } else {
        Err(HubError::invalid(
            "sha256",
            "a sha256 is 64 lowercase hex digits",
        ))
    }
}

/// Releases an upload's in-process lock when dropped.
struct BusyGuard<'a> {
    hub: &'a Hub,
    id: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.hub.inner.busy.lock() {
            busy.remove(&self.id);
        }
    }
}

impl Hub {
    fn require_write(access: &Access) -> Result<()> {
        match access {
            Access::Admin => Ok(()),
            Access::Tenant { write: true, .. } => Ok(()),
            Access::Tenant { .. } => Err(HubError::Forbidden(
                "this API key lacks the 'hub:write' scope; ask an admin for a key with it".into(),
            )),
            Access::Anonymous => Err(HubError::Unauthenticated),
        }
    }

    /// The repository, if `access` may write to it. A private repo of another tenant is
    /// `RepoNotFound` (it stays invisible); a public one is `Forbidden`.
    pub async fn writable_repo(&self, access: &Access, id: &RepoId) -> Result<Repo> {
        Self::require_write(access)?;
        let repo = self.repo(access, id).await?;
        match access {
            Access::Admin => Ok(repo),
            Access::Tenant { tenant_id, .. }
                if repo.owner_tenant_id.as_deref() == Some(tenant_id.as_str()) =>
            {
                Ok(repo)
            }
            _ => Err(HubError::Forbidden(format!(
                "the org '{}' belongs to another tenant; push to one of your own orgs",
                id.org
            ))),
        }
    }

    /// Creates `org/name`. A tenant may create repositories in the orgs its tenant owns; the
    /// admin anywhere (in an org that does not exist, the repo is the admin's own).
    pub async fn create_repo(&self, access: &Access, id: &RepoId, private: bool) -> Result<Repo> {
        Self::require_write(access)?;
        let owner = match self.store().org_by_name(&id.org).await {
            Ok(org) => Some(org.tenant_id),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Access::Tenant { tenant_id, .. } = access {
            match &owner {
                Some(owner) if owner == tenant_id => {}
                Some(_) => {
                    return Err(HubError::Forbidden(format!(
                        "the org '{}' belongs to another tenant; create the repository in one \
                         of your own orgs",
                        id.org
                    )))
                }
                None => {
                    return Err(HubError::Forbidden(format!(
                        "there is no org '{}'; ask an admin to create it for your tenant",
                        id.org
                    )))
                }
            }
        }
        let new = NewRepo {
            id: format!("repo_{}", uuid::Uuid::new_v4().simple()),
            org: id.org.clone(),
            name: id.name.clone(),
            owner_tenant_id: owner,
            private,
            created_at: chrono::Utc::now(),
        };
        Ok(self.store().create_repo(&new).await?)
    }

    pub async fn set_private(&self, access: &Access, id: &RepoId, private: bool) -> Result<Repo> {
        let repo = self.writable_repo(access, id).await?;
        self.store().set_repo_private(&repo.id, private).await?;
        Ok(Repo { private, ..repo })
    }

    /// Whether `access` may name blob `sha256` without sending its bytes: the admin always; a
    /// tenant if it uploaded those bytes itself or may read a repository holding them. Blobs
    /// are stored once for everyone, so knowing a hash must not be enough to copy a file.
    async fn reachable(&self, access: &Access, sha256: &str) -> Result<bool> {
        match access {
            Access::Admin => Ok(true),
            Access::Tenant { tenant_id, .. } => {
                Ok(self.store().blob_reachable(sha256, tenant_id).await?)
            }
            Access::Anonymous => Ok(false),
        }
    }

    /// Starts (or finds, to resume) the upload of one blob into a repository. A blob the
    /// caller can already reach needs no upload at all; any other hash, whether or not the
    /// hub has it, starts an ordinary upload (the same answer either way, so it tells
    /// nothing about other tenants' files).
    pub async fn start_upload(
        &self,
        access: &Access,
        id: &RepoId,
        sha256: &str,
        size: i64,
    ) -> Result<UploadState> {
        check_sha256(sha256)?;
        let max = self.config().max_file_bytes;
        if size < 0 || size as u64 > max {
            return Err(HubError::TooLarge(format!(
                "a file of {size} bytes is larger than this server's limit of {max} bytes"
            )));
        }
        let repo = self.writable_repo(access, id).await?;
        // Reachability first: whether or not the hub has the blob, the same work is done
        // for a hash the caller cannot reach.
        let known = match self.reachable(access, sha256).await? {
            true => self.store().blob(sha256).await?,
            false => None,
        };
        if let Some(blob) = known {
            if blob.size == size && self.blobs().exists(sha256).await? {
                return Ok(UploadState {
                    upload_id: None,
                    sha256: sha256.to_owned(),
                    size,
                    offset: size,
                    complete: true,
                });
            }
        }
        let session = match self.store().find_upload(&repo.id, sha256, size).await? {
            Some(existing) => existing,
            None => self.create_session(access, &repo, sha256, size).await?,
        };
        if size == 0 {
            return self
                .write_chunk(
                    access,
                    id,
                    &session.id,
                    0,
                    futures::stream::empty::<Result<Bytes, std::io::Error>>(),
                )
                .await;
        }
        Ok(UploadState {
            upload_id: Some(session.id),
            sha256: sha256.to_owned(),
            size,
            offset: session.received,
            complete: false,
        })
    }

    /// A new upload session; a tenant's only within its quota.
    async fn create_session(
        &self,
        access: &Access,
        repo: &Repo,
        sha256: &str,
        size: i64,
    ) -> Result<UploadSession> {
        let now = chrono::Utc::now();
        let session = UploadSession {
            id: uuid::Uuid::new_v4().simple().to_string(),
            repo_id: repo.id.clone(),
            sha256: sha256.to_owned(),
            size,
            received: 0,
            created_at: now,
            updated_at: now,
        };
        let tenant_id = match (access, &repo.owner_tenant_id) {
            (Access::Tenant { .. }, Some(owner)) => owner,
            _ => return Ok(self.store().create_upload(&session).await?),
        };
        let config = self.config();
        let quota = HubQuota {
            max_bytes: i64::try_from(config.tenant_quota_bytes).unwrap_or(i64::MAX),
            max_open_uploads: i64::try_from(config.max_open_uploads).unwrap_or(i64::MAX),
        };
        match self
            .store()
            .create_upload_within(&session, tenant_id, quota)
            .await?
        {
            UploadAdmission::Created(session) => Ok(session),
            UploadAdmission::OverQuota(usage) if usage.open_uploads >= quota.max_open_uploads => {
                Err(HubError::QuotaExceeded(format!(
                    "your tenant has {} unfinished uploads open, the most this server allows; \
                     finish them (or let them expire) before starting another",
                    usage.open_uploads
                )))
            }
            UploadAdmission::OverQuota(usage) => Err(HubError::QuotaExceeded(format!(
                "your tenant holds {} bytes in the hub ({} stored, {} declared by unfinished \
                 uploads); this upload of {size} bytes would pass its quota of {} bytes: \
                 finish or abandon open uploads, or ask the operator for a larger \
                 --hub-tenant-quota-bytes",
                usage.bytes(),
                usage.stored_bytes,
                usage.declared_bytes,
                quota.max_bytes
            ))),
        }
    }

    /// Where an upload stands (to resume after an interruption).
    pub async fn upload_status(
        &self,
        access: &Access,
        id: &RepoId,
        upload_id: &str,
    ) -> Result<UploadState> {
        let (_, session) = self.session(access, id, upload_id).await?;
        Ok(UploadState {
            upload_id: Some(session.id),
            sha256: session.sha256,
            size: session.size,
            offset: session.received,
            complete: false,
        })
    }

    async fn session(
        &self,
        access: &Access,
        id: &RepoId,
        upload_id: &str,
    ) -> Result<(Repo, UploadSession)> {
        let repo = self.writable_repo(access, id).await?;
        let missing = || {
            HubError::invalid(
                "upload",
                format!("there is no upload '{upload_id}' in {id} (it finished, failed or expired); start the upload again"),
            )
        };
        let session = match self.store().upload(upload_id).await {
            Ok(s) => s,
            Err(StoreError::NotFound { .. }) => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        if session.repo_id != repo.id {
            return Err(missing());
        }
        Ok((repo, session))
    }

    /// Appends one chunk at `offset`, which must be where the upload stands. The last chunk
    /// checks the sha256 and stores the blob; a mismatch discards the upload.
    pub async fn write_chunk<S, E>(
        &self,
        access: &Access,
        id: &RepoId,
        upload_id: &str,
        offset: i64,
        body: S,
    ) -> Result<UploadState>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (repo, session) = self.session(access, id, upload_id).await?;
        if offset != session.received {
            return Err(HubError::WrongOffset {
                expected: session.received,
                got: offset,
            });
        }
        let _guard = {
            let mut busy = self
                .inner
                .busy
                .lock()
                .map_err(|_| HubError::Conflict("upload lock poisoned".into()))?;
            if !busy.insert(session.id.clone()) {
                return Err(HubError::Conflict(format!(
                    "another chunk of upload {upload_id} is being written; wait for it"
                )));
            }
            BusyGuard {
                hub: self,
                id: session.id.clone(),
            }
        };
        let size = session.size as u64;
        let written = self
            .blobs()
            .write_at(
                &session.id,
                offset as u64,
                size,
                self.config().max_chunk_bytes,
                body,
            )
            .await? as i64;
        let now = chrono::Utc::now();
        if !self
            .store()
            .advance_upload(&session.id, offset, written, now)
            .await?
        {
            return Err(HubError::Conflict(format!(
                "upload {upload_id} moved meanwhile; ask where it stands and resume"
            )));
        }
        let mut state = UploadState {
            upload_id: Some(session.id.clone()),
            sha256: session.sha256.clone(),
            size: session.size,
            offset: written,
            complete: false,
        };
        if written == session.size {
            self.finish_upload(&repo, &session).await?;
            state.upload_id = None;
            state.complete = true;
        }
        Ok(state)
    }

    /// Checks a complete upload's hash and stores its blob, recorded as uploaded by the
    /// repository's tenant (who has now shown it has the bytes).
    async fn finish_upload(&self, repo: &Repo, session: &UploadSession) -> Result<()> {
        let _gate = self.inner.blob_gate.read().await;
        let staging = self.blobs().staging_path(&session.id)?;
        let digests = blobs::hash_file(&staging).await?;
        if digests.sha256 != session.sha256 || digests.size as i64 != session.size {
            self.blobs().discard(&session.id).await?;
            self.store().delete_upload(&session.id).await?;
            return Err(HubError::invalid(
                "sha256",
                format!(
                    "the uploaded bytes have sha256 {} ({} bytes), not the declared {}; the \
                     upload was discarded: upload the file again",
                    digests.sha256, digests.size, session.sha256
                ),
            ));
        }
        self.blobs().promote(&session.id, &digests.sha256).await?;
        self.store()
            .put_blob(&Blob {
                sha256: digests.sha256,
                size: digests.size as i64,
                git_oid: digests.git_oid,
                created_at: chrono::Utc::now(),
            })
            .await?;
        if let Some(tenant_id) = &repo.owner_tenant_id {
            self.store()
                .record_blob_uploader(&session.sha256, tenant_id, chrono::Utc::now())
                .await?;
        }
        self.store().delete_upload(&session.id).await?;
        Ok(())
    }

    /// Makes a new revision of `branch` from uploaded blobs, atomically: either the branch
    /// moves to a commit naming only stored blobs, or nothing changes.
    pub async fn commit(
        &self,
        access: &Access,
        id: &RepoId,
        branch: &str,
        req: CommitRequest,
    ) -> Result<Commit> {
        validate_revision(branch)?;
        if crate::path::is_commit_id(branch) {
            return Err(HubError::invalid(
                "revision",
                "commit to a branch name, not a commit id",
            ));
        }
        if req.message.len() > MAX_MESSAGE_BYTES {
            return Err(HubError::invalid(
                "message",
                "the commit message is longer than 16 KiB",
            ));
        }
        if req.files.len() + req.deletes.len() > self.config().max_files {
            return Err(HubError::TooLarge(format!(
                "a commit may change at most {} files",
                self.config().max_files
            )));
        }
        let repo = self.writable_repo(access, id).await?;
        // No blob this commit names is removed before the commit is in.
        let _gate = self.inner.blob_gate.read().await;
        let head = self.store().find_ref(&repo.id, branch).await?;
        if let Some(h) = &head {
            if h.kind == store::hub::RefKind::Tag {
                return Err(HubError::Conflict(format!(
                    "'{branch}' is a tag; tags do not move"
                )));
            }
        }
        let head_id = head.map(|h| h.commit_id);
        if let Some(expected) = &req.parent {
            if head_id.as_deref() != Some(expected.as_str()) {
                return Err(HubError::Conflict(format!(
                    "branch '{branch}' is at {}, not {expected}; pull and commit again",
                    head_id.as_deref().unwrap_or("nothing")
                )));
            }
        }
        let mut edit = match (&head_id, req.replace) {
            (Some(h), false) => TreeEdit::from_parent(self.store().tree(&repo.id, h).await?),
            _ => TreeEdit::default(),
        };
        for path in &req.deletes {
            let path = ValidPath::parse(path)?;
            if !edit.delete(path.as_str()) {
                return Err(HubError::EntryNotFound {
                    repo: id.to_string(),
                    path: path.to_string(),
                    commit: head_id.clone().unwrap_or_default(),
                });
            }
        }
        // Blobs already in the tree are reachable: the caller may write (so read) this repo.
        let in_tree: std::collections::HashSet<String> = edit.sha256s().collect();
        for op in &req.files {
            let path = ValidPath::parse(&op.path)?;
            check_sha256(&op.sha256)?;
            let blob = match self.store().blob(&op.sha256).await? {
                Some(b)
                    if b.size == op.size
                        && (in_tree.contains(&b.sha256)
                            || self.reachable(access, &b.sha256).await?) =>
                {
                    Some(b)
                }
                // Unknown, another size, or another tenant's: one answer for all three.
                _ => None,
            };
            let Some(blob) = blob else {
                return Err(HubError::invalid(
                    "files",
                    format!(
                        "'{path}': no finished upload of {} bytes with sha256 {}; upload the file first",
                        op.size, op.sha256
                    ),
                ));
            };
            edit.put(TreeEntry {
                path: path.to_string(),
                sha256: blob.sha256,
                git_oid: blob.git_oid,
                size: blob.size,
            });
        }
        if edit.len() > self.config().max_files {
            return Err(HubError::TooLarge(format!(
                "a revision may hold at most {} files",
                self.config().max_files
            )));
        }
        if let Some(p) = edit.conflicting_path() {
            return Err(HubError::invalid(
                "files",
                format!("'{p}' would be both a file and a directory"),
            ));
        }
        let readme = match edit.get("README.md") {
            Some(e) if e.size <= MAX_CARD_BYTES => {
                let path = self.blobs().blob_path(&e.sha256)?;
                tokio::fs::read(path)
                    .await
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            }
            _ => None,
        };
        let files = edit.into_files();
        let summary = card::summarize(readme.as_deref(), files.iter().map(|f| f.path.as_str()));
        let now = chrono::Utc::now();
        let author = access.author();
        let message = if req.message.trim().is_empty() {
            format!("Update {} files", req.files.len() + req.deletes.len())
        } else {
            req.message.clone()
        };
        let commit = Commit {
            id: commit_id(&files, head_id.as_deref(), &author, &message, now),
            repo_id: repo.id.clone(),
            parent_id: head_id.clone(),
            message,
            author,
            created_at: now,
        };
        Ok(self
            .store()
            .commit(&NewCommit {
                commit,
                branch: branch.to_owned(),
                expected_parent: head_id,
                files,
                card: summary,
            })
            .await?)
    }

    /// Tags `rev` as `tag`; a tag never moves afterwards.
    pub async fn tag(&self, access: &Access, id: &RepoId, tag: &str, rev: &str) -> Result<Ref> {
        validate_revision(tag)?;
        validate_name("tag", tag.replace('/', "-").as_str())?;
        let repo = self.writable_repo(access, id).await?;
        let commit = self.resolve(&repo, rev).await?;
        Ok(self
            .store()
            .create_tag(&repo.id, tag, &commit.id, chrono::Utc::now())
            .await?)
    }
}
