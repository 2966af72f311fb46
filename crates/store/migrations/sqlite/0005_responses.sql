-- Responses of the Responses API created with `store: true`: the response object, this turn's
-- input items and the whole conversation through it, each as JSON text (the gateway owns their
-- shapes). tenant_id is NULL for the admin key. previous_id is the response this one continued;
-- not a reference, since that one may have been deleted since.
CREATE TABLE responses (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    model        TEXT NOT NULL,
    previous_id  TEXT,
    response     TEXT NOT NULL CHECK (json_valid(response)),
    input_items  TEXT NOT NULL CHECK (json_valid(input_items)),
    conversation TEXT NOT NULL CHECK (json_valid(conversation)),
    created_at   TEXT NOT NULL
) STRICT;
-- Retention sweeps delete by age.
CREATE INDEX responses_by_created_at ON responses (created_at);
