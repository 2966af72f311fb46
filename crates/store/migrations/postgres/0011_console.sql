-- The web console's people: a tenant's members (an email, an argon2id password hash, a role),
-- their pending invites, server-side sessions (the cookie carries a secret; only its SHA-256 is
-- kept) and the failed sign-ins counted per account and per address.
CREATE TABLE members (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    -- Lowercased; one member per email across the server, so a sign-in names one account.
    email           TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'developer', 'viewer')),
    -- NULL until an invite is accepted.
    password_hash   TEXT,
    -- SHA-256 of the invite token; NULL once accepted (or when created with a password).
    invite_hash     TEXT UNIQUE,
    invite_expires_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX members_by_tenant ON members (tenant_id, created_at);

CREATE TABLE console_sessions (
    -- SHA-256 of the cookie's secret.
    id            TEXT PRIMARY KEY,
    -- NULL: the operator's (admin key) session.
    member_id     TEXT REFERENCES members (id),
    csrf_token    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    idle_seconds  BIGINT NOT NULL CHECK (idle_seconds > 0),
    expires_at    TIMESTAMPTZ NOT NULL,
    -- The API key the playground uses in this session, revoked with it.
    playground_key_id TEXT REFERENCES api_keys (id),
    ended_at      TIMESTAMPTZ
);
CREATE INDEX console_sessions_by_member ON console_sessions (member_id);

-- One row per failed sign-in; subjects are `account:EMAIL` and `address:IP`.
CREATE TABLE console_sign_in_failures (
    subject   TEXT NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sign_in_failures_by_subject ON console_sign_in_failures (subject, failed_at);
