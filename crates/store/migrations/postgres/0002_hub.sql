-- The model hub on PostgreSQL: repositories, immutable commits and trees, refs, uploads.
-- File bytes live in DATA_DIR/hub/blobs, addressed by sha256; rows only name them.

-- Blobs whose bytes are in place; a commit may only name these.
CREATE TABLE hub_blobs (
    sha256     TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    size       BIGINT NOT NULL CHECK (size >= 0),
    git_oid    TEXT NOT NULL CHECK (length(git_oid) = 40),
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE hub_repos (
    id               TEXT PRIMARY KEY,
    org              TEXT NOT NULL,
    name             TEXT NOT NULL,
    owner_tenant_id  TEXT REFERENCES tenants (id),
    private          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    downloads        BIGINT NOT NULL DEFAULT 0 CHECK (downloads >= 0),
    card_license     TEXT,
    card_pipeline    TEXT,
    card_base_model  TEXT,
    card_languages   TEXT NOT NULL DEFAULT '[]',  -- JSON array
    UNIQUE (org, name)
);

CREATE TABLE hub_repo_tags (
    repo_id TEXT NOT NULL REFERENCES hub_repos (id),
    tag     TEXT NOT NULL,
    PRIMARY KEY (repo_id, tag)
);
CREATE INDEX hub_repo_tags_by_tag ON hub_repo_tags (tag);

CREATE TABLE hub_commits (
    repo_id    TEXT NOT NULL REFERENCES hub_repos (id),
    id         TEXT NOT NULL CHECK (length(id) = 40),
    parent_id  TEXT,
    message    TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, id)
);

CREATE TABLE hub_tree_entries (
    repo_id   TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    path      TEXT NOT NULL,
    sha256    TEXT NOT NULL CHECK (length(sha256) = 64),
    git_oid   TEXT NOT NULL CHECK (length(git_oid) = 40),
    size      BIGINT NOT NULL CHECK (size >= 0),
    PRIMARY KEY (repo_id, commit_id, path),
    FOREIGN KEY (repo_id, commit_id) REFERENCES hub_commits (repo_id, id)
);

-- Revisions are immutable.
CREATE FUNCTION hub_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER hub_commits_immutable BEFORE UPDATE OR DELETE ON hub_commits
    FOR EACH ROW EXECUTE FUNCTION hub_refuse_change();
CREATE TRIGGER hub_tree_immutable BEFORE UPDATE OR DELETE ON hub_tree_entries
    FOR EACH ROW EXECUTE FUNCTION hub_refuse_change();

CREATE TABLE hub_refs (
    repo_id    TEXT NOT NULL REFERENCES hub_repos (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('branch', 'tag')),
    commit_id  TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, commit_id) REFERENCES hub_commits (repo_id, id)
);

-- Tags do not move.
CREATE TRIGGER hub_tags_fixed BEFORE UPDATE ON hub_refs
    FOR EACH ROW WHEN (OLD.kind = 'tag') EXECUTE FUNCTION hub_refuse_change();

CREATE TABLE hub_uploads (
    id         TEXT PRIMARY KEY,
    repo_id    TEXT NOT NULL REFERENCES hub_repos (id),
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    size       BIGINT NOT NULL CHECK (size >= 0),
    received   BIGINT NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= size),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX hub_uploads_by_blob ON hub_uploads (repo_id, sha256, size);
