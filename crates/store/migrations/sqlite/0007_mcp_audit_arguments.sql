-- A tenant may opt in to keeping the arguments of its tool calls in the audit log.
CREATE TABLE mcp_settings (
    tenant_id       TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    audit_arguments INTEGER NOT NULL CHECK (audit_arguments IN (0, 1)),
    updated_at      TEXT NOT NULL
) STRICT;

-- A call's arguments (JSON, bounded), only where its tenant opted in.
ALTER TABLE mcp_calls ADD COLUMN arguments TEXT;
