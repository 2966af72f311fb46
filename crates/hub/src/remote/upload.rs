//! Flywheel's upload API, client side (`flywheel push`, and `pull` writing into a server):
//! create the repository, upload each file in chunks (resuming where the server stands after
//! a failure), then one commit that makes the new revision.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::check;
use crate::error::{HubError, Result};
use crate::path::RepoId;
use crate::write::{CommitRequest, UploadState};

/// Bytes per upload request.
pub const CHUNK_BYTES: u64 = 16 << 20;
const RETRIES: u32 = 5;

/// A Flywheel server, as a client with a key.
#[derive(Debug, Clone)]
pub struct FlywheelClient {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
pub struct CommitView {
    pub commit: String,
}

impl FlywheelClient {
    pub fn new(base: &str, api_key: &str) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            http: super::http_client()?,
        })
    }

    fn url(&self, repo: &RepoId, rest: &str) -> String {
        format!("{}/api/v1/hub/repos/{repo}{rest}", self.base)
    }

    /// Creates the repository; one that exists already is fine. Returns whether it was new.
    pub async fn ensure_repo(&self, repo: &RepoId, private: bool) -> Result<bool> {
        let url = format!("{}/api/v1/hub/repos", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.api_key)
            .json(&json!({"org": repo.org, "name": repo.name, "private": private}))
            .send()
            .await
            .map_err(net)?;
        if response.status() == reqwest::StatusCode::CONFLICT {
            return Ok(false);
        }
        check(response, &format!("creating {repo}")).await?;
        Ok(true)
    }

    /// Uploads one local file (already hashed) unless the server has its blob; resumes
    /// after network errors from where the server stands. `progress(n)` gets byte deltas.
    pub async fn upload_file(
        &self,
        repo: &RepoId,
        local: &Path,
        sha256: &str,
        size: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let start_url = self.url(repo, "/uploads");
        let mut state: UploadState = self
            .json(
                self.http
                    .post(&start_url)
                    .json(&json!({"sha256": sha256, "size": size})),
                &start_url,
            )
            .await?;
        progress(state.offset as u64);
        let mut file = tokio::fs::File::open(local).await?;
        let mut failures = 0;
        while !state.complete {
            let Some(id) = state.upload_id.clone() else {
                return Err(HubError::Remote("the server gave no upload id".into()));
            };
            let offset = state.offset as u64;
            let len = CHUNK_BYTES.min(size - offset);
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut chunk = vec![0u8; len as usize];
            file.read_exact(&mut chunk).await?;
            let url = self.url(repo, &format!("/uploads/{id}?offset={offset}"));
            match self
                .json::<UploadState>(self.http.put(&url).body(chunk), &url)
                .await
            {
                Ok(next) => {
                    progress((next.offset as u64).saturating_sub(offset));
                    state = next;
                    failures = 0;
                }
                Err(e) if failures < RETRIES => {
                    failures += 1;
                    tracing::warn!(error = %e, attempt = failures, "chunk failed; asking the server where the upload stands");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                    let status_url = self.url(repo, &format!("/uploads/{id}"));
                    if let Ok(now) = self
                        .json::<UploadState>(self.http.get(&status_url), &status_url)
                        .await
                    {
                        progress((now.offset as u64).saturating_sub(offset));
                        state = now;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes a new revision of `branch`. Returns the commit id.
    pub async fn commit(
        &self,
        repo: &RepoId,
        branch: &str,
        request: &CommitRequest,
    ) -> Result<String> {
        let url = self.url(
            repo,
            &format!("/commits/{}", super::encode_component(branch)),
        );
        let view: CommitView = self.json(self.http.post(&url).json(request), &url).await?;
        Ok(view.commit)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T> {
        let response = req.bearer_auth(&self.api_key).send().await.map_err(net)?;
        check(response, what)
            .await?
            .json()
            .await
            .map_err(|e| HubError::Remote(format!("{what}: unexpected answer: {e}")))
    }
}

fn net(e: reqwest::Error) -> HubError {
    HubError::Remote(format!(
        "network error: {e}; is the server running? run the command again to resume"
    ))
}
