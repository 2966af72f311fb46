-- MCP servers: a tenant's own (tenant_id set) or the operator's (tenant_id NULL; public ones may
-- be granted to tenants). Header values and environment are sealed by the application (AEAD
-- with the server's secret key) into one text; only their names are kept in the clear.
CREATE TABLE mcp_servers (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    transport     TEXT NOT NULL CHECK (transport IN ('http', 'stdio')),
    url           TEXT,
    command       TEXT,
    args          TEXT[] NOT NULL,
    sealed        TEXT,
    header_names  TEXT[] NOT NULL,
    env_names     TEXT[] NOT NULL,
    allowed_tools TEXT[],
    public        BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CHECK ((transport = 'http') = (url IS NOT NULL)),
    CHECK ((transport = 'stdio') = (command IS NOT NULL))
);
-- Names are unique per owner (the operator being the owner ''); tools are named after them.
CREATE UNIQUE INDEX mcp_servers_by_owner_name ON mcp_servers (COALESCE(tenant_id, ''), name);

CREATE TABLE mcp_grants (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    server_id  TEXT NOT NULL REFERENCES mcp_servers (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, server_id)
);

-- Client sessions of the /mcp endpoint, shared by every process on the database.
CREATE TABLE mcp_sessions (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    protocol_version TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    last_seen        TIMESTAMPTZ NOT NULL
);
CREATE INDEX mcp_sessions_by_last_seen ON mcp_sessions (last_seen);

-- The one upstream session a client session holds with each server it used, so a stateful
-- server sees one session whichever process forwards the call.
CREATE TABLE mcp_session_upstreams (
    session_id       TEXT NOT NULL REFERENCES mcp_sessions (id) ON DELETE CASCADE,
    server_id        TEXT NOT NULL REFERENCES mcp_servers (id) ON DELETE CASCADE,
    upstream_session TEXT,
    protocol_version TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, server_id)
);

-- The audit log of tool calls: who called what, how long it took, how it ended and what it
-- was charged. Not tied to the server row: it outlives the server. Arguments are not kept.
CREATE TABLE mcp_calls (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    key_prefix  TEXT,
    server_id   TEXT NOT NULL,
    server_name TEXT NOT NULL,
    tool        TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    duration_ms BIGINT NOT NULL CHECK (duration_ms >= 0),
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'tool_error', 'failed', 'refused')),
    error       TEXT,
    charged     BIGINT NOT NULL CHECK (charged >= 0)
);
CREATE INDEX mcp_calls_by_tenant ON mcp_calls (tenant_id, started_at);
