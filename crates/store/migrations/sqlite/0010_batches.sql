-- The Batch API (`/v1/batches`): a tenant's batches and each input line's progress. A line's
-- result is kept in its row until the batch is finalized into its output and error files, so a
-- restart resumes from these rows and never runs or bills a finished line again.
CREATE TABLE batches (
    id                TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    -- The key that created it: its lines run as this key (allow-list, usage by key).
    key_id            TEXT,
    endpoint          TEXT NOT NULL,
    model             TEXT,
    input_file_id     TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status            TEXT NOT NULL,
    output_file_id    TEXT,
    error_file_id     TEXT,
    -- JSON: OpenAI's `errors` object, and the client's `metadata`.
    errors            TEXT,
    metadata          TEXT,
    total             INTEGER NOT NULL,
    completed         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    in_progress_at    TEXT,
    finalizing_at     TEXT,
    completed_at      TEXT,
    failed_at         TEXT,
    expired_at        TEXT,
    cancelling_at     TEXT,
    cancelled_at      TEXT,
    expires_at        TEXT NOT NULL
) STRICT;
CREATE INDEX batches_by_tenant ON batches (tenant_id, created_at, id);
CREATE INDEX batches_by_status ON batches (status);

-- One input line. `state`: pending (to run), done (its result is an output line), failed (an
-- error line: `result` when it ran and failed, else `error_code` says why it did not run).
-- `attempt` counts starts; a run's ledger request id is `{batch}-{line}-{attempt}`.
CREATE TABLE batch_lines (
    batch_id   TEXT NOT NULL REFERENCES batches (id),
    line_no    INTEGER NOT NULL,
    custom_id  TEXT NOT NULL,
    body       TEXT,
    state      TEXT NOT NULL,
    attempt    INTEGER NOT NULL DEFAULT 0,
    result     TEXT,
    error_code TEXT,
    error_message TEXT,
    PRIMARY KEY (batch_id, line_no)
) STRICT;
CREATE INDEX batch_lines_pending ON batch_lines (batch_id, state, line_no);
