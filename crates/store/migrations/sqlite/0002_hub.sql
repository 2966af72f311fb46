-- The model hub on SQLite: repositories, immutable commits and trees, refs, uploads.
-- File bytes live in DATA_DIR/hub/blobs, addressed by sha256; rows only name them.

-- Blobs whose bytes are in place; a commit may only name these.
CREATE TABLE hub_blobs (
    sha256     TEXT PRIMARY KEY NOT NULL CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    git_oid    TEXT NOT NULL CHECK (length(git_oid) = 40),
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE hub_repos (
    id               TEXT PRIMARY KEY NOT NULL,
    org              TEXT NOT NULL,
    name             TEXT NOT NULL,
    owner_tenant_id  TEXT REFERENCES tenants (id),
    private          INTEGER NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    downloads        INTEGER NOT NULL DEFAULT 0 CHECK (downloads >= 0),
    card_license     TEXT,
    card_pipeline    TEXT,
    card_base_model  TEXT,
    card_languages   TEXT NOT NULL DEFAULT '[]',  -- JSON array
    UNIQUE (org, name)
) STRICT;

CREATE TABLE hub_repo_tags (
    repo_id TEXT NOT NULL REFERENCES hub_repos (id),
    tag     TEXT NOT NULL,
    PRIMARY KEY (repo_id, tag)
) STRICT;
CREATE INDEX hub_repo_tags_by_tag ON hub_repo_tags (tag);

CREATE TABLE hub_commits (
    repo_id    TEXT NOT NULL REFERENCES hub_repos (id),
    id         TEXT NOT NULL CHECK (length(id) = 40),
    parent_id  TEXT,
    message    TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (repo_id, id)
) STRICT;

CREATE TABLE hub_tree_entries (
    repo_id   TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    path      TEXT NOT NULL,
    sha256    TEXT NOT NULL CHECK (length(sha256) = 64),
    git_oid   TEXT NOT NULL CHECK (length(git_oid) = 40),
    size      INTEGER NOT NULL CHECK (size >= 0),
    PRIMARY KEY (repo_id, commit_id, path),
    FOREIGN KEY (repo_id, commit_id) REFERENCES hub_commits (repo_id, id)
) STRICT;

-- Revisions are immutable.
CREATE TRIGGER hub_commits_immutable BEFORE UPDATE ON hub_commits
BEGIN SELECT RAISE(ABORT, 'hub commits are immutable'); END;
CREATE TRIGGER hub_commits_undeletable BEFORE DELETE ON hub_commits
BEGIN SELECT RAISE(ABORT, 'hub commits are immutable'); END;
CREATE TRIGGER hub_tree_immutable BEFORE UPDATE ON hub_tree_entries
BEGIN SELECT RAISE(ABORT, 'hub trees are immutable'); END;
CREATE TRIGGER hub_tree_undeletable BEFORE DELETE ON hub_tree_entries
BEGIN SELECT RAISE(ABORT, 'hub trees are immutable'); END;

CREATE TABLE hub_refs (
    repo_id    TEXT NOT NULL REFERENCES hub_repos (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('branch', 'tag')),
    commit_id  TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, commit_id) REFERENCES hub_commits (repo_id, id)
) STRICT;

-- Tags do not move.
CREATE TRIGGER hub_tags_fixed BEFORE UPDATE ON hub_refs WHEN OLD.kind = 'tag'
BEGIN SELECT RAISE(ABORT, 'hub tags do not move'); END;

CREATE TABLE hub_uploads (
    id         TEXT PRIMARY KEY NOT NULL,
    repo_id    TEXT NOT NULL REFERENCES hub_repos (id),
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    received   INTEGER NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= size),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
CREATE INDEX hub_uploads_by_blob ON hub_uploads (repo_id, sha256, size);
