-- The Files API (`/v1/files`): a tenant's uploaded files. Their bytes are hub blobs (stored
-- once by sha256 under DATA_DIR/hub/blobs, shared with hub repositories and other files), so a
-- row names its blob; a blob is deleted only once no file, repository revision or uploader
-- names it.
CREATE TABLE files (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      BIGINT NOT NULL CHECK (bytes >= 0),
    sha256     TEXT NOT NULL REFERENCES hub_blobs (sha256),
    created_at TIMESTAMPTZ NOT NULL,
    -- NULL: kept until deleted.
    expires_at TIMESTAMPTZ
);
-- A tenant's listing, newest first, paged by (created_at, id).
CREATE INDEX files_by_tenant ON files (tenant_id, created_at, id);
-- "Does any file still name this blob?"
CREATE INDEX files_by_blob ON files (sha256);
-- The expiry sweep.
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;

-- An operator's override of one tenant's files quota (bytes); without a row, the server's
-- default (--files-tenant-quota-bytes) applies.
CREATE TABLE file_quotas (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants (id),
    quota_bytes BIGINT NOT NULL CHECK (quota_bytes >= 0)
);
