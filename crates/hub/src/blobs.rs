//! Content-addressed file bytes under `DATA_DIR/hub`: `blobs/ab/abcdef…` named by sha256 (so
//! one content is stored once), and `uploads/ID.part` staging files of unfinished uploads.
//! A blob is only ever created by renaming a staging file whose hash was checked, so a
//! partial upload can never be read as a blob.

use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha1::Digest as _;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{HubError, Result};

/// The hashes and size of some content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    /// Git's blob id: sha1 of `blob {size}\0` followed by the content.
    pub git_oid: String,
    pub size: u64,
}

impl Digests {
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new(data.len() as u64);
        h.update(data);
        h.finish()
    }
}

/// Computes [`Digests`] incrementally; the size must be known up front (git's header).
pub struct Hasher {
    sha256: sha2::Sha256,
    sha1: sha1::Sha1,
    size: u64,
    seen: u64,
}

impl Hasher {
    pub fn new(size: u64) -> Self {
        let mut sha1 = sha1::Sha1::new();
        sha1.update(format!("blob {size}\0").as_bytes());
        Self {
            sha256: sha2::Sha256::new(),
            sha1,
            size,
            seen: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.sha1.update(data);
        self.seen += data.len() as u64;
    }

    pub fn finish(self) -> Digests {
        debug_assert_eq!(self.seen, self.size);
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            git_oid: hex::encode(self.sha1.finalize()),
            size: self.seen,
        }
    }
}

/// Hashes a file from disk in 1 MiB reads (on a blocking thread).
pub async fn hash_file(path: &Path) -> Result<Digests> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Digests> {
        let mut file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        let mut hasher = Hasher::new(size);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.seen != size {
            return Err(HubError::Io(std::io::Error::other(format!(
                "{} changed size while hashing",
                path.display()
            ))));
        }
        Ok(hasher.finish())
    })
    .await
    .map_err(|e| HubError::Io(std::io::Error::other(e.to_string())))?
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating) `root/blobs` and `root/uploads`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        Ok(Self { root })
    }

    /// Where the blob `sha256` lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> Result<PathBuf> {
        if !is_hex(sha256, 64) {
            return Err(HubError::invalid(
                "sha256",
                "a sha256 is 64 lowercase hex digits",
            ));
        }
        Ok(self.root.join("blobs").join(&sha256[..2]).join(sha256))
    }

    pub fn staging_path(&self, upload_id: &str) -> Result<PathBuf> {
        if !is_hex(upload_id, 32) {
            return Err(HubError::invalid("upload", "an upload id is 32 hex digits"));
        }
        Ok(self.root.join("uploads").join(format!("{upload_id}.part")))
    }

    pub async fn exists(&self, sha256: &str) -> Result<bool> {
        Ok(tokio::fs::try_exists(self.blob_path(sha256)?).await?)
    }

    /// Writes a chunk stream into an upload's staging file at `offset` (anything beyond
    /// `offset` from an unrecorded earlier attempt is cut off first). Refuses to write past
    /// `limit` bytes in all, or more than `max_chunk` bytes in this call (`TooLarge`, and
    /// nothing of the chunk stays). Returns the new length, synced to disk.
    pub async fn write_at<S, E>(
        &self,
        upload_id: &str,
        offset: u64,
        limit: u64,
        max_chunk: u64,
        mut body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.staging_path(upload_id)?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .await?;
        let len = file.metadata().await?.len();
        if len < offset {
            return Err(HubError::Conflict(format!(
                "the staging file of upload {upload_id} has {len} bytes, fewer than the {offset} \
                 recorded; start the upload again"
            )));
        }
        file.set_len(offset).await?;
        file.seek(SeekFrom::Start(offset)).await?;
        let mut at = offset;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                HubError::Io(std::io::Error::other(format!(
                    "reading the request body: {e}"
                )))
            })?;
            let end = at + chunk.len() as u64;
            if end - offset > max_chunk {
                file.set_len(offset).await?;
                return Err(HubError::TooLarge(format!(
                    "a chunk may carry at most {max_chunk} bytes; send smaller chunks and \
                     resume from byte {offset}"
                )));
            }
            if end > limit {
                file.set_len(offset).await?;
                return Err(HubError::TooLarge(format!(
                    "the chunk goes past the declared size of {limit} bytes"
                )));
            }
            file.write_all(&chunk).await?;
            at += chunk.len() as u64;
        }
        file.flush().await?;
        file.sync_data().await?;
        Ok(at)
    }

    /// Moves a finished staging file into place as blob `sha256` (which the caller checked).
    /// If the blob already exists the staging file is removed instead.
    pub async fn promote(&self, upload_id: &str, sha256: &str) -> Result<PathBuf> {
        let staging = self.staging_path(upload_id)?;
        let target = self.blob_path(sha256)?;
        if tokio::fs::try_exists(&target).await? {
            tokio::fs::remove_file(&staging).await?;
            return Ok(target);
        }
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&staging, &target).await?;
        Ok(target)
    }

    /// Moves `source`, a file on the same file system whose content the caller hashed to
    /// `sha256`, into place as that blob (others' staging areas, the Files API's). If the blob
    /// already exists, `source` is removed instead. Take [`crate::Hub::use_blobs`] first.
    pub async fn adopt(&self, source: &Path, sha256: &str) -> Result<PathBuf> {
        let target = self.blob_path(sha256)?;
        if tokio::fs::try_exists(&target).await? {
            tokio::fs::remove_file(source).await?;
            return Ok(target);
        }
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(source, &target).await?;
        Ok(target)
    }

    /// Removes an upload's staging file, if any.
    pub async fn discard(&self, upload_id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.staging_path(upload_id)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Deletes blob `sha256`'s file, if any (the store no longer names it).
    pub async fn remove(&self, sha256: &str) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(sha256)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Stores small content directly (tests, generated files).
    pub async fn put_bytes(&self, data: &[u8]) -> Result<Digests> {
        let digests = Digests::of(data);
        let target = self.blob_path(&digests.sha256)?;
        if !tokio::fs::try_exists(&target).await? {
            if let Some(dir) = target.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let tmp = self
                .root
                .join("uploads")
                .join(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
            tokio::fs::write(&tmp, data).await?;
            tokio::fs::rename(&tmp, &target).await?;
        }
        Ok(digests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_oid_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let d = Digests::of(b"hello\n");
        assert_eq!(d.git_oid, "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(
            d.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[tokio::test]
    async fn chunks_append_resume_and_promote_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path()).expect("open");
        let id = "0123456789abcdef0123456789abcdef";
        let chunk = |b: &'static [u8]| {
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b))])
        };
        assert_eq!(
            blobs.write_at(id, 0, 10, 64, chunk(b"hello")).await.ok(),
            Some(5)
        );
        // A retried chunk from 3 overwrites what followed.
        assert_eq!(
            blobs.write_at(id, 3, 10, 64, chunk(b"lo wor")).await.ok(),
            Some(9)
        );
        assert!(
            blobs.write_at(id, 9, 10, 64, chunk(b"ld!")).await.is_err(),
            "past the limit"
        );
        assert!(
            matches!(
                blobs.write_at(id, 9, 10, 0, chunk(b"l")).await,
                Err(HubError::TooLarge(_))
            ),
            "over the chunk limit"
        );
        assert_eq!(
            blobs.write_at(id, 9, 10, 64, chunk(b"l")).await.ok(),
            Some(10)
        );
        let staging = blobs.staging_path(id).expect("path");
        let d = hash_file(&staging).await.expect("hash");
        assert_eq!(d, Digests::of(b"hello worl"));
        let path = blobs.promote(id, &d.sha256).await.expect("promote");
        assert_eq!(
            std::fs::read(path).ok().as_deref(),
            Some(&b"hello worl"[..])
        );
        assert!(blobs.exists(&d.sha256).await.expect("exists"));
        assert!(blobs.blob_path("../x").is_err());
        assert!(blobs.staging_path("../../etc").is_err());
    }
}
