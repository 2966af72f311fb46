-- Spend caps and alerts (#23): a budget per key ('key:ID') or tenant ('tenant:ID'), the alert
-- events they fired (one per subject, period and threshold), and each tenant's webhook secret.
CREATE TABLE budgets (
    subject     TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    -- Micro-units per period.
    amount      INTEGER NOT NULL CHECK (amount > 0),
    period      TEXT NOT NULL CHECK (period IN ('day', 'month')),
    -- Alert thresholds in parts per million of `amount`, comma-separated ('' for none).
    alert_at    TEXT NOT NULL,
    webhook_url TEXT,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX budgets_by_tenant ON budgets (tenant_id);

CREATE TABLE budget_events (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    subject         TEXT NOT NULL,
    period_start    TEXT NOT NULL,
    threshold_ppm   INTEGER NOT NULL CHECK (threshold_ppm > 0 AND threshold_ppm <= 1000000),
    amount          INTEGER NOT NULL,
    spent           INTEGER NOT NULL,
    -- Where it is delivered (NULL: an event row only).
    webhook_url     TEXT,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT,
    UNIQUE (subject, period_start, threshold_ppm)
) STRICT;
CREATE INDEX budget_events_by_tenant ON budget_events (tenant_id, created_at);
CREATE INDEX budget_events_due ON budget_events (next_attempt_at)
    WHERE delivered_at IS NULL AND webhook_url IS NOT NULL;

CREATE TABLE budget_webhooks (
    tenant_id  TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id),
    secret     TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

-- A key's spend in a period: its settled charges since the period began.
CREATE INDEX reservations_by_key_settled ON reservations (key_id, settled_at);
CREATE INDEX reservations_open_by_tenant ON reservations (tenant_id) WHERE state = 'open';
CREATE INDEX reservations_open_by_key ON reservations (key_id) WHERE state = 'open';
