-- Who uploaded the bytes of which blob. Blobs are stored once for everyone, so a tenant may
-- name a blob in a commit (or skip its upload) only if it uploaded those bytes itself or can
-- read a repository holding them; knowing a hash is not enough. Also what a tenant's hub
-- storage quota counts.
CREATE TABLE hub_blob_uploaders (
    sha256     TEXT NOT NULL REFERENCES hub_blobs (sha256),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sha256)
) STRICT;

-- Blobs already in a tenant's repositories count as its uploads.
INSERT INTO hub_blob_uploaders (sha256, tenant_id, created_at)
SELECT DISTINCT e.sha256, r.owner_tenant_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM hub_tree_entries e JOIN hub_repos r ON r.id = e.repo_id
WHERE r.owner_tenant_id IS NOT NULL
  AND EXISTS (SELECT 1 FROM hub_blobs b WHERE b.sha256 = e.sha256);

-- "Which readable repository holds this blob?"
CREATE INDEX hub_tree_entries_by_blob ON hub_tree_entries (sha256);
