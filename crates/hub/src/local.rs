//! Committing files the server itself wrote (a fine-tuning job's adapter and its card) through
//! the same path a client's push takes: an upload per file under the writer's quota, checked
//! by sha256, then one atomic commit. Nothing bypasses the access rules or the quota.

use std::path::{Path, PathBuf};

use store::hub::Commit;
use tokio_util::io::ReaderStream;

use crate::error::{HubError, Result};
use crate::path::RepoId;
use crate::write::{CommitRequest, FileOp};
use crate::{blobs, Access, Hub};

/// One file to commit: where it goes in the repository, and where its bytes are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: String,
    pub source: PathBuf,
}

impl Hub {
    /// Uploads `files` from disk (skipping bytes the hub already holds for `access`) and
    /// commits them to `branch` of `id` as one new revision; the repository must exist and be
    /// writable by `access`.
    pub async fn commit_local(
        &self,
        access: &Access,
        id: &RepoId,
        branch: &str,
        message: &str,
        files: &[LocalFile],
    ) -> Result<Commit> {
        let mut ops = Vec::with_capacity(files.len());
        for file in files {
            ops.push(
                self.upload_local(access, id, &file.path, &file.source)
                    .await?,
            );
        }
        self.commit(
            access,
            id,
            branch,
            CommitRequest {
                message: message.to_owned(),
                files: ops,
                ..CommitRequest::default()
            },
        )
        .await
    }

    async fn upload_local(
        &self,
        access: &Access,
        id: &RepoId,
        path: &str,
        source: &Path,
    ) -> Result<FileOp> {
        let digests = blobs::hash_file(source).await?;
        let size = i64::try_from(digests.size).unwrap_or(i64::MAX);
        let state = self.start_upload(access, id, &digests.sha256, size).await?;
        if !state.complete {
            let upload_id = state.upload_id.clone().ok_or_else(|| {
                HubError::Conflict(format!("the upload of '{path}' has no session"))
            })?;
            let mut file = tokio::fs::File::open(source).await?;
            if state.offset > 0 {
                use tokio::io::AsyncSeekExt;
                let at = u64::try_from(state.offset).unwrap_or(0);
                file.seek(std::io::SeekFrom::Start(at)).await?;
            }
            let done = self
                .write_chunk(
                    access,
                    id,
                    &upload_id,
                    state.offset,
                    ReaderStream::new(file),
                )
                .await?;
            if !done.complete {
                return Err(HubError::Conflict(format!(
                    "'{path}' changed while it was uploaded ({} of {size} bytes stored)",
                    done.offset
                )));
            }
        }
        Ok(FileOp {
            path: path.to_owned(),
            sha256: digests.sha256,
            size,
        })
    }
}
