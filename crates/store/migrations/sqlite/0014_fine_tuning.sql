-- Fine-tuning jobs (`/v1/fine_tuning/jobs`): a tenant's jobs, their progress events and their
-- checkpoints. The job's row is its state machine (`validating_files → queued → running →
-- succeeded | failed | cancelled`) and its billing: `attempt` names the ledger reservation
-- of the current run (`ftjob-…-{attempt}`), `billed_tokens` what earlier runs were charged,
-- so a job resumed after a restart is billed each trained token once.
CREATE TABLE fine_tuning_jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    -- The key that created it (its allow-list names the base model).
    key_id           TEXT,
    -- The base model's served name.
    model            TEXT NOT NULL,
    suffix           TEXT,
    fine_tuned_model TEXT,
    status           TEXT NOT NULL,
    training_file    TEXT NOT NULL,
    validation_file  TEXT,
    -- JSON: {"n_epochs", "batch_size", "learning_rate_multiplier"}.
    hyperparameters  TEXT NOT NULL,
    seed             INTEGER NOT NULL,
    -- JSON: OpenAI's {"code", "message", "param"} once failed.
    error            TEXT,
    -- Tokens of the training file × epochs, once validated.
    total_tokens     INTEGER,
    trained_tokens   INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 1,
    billed_tokens    INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    finished_at      TEXT,
    estimated_finish TEXT,
    metadata         TEXT
) STRICT;
CREATE INDEX fine_tuning_jobs_by_tenant ON fine_tuning_jobs (tenant_id, created_at, id);
CREATE INDEX fine_tuning_jobs_by_status ON fine_tuning_jobs (status);

-- A job's events, numbered from 1 in order.
CREATE TABLE fine_tuning_events (
    job_id     TEXT NOT NULL REFERENCES fine_tuning_jobs (id),
    seq        INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    -- JSON: the step's metrics, for `metrics` events.
    data       TEXT,
    PRIMARY KEY (job_id, seq)
) STRICT;

-- A job's checkpoints, by step; `metrics` JSON.
CREATE TABLE fine_tuning_checkpoints (
    job_id     TEXT NOT NULL REFERENCES fine_tuning_jobs (id),
    step       INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    metrics    TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
) STRICT;
