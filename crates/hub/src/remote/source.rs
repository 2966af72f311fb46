//! Downloading from a hub: `hf:ORG/NAME` (Hugging Face, or `HF_ENDPOINT`), `ms:ORG/NAME`
//! (ModelScope, or `MODELSCOPE_ENDPOINT`) or `http(s)://host/ORG/NAME` (another Flywheel,
//! over the Hugging Face protocol). Files download into a partial file that a later run
//! resumes with `Range: bytes=N-`, and are checked against the sha256 (or git blob id) the
//! listing gave before they count as done.

use std::path::Path;

use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{check, encode_component, encode_path};
use crate::blobs::hash_file;
use crate::error::{HubError, Result};
use crate::path::{validate_revision, RepoId, ValidPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HuggingFace,
    ModelScope,
}

/// Where a pull comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub protocol: Protocol,
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    pub repo: RepoId,
}

/// One file of a remote revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: ValidPath,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub git_oid: Option<String>,
}

/// A remote revision: its commit (or the revision asked for) and files.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub revision: String,
    pub files: Vec<RemoteFile>,
}

impl Source {
    /// Parses `hf:ORG/NAME`, `ms:ORG/NAME` or `http(s)://HOST[:PORT]/ORG/NAME`.
    pub fn parse(spec: &str) -> Result<Self> {
        let env = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
                .trim_end_matches('/')
                .to_owned()
        };
        if let Some(repo) = spec.strip_prefix("hf:") {
            return Ok(Self {
                protocol: Protocol::HuggingFace,
                base: env("HF_ENDPOINT", "https://huggingface.co"),
                repo: RepoId::parse(repo)?,
            });
        }
        if let Some(repo) = spec.strip_prefix("ms:") {
            return Ok(Self {
                protocol: Protocol::ModelScope,
                base: env("MODELSCOPE_ENDPOINT", "https://modelscope.cn"),
                repo: RepoId::parse(repo)?,
            });
        }
        for scheme in ["http://", "https://"] {
            if let Some(rest) = spec.strip_prefix(scheme) {
                let mut parts = rest.trim_end_matches('/').splitn(2, '/');
                let host = parts.next().unwrap_or_default();
                let repo = parts.next().unwrap_or_default();
                if host.is_empty() {
                    break;
                }
                return Ok(Self {
                    protocol: Protocol::HuggingFace,
                    base: format!("{scheme}{host}"),
                    repo: RepoId::parse(repo)?,
                });
            }
        }
        Err(HubError::invalid(
            "source",
            format!(
                "'{spec}' is not a source: use hf:ORG/NAME, ms:ORG/NAME or http(s)://HOST/ORG/NAME"
            ),
        ))
    }

    /// The revision to ask for when none is given.
    pub fn default_revision(&self) -> &'static str {
        match self.protocol {
            Protocol::HuggingFace => "main",
            Protocol::ModelScope => "master",
        }
    }

    fn request(
        &self,
        http: &reqwest::Client,
        url: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = http.get(url);
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// GET `url` and decode its JSON answer, read up to [`MAX_LISTING_BYTES`].
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        url: &str,
        token: Option<&str>,
    ) -> Result<T> {
        let response = check(
            self.request(http, url, token).send().await.map_err(net)?,
            url,
        )
        .await?;
        let body = read_bounded(response, MAX_LISTING_BYTES)
            .await?
            .ok_or_else(|| {
                HubError::Remote(format!(
                    "{url}: the answer is larger than {MAX_LISTING_BYTES} bytes; this is not a \
                     listing Flywheel can pull"
                ))
            })?;
        serde_json::from_slice(&body)
            .map_err(|e| HubError::Remote(format!("{url}: unexpected answer: {e}")))
    }

    /// Lists the files of `revision`. Every file must come with a sha256 or a git blob id
    /// (a download is only kept once it matches one), the listing must be bounded
    /// ([`MAX_LISTING_BYTES`], [`MAX_LISTING_FILES`]), and the revision the source answers
    /// with must be a valid revision name (it names a local directory).
    pub async fn snapshot(
        &self,
        http: &reqwest::Client,
        revision: &str,
        token: Option<&str>,
    ) -> Result<Snapshot> {
        validate_revision(revision)?;
        let snapshot = self.list(http, revision, token).await?;
        validate_revision(&snapshot.revision).map_err(|e| {
            HubError::Remote(format!("the source answered with a bad revision name: {e}"))
        })?;
        if snapshot.files.len() > MAX_LISTING_FILES {
            return Err(HubError::Remote(format!(
                "the source lists {} files, more than the {MAX_LISTING_FILES} a pull takes",
                snapshot.files.len()
            )));
        }
        if let Some(f) = snapshot
            .files
            .iter()
            .find(|f| f.sha256.is_none() && f.git_oid.is_none())
        {
            return Err(HubError::Remote(format!(
                "the source lists '{}' without a sha256 or git blob id, so its download could \
                 not be checked; refusing to pull it",
                f.path
            )));
        }
        Ok(snapshot)
    }

    async fn list(
        &self,
        http: &reqwest::Client,
        revision: &str,
        token: Option<&str>,
    ) -> Result<Snapshot> {
        match self.protocol {
            Protocol::HuggingFace => {
                let url = format!(
                    "{}/api/models/{}/revision/{}?blobs=true",
                    self.base,
                    self.repo,
                    encode_component(revision)
                );
                let info: HfModelInfo = self.get_json(http, &url, token).await?;
                let files = info
                    .siblings
                    .into_iter()
                    .map(|s| {
                        Ok(RemoteFile {
                            path: ValidPath::parse(&s.rfilename)?,
                            size: s.lfs.as_ref().map(|l| l.size).or(s.size),
                            sha256: s
                                .lfs
                                .map(|l| l.sha256)
                                .filter(|h| is_hex(h, 64))
                                .map(|h| h.to_ascii_lowercase()),
                            git_oid: s
                                .blob_id
                                .filter(|h| is_hex(h, 40))
                                .map(|h| h.to_ascii_lowercase()),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Snapshot {
                    revision: info.sha.unwrap_or_else(|| revision.to_owned()),
                    files,
                })
            }
            Protocol::ModelScope => {
                let url = format!(
                    "{}/api/v1/models/{}/repo/files?Revision={}&Recursive=true",
                    self.base,
                    self.repo,
                    encode_component(revision)
                );
                let listing: MsListing = self.get_json(http, &url, token).await?;
                let files = listing
                    .data
                    .files
                    .into_iter()
                    .filter(|f| f.r#type == "blob")
                    .map(|f| {
                        Ok(RemoteFile {
                            path: ValidPath::parse(&f.path)?,
                            size: Some(f.size),
                            sha256: f
                                .sha256
                                .filter(|h| is_hex(h, 64))
                                .map(|h| h.to_ascii_lowercase()),
                            git_oid: f
                                .id
                                .filter(|h| is_hex(h, 40))
                                .map(|h| h.to_ascii_lowercase()),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Snapshot {
                    revision: revision.to_owned(),
                    files,
                })
            }
        }
    }

    /// The URL of a file's bytes.
    pub fn file_url(&self, revision: &str, path: &ValidPath) -> String {
        match self.protocol {
            Protocol::HuggingFace => format!(
                "{}/{}/resolve/{}/{}",
                self.base,
                self.repo,
                encode_component(revision),
                encode_path(path.as_str())
            ),
            Protocol::ModelScope => format!(
                "{}/api/v1/models/{}/repo?Revision={}&FilePath={}",
                self.base,
                self.repo,
                encode_component(revision),
                encode_component(path.as_str())
            ),
        }
    }

    /// Downloads `file` into `partial`, resuming from what `partial` already holds, then
    /// checks its hash. `progress(n)` is called with every `n` bytes written (after first
    /// being called once with the bytes already there). Returns the bytes resumed from.
    pub async fn download(
        &self,
        http: &reqwest::Client,
        revision: &str,
        file: &RemoteFile,
        partial: &Path,
        token: Option<&str>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        if let Some(dir) = partial.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut have = match tokio::fs::metadata(partial).await {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if file.size.is_some_and(|size| have > size) {
            have = 0;
        }
        let url = self.file_url(revision, &file.path);
        if have > 0 && file.size == Some(have) {
            progress(have);
            self.verify(file, partial).await?;
            return Ok(0);
        }
        let mut req = self.request(http, &url, token);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = req.send().await.map_err(net)?;
        let status = response.status();
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            // The partial file is not a prefix the source can continue: start over.
            tokio::fs::remove_file(partial).await?;
            return Box::pin(self.download(http, revision, file, partial, token, progress)).await;
        }
        let response = check(response, &url).await?;
        let resumed = if status == reqwest::StatusCode::PARTIAL_CONTENT {
            have
        } else {
            0
        };
        let mut out = if resumed > 0 {
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(partial)
                .await?
        } else {
            tokio::fs::File::create(partial).await?
        };
        progress(resumed);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(net)?;
            out.write_all(&chunk).await?;
            progress(chunk.len() as u64);
        }
        out.flush().await?;
        out.sync_data().await?;
        self.verify(file, partial).await?;
        Ok(resumed)
    }

    /// Checks a downloaded file against the listing's size and hash; a bad file is removed.
    async fn verify(&self, file: &RemoteFile, local: &Path) -> Result<()> {
        let digests = hash_file(local).await?;
        let bad = |what: &str, want: &str, got: &str| {
            HubError::Remote(format!(
            "{}: the downloaded file's {what} is {got}, the source says {want}; it was removed, \
             run the pull again",
            file.path
        ))
        };
        let failure = if file.size.is_some_and(|s| s != digests.size) {
            Some(bad(
                "size",
                &file.size.unwrap_or_default().to_string(),
                &digests.size.to_string(),
            ))
        } else if let Some(want) = file.sha256.as_deref().filter(|w| *w != digests.sha256) {
            Some(bad("sha256", want, &digests.sha256))
        } else if file.sha256.is_some() {
            None
        } else {
            match file.git_oid.as_deref() {
                Some(want) if want != digests.git_oid => {
                    Some(bad("git blob id", want, &digests.git_oid))
                }
                Some(_) => None,
                None => Some(HubError::Remote(format!(
                    "{}: the source gave no sha256 or git blob id to check the download \
                     against; it was removed",
                    file.path
                ))),
            }
        };
        match failure {
            Some(err) => {
                tokio::fs::remove_file(local).await?;
                Err(err)
            }
            None => Ok(()),
        }
    }
}

/// The largest file listing a pull reads.
pub const MAX_LISTING_BYTES: usize = 64 << 20;
/// The most files a pull takes from one revision.
pub const MAX_LISTING_FILES: usize = 100_000;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A response's body, or `None` if it is longer than `limit` bytes (reading stops there).
pub(crate) async fn read_bounded(
    response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(net)?;
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn net(e: reqwest::Error) -> HubError {
    HubError::Remote(format!(
        "network error: {e}; run the command again to resume"
    ))
}

#[derive(Debug, Deserialize)]
struct HfModelInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<HfSibling>,
}

#[derive(Debug, Deserialize)]
struct HfSibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<HfLfs>,
}

#[derive(Debug, Deserialize)]
struct HfLfs {
    sha256: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct MsListing {
    #[serde(rename = "Data")]
    data: MsData,
}

#[derive(Debug, Deserialize)]
struct MsData {
    #[serde(rename = "Files", default)]
    files: Vec<MsFile>,
}

#[derive(Debug, Deserialize)]
struct MsFile {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "Sha256")]
    sha256: Option<String>,
    /// The git blob id.
    #[serde(rename = "Id")]
    id: Option<String>,
    #[serde(rename = "Type")]
    r#type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let s = Source::parse("http://127.0.0.1:8080/org/name").expect("url");
        assert_eq!(
            (s.base.as_str(), s.repo.to_string()),
            ("http://127.0.0.1:8080", "org/name".into())
        );
        assert_eq!(
            Source::parse("ms:qwen/Qwen2").expect("ms").protocol,
            Protocol::ModelScope
        );
        assert_eq!(
            Source::parse("hf:a/b").expect("hf").default_revision(),
            "main"
        );
        for bad in ["x:a/b", "hf:a", "http:///a/b", "https://h/a", "hf:../x"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
        let s = Source::parse("ms:o/n").expect("ms");
        let p = ValidPath::parse("d/a b.txt").expect("path");
        assert!(s
            .file_url("master", &p)
            .ends_with("/api/v1/models/o/n/repo?Revision=master&FilePath=d%2Fa%20b.txt"));
    }
}
