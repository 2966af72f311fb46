//! What the model hub persists: repositories, immutable commits over file trees, refs
//! (`main` moves, tags do not), download counts and resumable upload sessions.
//!
//! The bytes themselves live in the hub's content-addressed blob directory; the store only
//! knows their sha256. Callers (the `hub` crate) validate names and paths, compute commit ids
//! and check permissions; the store keeps the records consistent: a commit, its tree and the
//! branch move are one transaction, commits and tree entries are never changed afterwards
//! (triggers refuse it), and a tag never moves.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// A repository `org/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub id: String,
    pub org: String,
    pub name: String,
    /// The tenant owning the org; `None` for a namespace only the admin writes to.
    pub owner_tenant_id: Option<String>,
    pub private: bool,
    pub created_at: Timestamp,
    /// Time of the last commit (or creation).
    pub updated_at: Timestamp,
    pub downloads: i64,
    pub card: CardSummary,
}

impl Repo {
    /// `org/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }
}

/// What the model card (README.md front matter) says, as far as search needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardSummary {
    pub license: Option<String>,
    pub pipeline_tag: Option<String>,
    pub base_model: Option<String>,
    pub languages: Vec<String>,
    /// Searchable tags: the card's own plus derived ones (`license:…`, `gguf`, …).
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepo {
    pub id: String,
    pub org: String,
    pub name: String,
    pub owner_tenant_id: Option<String>,
    pub private: bool,
    pub created_at: Timestamp,
}

/// One file of a commit's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// A validated relative path (`dir/file.bin`).
    pub path: String,
    /// Hex sha256 of the content: the blob's address.
    pub sha256: String,
    /// Hex git blob id (sha1 of `blob {size}\0` + content), what git-based clients expect.
    pub git_oid: String,
    pub size: i64,
}

/// File bytes in the blob directory, known by their sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub size: i64,
    pub git_oid: String,
    pub created_at: Timestamp,
}

/// An immutable revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// 40 lowercase hex digits.
    pub id: String,
    pub repo_id: String,
    pub parent_id: Option<String>,
    pub message: String,
    pub author: String,
    pub created_at: Timestamp,
}

/// A new commit moving `branch` from `expected_parent` (compare-and-swap) to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommit {
    pub commit: Commit,
    pub branch: String,
    /// The branch head this commit was built on; `None` for a branch that does not exist yet.
    /// Another head is `Conflict` (someone committed in between).
    pub expected_parent: Option<String>,
    pub files: Vec<TreeEntry>,
    /// The card of the new tree, replacing the repo's.
    pub card: CardSummary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub name: String,
    pub kind: RefKind,
    pub commit_id: String,
    pub updated_at: Timestamp,
}

/// Who is searching: decides which private repos are visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    Tenant(String),
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepoSort {
    #[default]
    Downloads,
    LastModified,
    CreatedAt,
    Name,
}

/// A repository search (`GET /api/models`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoQuery {
    pub viewer: Viewer,
    /// Case-insensitive substring of `org/name`.
    pub search: Option<String>,
    /// Exact org.
    pub author: Option<String>,
    /// Every one of these tags must be present.
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub sort: RepoSort,
    /// Descending (largest / newest first) unless false.
    pub descending: bool,
    pub limit: i64,
}

/// A resumable upload of one blob: bytes `0..received` are in its staging file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: String,
    pub repo_id: String,
    pub sha256: String,
    pub size: i64,
    pub received: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Hub metadata. Every method is one statement or one transaction.
#[async_trait]
pub trait HubStore: Send + Sync + 'static {
    /// A taken `org/name` is `Conflict`.
    async fn create_repo(&self, new: &NewRepo) -> Result<Repo>;
    /// `NotFound` if there is none.
    async fn repo(&self, org: &str, name: &str) -> Result<Repo>;
    async fn set_repo_private(&self, repo_id: &str, private: bool) -> Result<()>;
    async fn search_repos(&self, query: &RepoQuery) -> Result<Vec<Repo>>;
    async fn count_download(&self, repo_id: &str) -> Result<()>;

    /// Writes the commit and its tree, moves the branch and updates the repo's card, all or
    /// nothing. A branch head other than `expected_parent` is `Conflict`.
    async fn commit(&self, new: &NewCommit) -> Result<Commit>;
    /// `NotFound` if the repo has no such commit.
    async fn commit_by_id(&self, repo_id: &str, commit_id: &str) -> Result<Commit>;
    async fn refs(&self, repo_id: &str) -> Result<Vec<Ref>>;
    /// `None` if there is no such ref.
    async fn find_ref(&self, repo_id: &str, name: &str) -> Result<Option<Ref>>;
    /// Tags never move: an existing tag name is `Conflict`; an unknown commit is `NotFound`.
    async fn create_tag(
        &self,
        repo_id: &str,
        name: &str,
        commit_id: &str,
        now: Timestamp,
    ) -> Result<Ref>;
    /// The whole tree, sorted by path.
    async fn tree(&self, repo_id: &str, commit_id: &str) -> Result<Vec<TreeEntry>>;
    /// One file of a tree; `None` if absent.
    async fn tree_entry(
        &self,
        repo_id: &str,
        commit_id: &str,
        path: &str,
    ) -> Result<Option<TreeEntry>>;

    /// Records a blob whose bytes are in place (again: nothing changes).
    async fn put_blob(&self, blob: &Blob) -> Result<()>;
    async fn blob(&self, sha256: &str) -> Result<Option<Blob>>;

    async fn create_upload(&self, upload: &UploadSession) -> Result<UploadSession>;
    /// `NotFound` if there is none.
    async fn upload(&self, id: &str) -> Result<UploadSession>;
    /// The open upload of this blob into this repo, to resume.
    async fn find_upload(
        &self,
        repo_id: &str,
        sha256: &str,
        size: i64,
    ) -> Result<Option<UploadSession>>;
    /// Records progress only if `received` was `from` (so two writers cannot both append);
    /// returns whether it did.
    async fn advance_upload(
        &self,
        id: &str,
        from: i64,
        received: i64,
        now: Timestamp,
    ) -> Result<bool>;
    async fn delete_upload(&self, id: &str) -> Result<()>;
    /// Uploads untouched since before `before`, for cleanup.
    async fn stale_uploads(&self, before: Timestamp) -> Result<Vec<UploadSession>>;
}

/// The repository search as SQL both databases accept: `$1…$n` are the returned text binds,
/// `$n+1` the limit. `public` is the database's spelling of "the repo is public".
pub(crate) fn search_sql(q: &RepoQuery, public: &str) -> (String, Vec<String>) {
    let mut binds: Vec<String> = Vec::new();
    let next = |value: String, binds: &mut Vec<String>| {
        binds.push(value);
        format!("${}", binds.len())
    };
    let mut sql = String::from("SELECT r.* FROM hub_repos r WHERE 1 = 1");
    match &q.viewer {
        Viewer::Admin => {}
        Viewer::Anonymous => sql.push_str(&format!(" AND {public}")),
        Viewer::Tenant(id) => {
            let p = next(id.clone(), &mut binds);
            sql.push_str(&format!(" AND ({public} OR r.owner_tenant_id = {p})"));
        }
    }
    if let Some(search) = q.search.as_deref().filter(|s| !s.is_empty()) {
        let escaped = search
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let p = next(format!("%{escaped}%"), &mut binds);
        sql.push_str(&format!(
            " AND lower(r.org || '/' || r.name) LIKE {p} ESCAPE '\\'"
        ));
    }
    if let Some(author) = &q.author {
        let p = next(author.clone(), &mut binds);
        sql.push_str(&format!(" AND r.org = {p}"));
    }
    if let Some(task) = &q.pipeline_tag {
        let p = next(task.clone(), &mut binds);
        sql.push_str(&format!(" AND r.card_pipeline = {p}"));
    }
    for tag in &q.tags {
        let p = next(tag.clone(), &mut binds);
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM hub_repo_tags t WHERE t.repo_id = r.id AND t.tag = {p})"
        ));
    }
    let dir = if q.descending { "DESC" } else { "ASC" };
    let order = match q.sort {
        RepoSort::Downloads => format!("r.downloads {dir}, r.updated_at {dir}"),
        RepoSort::LastModified => format!("r.updated_at {dir}"),
        RepoSort::CreatedAt => format!("r.created_at {dir}"),
        RepoSort::Name => format!("r.org {dir}, r.name {dir}"),
    };
    sql.push_str(&format!(
        " ORDER BY {order}, r.id LIMIT ${}",
        binds.len() + 1
    ));
    (sql, binds)
}
