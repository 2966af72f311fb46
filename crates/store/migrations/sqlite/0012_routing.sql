-- Model groups (one served name in front of several deployments or upstreams) and the
-- per-tenant request log. A group's definition is kept as the JSON the admin route took, its
-- members' API keys sealed (`v1.<key id>.<base64>`, AES-256-GCM under the server's secret key,
-- bound to the group's name); the names a group answers to are checked by the server.
CREATE TABLE model_groups (
    name        TEXT PRIMARY KEY NOT NULL,
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

-- One row per request a tenant's key made through the serving path; bodies are not kept.
CREATE TABLE request_logs (
    request_id        TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    key_prefix        TEXT NOT NULL,
    model             TEXT NOT NULL,
    -- The group member (or fallback) that served it; NULL for a plain model or a refusal.
    member            TEXT,
    status            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost              INTEGER NOT NULL,
    ttft_ms           INTEGER,
    total_ms          INTEGER NOT NULL,
    retries           INTEGER NOT NULL
) STRICT;
CREATE INDEX request_logs_by_tenant ON request_logs (tenant_id, created_at, request_id);
CREATE INDEX request_logs_by_time ON request_logs (created_at);
