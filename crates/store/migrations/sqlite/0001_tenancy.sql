-- Tenancy and billing on SQLite. Times are RFC 3339 UTC text with six fractional digits
-- ('2025-01-02T03:04:05.000000Z'), so text order is time order. Money is integer micro-units.

CREATE TABLE tenants (
    id                 TEXT PRIMARY KEY NOT NULL,
    name               TEXT NOT NULL UNIQUE,
    created_at         TEXT NOT NULL,
    free_tier_only     INTEGER NOT NULL DEFAULT 0 CHECK (free_tier_only IN (0, 1)),
    disabled           INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    rpm                INTEGER CHECK (rpm IS NULL OR rpm > 0),
    tpm                INTEGER CHECK (tpm IS NULL OR tpm > 0),
    -- Account counters, kept in step with ledger_entries in the same transaction.
    grant_tokens_total INTEGER NOT NULL DEFAULT 0 CHECK (grant_tokens_total >= 0),
    grant_tokens_used  INTEGER NOT NULL DEFAULT 0 CHECK (grant_tokens_used >= 0),
    grant_tokens_held  INTEGER NOT NULL DEFAULT 0 CHECK (grant_tokens_held >= 0),
    balance            INTEGER NOT NULL DEFAULT 0,
    amount_held        INTEGER NOT NULL DEFAULT 0 CHECK (amount_held >= 0),
    CHECK (grant_tokens_used + grant_tokens_held <= grant_tokens_total),
    CHECK (amount_held <= balance)
) STRICT;

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX orgs_by_tenant ON orgs (tenant_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,          -- JSON array of scope names
    models       TEXT,                   -- JSON array of served model names; NULL allows all
    rpm          INTEGER CHECK (rpm IS NULL OR rpm > 0),
    tpm          INTEGER CHECK (tpm IS NULL OR tpm > 0),
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
) STRICT;
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

CREATE TABLE prices (
    served_model             TEXT PRIMARY KEY NOT NULL,
    input_per_million        INTEGER NOT NULL CHECK (input_per_million >= 0),
    output_per_million       INTEGER NOT NULL CHECK (output_per_million >= 0),
    cached_input_per_million INTEGER NOT NULL CHECK (cached_input_per_million >= 0),
    updated_at               TEXT NOT NULL
) STRICT;

-- Append-only. tokens and amount are magnitudes; the kind gives the direction.
CREATE TABLE ledger_entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    kind            TEXT NOT NULL CHECK (kind IN ('grant', 'topup', 'reserve', 'charge', 'release')),
    tokens          INTEGER NOT NULL CHECK (tokens >= 0),
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    idempotency_key TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (idempotency_key, kind)
) STRICT;
CREATE INDEX ledger_by_tenant ON ledger_entries (tenant_id, id);
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END;

CREATE TABLE reservations (
    request_id                  TEXT PRIMARY KEY NOT NULL,
    tenant_id                   TEXT NOT NULL REFERENCES tenants (id),
    key_id                      TEXT REFERENCES api_keys (id),
    model                       TEXT NOT NULL,
    prompt_tokens               INTEGER NOT NULL CHECK (prompt_tokens >= 0),
    max_completion_tokens       INTEGER NOT NULL CHECK (max_completion_tokens >= 0),
    input_per_million           INTEGER NOT NULL,
    output_per_million          INTEGER NOT NULL,
    cached_input_per_million    INTEGER NOT NULL,
    held_grant_tokens           INTEGER NOT NULL CHECK (held_grant_tokens >= 0),
    held_amount                 INTEGER NOT NULL CHECK (held_amount >= 0),
    owner                       TEXT NOT NULL,
    lease_expires_at            TEXT NOT NULL,
    created_at                  TEXT NOT NULL,
    state                       TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released')),
    -- Progress persisted while streaming (NULL until the first report).
    delivered_prompt_tokens     INTEGER,
    delivered_completion_tokens INTEGER,
    delivered_cached_tokens     INTEGER,
    progress_at                 TEXT,
    -- What was billed, once closed.
    billed_prompt_tokens        INTEGER,
    billed_completion_tokens    INTEGER,
    billed_cached_tokens        INTEGER,
    charged_grant_tokens        INTEGER,
    charged_amount              INTEGER,
    settled_at                  TEXT
) STRICT;
CREATE INDEX reservations_open_by_lease ON reservations (lease_expires_at) WHERE state = 'open';
CREATE INDEX reservations_open_by_owner ON reservations (owner) WHERE state = 'open';
CREATE INDEX reservations_by_tenant_settled ON reservations (tenant_id, settled_at);

-- Rate windows: one row per subject ('key:ID', 'tenant:ID') and second.
CREATE TABLE rate_buckets (
    subject  TEXT NOT NULL,
    second   INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    tokens   INTEGER NOT NULL,
    PRIMARY KEY (subject, second)
) STRICT, WITHOUT ROWID;
