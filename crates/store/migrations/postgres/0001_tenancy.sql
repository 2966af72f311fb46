-- Tenancy and billing on PostgreSQL. Money is integer micro-units.

CREATE TABLE tenants (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    created_at         TIMESTAMPTZ NOT NULL,
    free_tier_only     BOOLEAN NOT NULL DEFAULT FALSE,
    disabled           BOOLEAN NOT NULL DEFAULT FALSE,
    rpm                BIGINT CHECK (rpm IS NULL OR rpm > 0),
    tpm                BIGINT CHECK (tpm IS NULL OR tpm > 0),
    -- Account counters, kept in step with ledger_entries in the same transaction.
    grant_tokens_total BIGINT NOT NULL DEFAULT 0 CHECK (grant_tokens_total >= 0),
    grant_tokens_used  BIGINT NOT NULL DEFAULT 0 CHECK (grant_tokens_used >= 0),
    grant_tokens_held  BIGINT NOT NULL DEFAULT 0 CHECK (grant_tokens_held >= 0),
    balance            BIGINT NOT NULL DEFAULT 0,
    amount_held        BIGINT NOT NULL DEFAULT 0 CHECK (amount_held >= 0),
    CHECK (grant_tokens_used + grant_tokens_held <= grant_tokens_total),
    CHECK (amount_held <= balance)
);

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX orgs_by_tenant ON orgs (tenant_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT[] NOT NULL,
    models       TEXT[],                 -- NULL allows all
    rpm          BIGINT CHECK (rpm IS NULL OR rpm > 0),
    tpm          BIGINT CHECK (tpm IS NULL OR tpm > 0),
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

CREATE TABLE prices (
    served_model             TEXT PRIMARY KEY,
    input_per_million        BIGINT NOT NULL CHECK (input_per_million >= 0),
    output_per_million       BIGINT NOT NULL CHECK (output_per_million >= 0),
    cached_input_per_million BIGINT NOT NULL CHECK (cached_input_per_million >= 0),
    updated_at               TIMESTAMPTZ NOT NULL
);

-- Append-only. tokens and amount are magnitudes; the kind gives the direction.
CREATE TABLE ledger_entries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    kind            TEXT NOT NULL CHECK (kind IN ('grant', 'topup', 'reserve', 'charge', 'release')),
    tokens          BIGINT NOT NULL CHECK (tokens >= 0),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    idempotency_key TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (idempotency_key, kind)
);
CREATE INDEX ledger_by_tenant ON ledger_entries (tenant_id, id);
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'ledger_entries is append-only'; END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE reservations (
    request_id                  TEXT PRIMARY KEY,
    tenant_id                   TEXT NOT NULL REFERENCES tenants (id),
    key_id                      TEXT REFERENCES api_keys (id),
    model                       TEXT NOT NULL,
    prompt_tokens               BIGINT NOT NULL CHECK (prompt_tokens >= 0),
    max_completion_tokens       BIGINT NOT NULL CHECK (max_completion_tokens >= 0),
    input_per_million           BIGINT NOT NULL,
    output_per_million          BIGINT NOT NULL,
    cached_input_per_million    BIGINT NOT NULL,
    held_grant_tokens           BIGINT NOT NULL CHECK (held_grant_tokens >= 0),
    held_amount                 BIGINT NOT NULL CHECK (held_amount >= 0),
    owner                       TEXT NOT NULL,
    lease_expires_at            TIMESTAMPTZ NOT NULL,
    created_at                  TIMESTAMPTZ NOT NULL,
    state                       TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released')),
    -- Progress persisted while streaming (NULL until the first report).
    delivered_prompt_tokens     BIGINT,
    delivered_completion_tokens BIGINT,
    delivered_cached_tokens     BIGINT,
    progress_at                 TIMESTAMPTZ,
    -- What was billed, once closed.
    billed_prompt_tokens        BIGINT,
    billed_completion_tokens    BIGINT,
    billed_cached_tokens        BIGINT,
    charged_grant_tokens        BIGINT,
    charged_amount              BIGINT,
    settled_at                  TIMESTAMPTZ
);
CREATE INDEX reservations_open_by_lease ON reservations (lease_expires_at) WHERE state = 'open';
CREATE INDEX reservations_open_by_owner ON reservations (owner) WHERE state = 'open';
CREATE INDEX reservations_by_tenant_settled ON reservations (tenant_id, settled_at);

-- Rate windows. rate_subjects rows are locked (FOR UPDATE) to serialise one subject's
-- admissions across processes; rate_buckets hold one row per subject and second.
CREATE TABLE rate_subjects (
    subject TEXT PRIMARY KEY
);
CREATE TABLE rate_buckets (
    subject  TEXT NOT NULL,
    second   BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens   BIGINT NOT NULL,
    PRIMARY KEY (subject, second)
);
