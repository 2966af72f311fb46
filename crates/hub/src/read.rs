//! Reading: repositories as the caller may see them, revisions, trees, files, search.

use std::path::PathBuf;

use store::hub::{Commit, Ref, Repo, RepoQuery, RepoSort, TreeEntry, Viewer};
use store::StoreError;

use crate::error::{HubError, Result};
use crate::path::{is_commit_id, validate_revision, RepoId, ValidPath};
use crate::{Access, Hub};

/// One file at one revision, ready to be served from `blob_path`.
#[derive(Debug, Clone)]
pub struct FileView {
    pub repo: Repo,
    pub commit: Commit,
    pub entry: TreeEntry,
    pub blob_path: PathBuf,
}

/// A repository search, as the HTTP layer parsed it.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub search: Option<String>,
    pub author: Option<String>,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub sort: RepoSort,
    pub descending: bool,
    pub limit: Option<i64>,
}

pub const MAX_SEARCH_LIMIT: i64 = 1000;
/// The most tags one search may require (each is one more condition on every repository).
pub const MAX_SEARCH_TAGS: usize = 16;
/// The longest search text, author, task or tag.
pub const MAX_SEARCH_TERM_BYTES: usize = 256;

impl SearchQuery {
    /// Refuses searches whose cost grows with the request: too many tags, or terms too long
    /// to match anything.
    fn check(&self) -> Result<()> {
        if self.tags.len() > MAX_SEARCH_TAGS {
            return Err(HubError::invalid(
                "filter",
                format!(
                    "a search may require at most {MAX_SEARCH_TAGS} tags, not {}; narrow the \
                     filter",
                    self.tags.len()
                ),
            ));
        }
        let terms = [
            ("search", self.search.as_deref()),
            ("author", self.author.as_deref()),
            ("pipeline_tag", self.pipeline_tag.as_deref()),
        ];
        let too_long = terms
            .into_iter()
            .chain(self.tags.iter().map(|t| ("filter", Some(t.as_str()))))
            .find(|(_, v)| v.is_some_and(|v| v.len() > MAX_SEARCH_TERM_BYTES));
        if let Some((param, _)) = too_long {
            return Err(HubError::invalid(
                param,
                format!("'{param}' is longer than {MAX_SEARCH_TERM_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

impl Hub {
    /// The repository, if `access` may see it; otherwise `RepoNotFound`, exactly as if it did
    /// not exist (or `Unauthenticated` when anonymous reads are off).
    pub async fn repo(&self, access: &Access, id: &RepoId) -> Result<Repo> {
        self.check_may_read(access)?;
        match self.store().repo(&id.org, &id.name).await {
            Ok(repo) if self.may_read(access, &repo) => Ok(repo),
            Ok(_) | Err(StoreError::NotFound { .. }) => Err(HubError::RepoNotFound(id.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// The commit `rev` names: a 40-hex commit id, a branch or a tag (`master` falls back to
    /// `main`, for ModelScope clients).
    pub async fn resolve(&self, repo: &Repo, rev: &str) -> Result<Commit> {
        validate_revision(rev)?;
        let not_found = || HubError::RevisionNotFound {
            repo: repo.full_name(),
            rev: rev.to_owned(),
        };
        if is_commit_id(rev) {
            match self.store().commit_by_id(&repo.id, rev).await {
                Ok(c) => return Ok(c),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut found = self.store().find_ref(&repo.id, rev).await?;
        if found.is_none() && rev == "master" {
            found = self.store().find_ref(&repo.id, "main").await?;
        }
        let r = found.ok_or_else(not_found)?;
        match self.store().commit_by_id(&repo.id, &r.commit_id).await {
            Ok(c) => Ok(c),
            Err(StoreError::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    /// A revision's files, sorted by path bytewise (whatever the database's collation), as
    /// [`crate::listing::page`] needs them.
    pub async fn tree(&self, repo: &Repo, commit: &Commit) -> Result<Vec<TreeEntry>> {
        let mut tree = self.store().tree(&repo.id, &commit.id).await?;
        tree.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(tree)
    }

    pub async fn refs(&self, repo: &Repo) -> Result<Vec<Ref>> {
        Ok(self.store().refs(&repo.id).await?)
    }

    /// A file at a revision, checked for visibility, with the path of its bytes.
    pub async fn file(
        &self,
        access: &Access,
        id: &RepoId,
        rev: &str,
        path: &str,
    ) -> Result<FileView> {
        let path = ValidPath::parse(path)?;
        let repo = self.repo(access, id).await?;
        let commit = self.resolve(&repo, rev).await?;
        let entry = self
            .store()
            .tree_entry(&repo.id, &commit.id, path.as_str())
            .await?
            .ok_or_else(|| HubError::EntryNotFound {
                repo: repo.full_name(),
                path: path.to_string(),
                commit: commit.id.clone(),
            })?;
        let blob_path = self.blobs().blob_path(&entry.sha256)?;
        Ok(FileView {
            repo,
            commit,
            entry,
            blob_path,
        })
    }

    /// Counts one download of the repository.
    pub async fn count_download(&self, repo: &Repo) -> Result<()> {
        Ok(self.store().count_download(&repo.id).await?)
    }

    /// Repositories `access` may see that match the query.
    pub async fn search(&self, access: &Access, q: SearchQuery) -> Result<Vec<Repo>> {
        self.check_may_read(access)?;
        q.check()?;
        let viewer = match access {
            Access::Admin => Viewer::Admin,
            Access::Anonymous => Viewer::Anonymous,
            Access::Tenant {
                tenant_id,
                read,
                write,
                ..
            } if *read || *write => Viewer::Tenant(tenant_id.clone()),
            Access::Tenant { .. } => Viewer::Anonymous,
        };
        let query = RepoQuery {
            viewer,
            search: q.search,
            author: q.author,
            tags: q.tags,
            pipeline_tag: q.pipeline_tag,
            sort: q.sort,
            descending: q.descending,
            limit: q
                .limit
                .unwrap_or(MAX_SEARCH_LIMIT)
                .clamp(1, MAX_SEARCH_LIMIT),
        };
        Ok(self.store().search_repos(&query).await?)
    }

    /// The single `.gguf` of a revision, or the one named: for `serve --model hub:…`.
    /// Returns the file and the path of its bytes.
    pub async fn gguf(&self, id: &RepoId, rev: &str, file: Option<&str>) -> Result<FileView> {
        let access = Access::Admin;
        if let Some(file) = file {
            return self.file(&access, id, rev, file).await;
        }
        let repo = self.repo(&access, id).await?;
        let commit = self.resolve(&repo, rev).await?;
        let tree = self.tree(&repo, &commit).await?;
        let ggufs: Vec<&TreeEntry> = tree
            .iter()
            .filter(|e| e.path.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        match ggufs.as_slice() {
            [one] => self.file(&access, id, &commit.id, &one.path).await,
            [] => Err(HubError::invalid(
                "model",
                format!("{id}@{rev} holds no .gguf file; push one, or serve another repository"),
            )),
            many => Err(HubError::invalid(
                "model",
                format!(
                    "{id}@{rev} holds several .gguf files ({}); pick one with #FILE",
                    many.iter()
                        .map(|e| e.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}
