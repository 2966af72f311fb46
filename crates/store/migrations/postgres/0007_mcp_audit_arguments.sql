-- A tenant may opt in to keeping the arguments of its tool calls in the audit log.
CREATE TABLE mcp_settings (
    tenant_id       TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    audit_arguments BOOLEAN NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- A call's arguments (JSON, bounded), only where its tenant opted in.
ALTER TABLE mcp_calls ADD COLUMN arguments TEXT;
