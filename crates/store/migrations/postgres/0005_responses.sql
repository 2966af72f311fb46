-- Responses of the Responses API created with `store: true`: the response object, this turn's
-- input items and the whole conversation through it, each as JSON text (the gateway owns their
-- shapes). tenant_id is NULL for the admin key. previous_id is the response this one continued;
-- not a reference, since that one may have been deleted since. The JSON checks cast to `json`,
-- not `jsonb`: it validates alike but, unlike `jsonb`, accepts a "\u0000" a model may write.
CREATE TABLE responses (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    model        TEXT NOT NULL,
    previous_id  TEXT,
    response     TEXT NOT NULL CHECK (response::json IS NOT NULL),
    input_items  TEXT NOT NULL CHECK (input_items::json IS NOT NULL),
    conversation TEXT NOT NULL CHECK (conversation::json IS NOT NULL),
    created_at   TIMESTAMPTZ NOT NULL
);
-- Retention sweeps delete by age.
CREATE INDEX responses_by_created_at ON responses (created_at);
