//! An upload: the bytes streamed to a staging file within the size limit and the tenant's
//! room, then hashed and checked, moved into the blob store and recorded. A refused upload
//! leaves nothing: its staging file goes when [`Staged`] drops, and bytes already moved into
//! the blob store go again unless something else names them.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::SubsecRound;
use futures::{Stream, StreamExt};
use hub::blobs::{Digests, Hasher};
use store::hub::Blob;
use store::{FilePut, FileRecord};
use tokio::io::AsyncWriteExt;

use crate::error::{FilesError, Result};
use crate::{jsonl, now, Files, NewFile};

/// Longest file name kept, in bytes.
const MAX_FILENAME_BYTES: usize = 255;

/// An upload's bytes in the staging area; removed when dropped unless they were moved into
/// the blob store.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    size: u64,
    armed: bool,
}

impl Staged {
    /// Bytes received.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staged upload");
                }
            }
        }
    }
}

impl Files {
    /// Streams `body` (a file's bytes; a read error is returned as it is) to a new staging
    /// file, refusing as soon as it passes the size limit (`TooLarge`) or the tenant's room
    /// under its quota (`OverQuota`).
    pub async fn stage<S>(&self, tenant_id: &str, mut body: S) -> Result<Staged>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        let quota = self.quota(tenant_id).await?;
        let room = u64::try_from(quota.quota_bytes.saturating_sub(quota.used_bytes)).unwrap_or(0);
        let limit = self.config().max_file_bytes;
        let path = self
            .inner
            .staging
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::fs::File::create(&path).await?;
        let mut staged = Staged {
            path,
            size: 0,
            armed: true,
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            let size = staged.size + chunk.len() as u64;
            if size > limit {
                return Err(FilesError::TooLarge { limit });
            }
            if size > room {
                return Err(FilesError::OverQuota {
                    used: quota.used_bytes,
                    quota: quota.quota_bytes,
                    size,
                    more: "+",
                });
            }
            file.write_all(&chunk).await?;
            staged.size = size;
        }
        file.flush().await?;
        file.sync_data().await?;
        Ok(staged)
    }

    /// Checks `new` and the staged bytes (JSONL where the purpose wants it), moves them into
    /// the blob store and records the file, within the tenant's quota.
    pub async fn create(
        &self,
        tenant_id: &str,
        staged: Staged,
        new: NewFile,
    ) -> Result<FileRecord> {
        let id = format!("file-{}", uuid::Uuid::new_v4().simple());
        self.create_as(tenant_id, staged, new, id).await
    }

    /// Like [`Files::create`], under the id `id` (the server's own files, whose ids must be
    /// known before they are written: a batch's output). A taken id is
    /// `FilesError::Store(StoreError::Conflict)`, and leaves the blob to the file holding it.
    pub async fn create_as(
        &self,
        tenant_id: &str,
        mut staged: Staged,
        new: NewFile,
        id: String,
    ) -> Result<FileRecord> {
        check_filename(&new.filename)?;
        // Microseconds, as both databases keep them: the record returned is the one stored.
        let created_at = now().trunc_subsecs(6);
        let expires_at = match new.expires_after {
            None => None,
            Some(secs) => Some(created_at + self.expiry(secs)?),
        };
        let (path, size, purpose) = (staged.path.clone(), staged.size, new.purpose);
        let digests = tokio::task::spawn_blocking(move || scan(&path, size, purpose))
            .await
            .map_err(|e| FilesError::Io(std::io::Error::other(e.to_string())))??;
        let record = FileRecord {
            id,
            tenant_id: tenant_id.to_owned(),
            filename: new.filename,
            purpose: purpose.as_str().to_owned(),
            bytes: i64::try_from(size).unwrap_or(i64::MAX),
            sha256: digests.sha256.clone(),
            created_at,
            expires_at,
        };
        let blob = Blob {
            sha256: digests.sha256,
            size: record.bytes,
            git_oid: digests.git_oid,
            created_at,
        };
        let gate = self.inner.hub.use_blobs().await;
        self.inner
            .hub
            .blobs()
            .adopt(&staged.path, &blob.sha256)
            .await?;
        staged.armed = false;
        let put = self
            .store()
            .put_file(&record, &blob, self.default_quota())
            .await;
        drop(gate);
        match put {
            Ok(FilePut::Stored) => Ok(record),
            Ok(FilePut::OverQuota { used, quota }) => {
                self.release(&blob.sha256).await;
                Err(FilesError::OverQuota {
                    used,
                    quota,
                    size,
                    more: "",
                })
            }
            Err(e) => {
                self.release(&blob.sha256).await;
                Err(e.into())
            }
        }
    }

    /// `expires_after[seconds]` within the configured bounds.
    fn expiry(&self, secs: u64) -> Result<chrono::TimeDelta> {
        let (min, max) = (self.config().min_expiry, self.config().max_expiry);
        if secs < min.as_secs() || secs > max.as_secs() {
            return Err(FilesError::invalid(
                "expires_after[seconds]",
                format!(
                    "Invalid 'expires_after[seconds]': {secs}; expected {} to {} seconds \
                     (an hour to 30 days).",
                    min.as_secs(),
                    max.as_secs()
                ),
            ));
        }
        chrono::TimeDelta::try_seconds(i64::try_from(secs).unwrap_or(i64::MAX)).ok_or_else(|| {
            FilesError::invalid(
                "expires_after[seconds]",
                "Invalid 'expires_after[seconds]'.",
            )
        })
    }

    /// Deletes blob `sha256`, bytes put in place for an upload that was then refused, unless
    /// something else names it (or took it up meanwhile).
    async fn release(&self, sha256: &str) {
        let hold = self.inner.hub.hold_blobs().await;
        match self.store().release_blob(sha256).await {
            Ok(true) => {
                let gone = [sha256.to_owned()];
                if let Err(e) = self.inner.hub.remove_files(&hold, &gone, &[]).await {
                    tracing::error!(error = %e, "could not delete a refused upload's blob");
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(sha256, error = %e, "could not release a refused upload's blob")
            }
        }
    }
}

fn check_filename(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_FILENAME_BYTES {
        return Err(FilesError::invalid(
            "file",
            format!("The file's name must be 1 to {MAX_FILENAME_BYTES} bytes long."),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FilesError::invalid(
            "file",
            "The file's name must not contain control characters.",
        ));
    }
    Ok(())
}

/// Feeds what is read to a hasher.
struct Tee<'a, R> {
    inner: R,
    hasher: &'a mut Hasher,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes a staged file of `size` bytes and, for purposes that want it, checks it is JSONL;
/// one pass, in bounded memory.
fn scan(path: &Path, size: u64, purpose: crate::Purpose) -> Result<Digests> {
    let file = std::fs::File::open(path)?;
    let mut hasher = Hasher::new(size);
    {
        let tee = Tee {
            inner: file.take(size),
            hasher: &mut hasher,
        };
        let mut reader = BufReader::with_capacity(1 << 20, tee);
        if purpose.wants_jsonl() {
            jsonl::check(&mut reader).map_err(|e| {
                let at = if e.line == 0 {
                    String::new()
                } else {
                    format!(" line {}:", e.line)
                };
                FilesError::invalid(
                    "file",
                    format!(
                        "The file is not valid JSONL for purpose '{}':{at} {}. Every line \
                         must be one JSON object.",
                        purpose.as_str(),
                        e.reason
                    ),
                )
            })?;
        }
        // What the check left (everything, for other purposes).
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
        }
    }
    Ok(hasher.finish())
}
