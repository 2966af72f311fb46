-- Deployments of the control plane: one row per served name, the spec as JSON text (the
-- control crate owns its shape). Pinned deployments (from --model) are never stored.
CREATE TABLE deployments (
    name       TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    spec       TEXT NOT NULL CHECK (spec::jsonb IS NOT NULL),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
