-- Open platform webhooks (SPEC §12): an app names an address and the event types it
-- wants; each committed event of those types becomes one delivery, signed and retried
-- with backoff until the app acknowledges it (a 2xx answer) or it is given up.
ALTER TABLE apps ADD COLUMN webhook_url TEXT;
ALTER TABLE apps ADD COLUMN webhook_events TEXT NOT NULL DEFAULT '[]';

CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    app_id          UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    event_at        TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a node may next take it: the next retry, or the end of a node's lease on it
    -- while the node sends it. Only a pending delivery has one.
    next_attempt_at TIMESTAMPTZ,
    give_up_at      TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    -- The relay may hand an event over twice (after a crash, or from two nodes' sweeps).
    UNIQUE (app_id, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_app ON webhook_deliveries (app_id, id);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
