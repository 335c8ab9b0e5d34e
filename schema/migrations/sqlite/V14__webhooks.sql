-- Open platform webhooks (SPEC §12): an app names an address and the event types it
-- wants; each committed event of those types becomes one delivery, signed and retried
-- with backoff until the app acknowledges it (a 2xx answer) or it is given up.
ALTER TABLE apps ADD COLUMN webhook_url TEXT;
ALTER TABLE apps ADD COLUMN webhook_events TEXT NOT NULL DEFAULT '[]';

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    app_id          TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    event_at        INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a node may next take it: the next retry, or the end of a node's lease on it
    -- while the node sends it. Only a pending delivery has one.
    next_attempt_at INTEGER,
    give_up_at      INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    created_at      INTEGER NOT NULL,
    -- The relay may hand an event over twice (after a crash, or from two nodes' sweeps).
    UNIQUE (app_id, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_app ON webhook_deliveries (app_id, id);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
