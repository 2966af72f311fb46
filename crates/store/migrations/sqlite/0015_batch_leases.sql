-- Batches shared by several processes (#19): a batch runs in one process at a time, the one
-- holding its lease (`lease_owner` until `lease_expires_at`, renewed while it runs); a lease
-- that lapses (its process died) lets another process take the batch over. And each line's
-- estimated tokens, so a tenant's enqueued batch tokens (its pending lines') can be limited.
ALTER TABLE batches ADD COLUMN lease_owner TEXT;
ALTER TABLE batches ADD COLUMN lease_expires_at TEXT;
ALTER TABLE batch_lines ADD COLUMN est_tokens INTEGER NOT NULL DEFAULT 0;
