-- Model groups (one served name in front of several deployments or upstreams) and the
-- per-tenant request log. A group's definition is kept as the JSON the admin route took, its
-- members' API keys sealed (`v1.<key id>.<base64>`, AES-256-GCM under the server's secret key,
-- bound to the group's name); the names a group answers to are checked by the server.
CREATE TABLE model_groups (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- One row per request a tenant's key made through the serving path; bodies are not kept.
CREATE TABLE request_logs (
    request_id        TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    key_prefix        TEXT NOT NULL,
    model             TEXT NOT NULL,
    -- The group member (or fallback) that served it; NULL for a plain model or a refusal.
    member            TEXT,
    status            BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost              BIGINT NOT NULL,
    ttft_ms           BIGINT,
    total_ms          BIGINT NOT NULL,
    retries           BIGINT NOT NULL
);
CREATE INDEX request_logs_by_tenant ON request_logs (tenant_id, created_at, request_id);
CREATE INDEX request_logs_by_time ON request_logs (created_at);
