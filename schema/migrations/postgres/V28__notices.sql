-- Notifications (SPEC §10). A tenant orders its channels by priority; a notice goes to
-- everyone its audience names when it is sent (at once, or when its time comes), one
-- delivery per person and round, and falls back along the channels when one fails or
-- cannot reach the person. A recalled notice may be edited and sent again: a new round.
CREATE TABLE notice_settings (
    tenant_id       UUID PRIMARY KEY REFERENCES tenants (id),
    -- The channels in priority order: [{channel, enabled, address, per_minute}].
    channels        TEXT NOT NULL,
    -- Bumped to rotate the channel adapters' signing secret (derived, never stored).
    secret_version  INTEGER NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE notices (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    audience        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('scheduled', 'sending', 'sent', 'recalled')),
    send_at         TIMESTAMPTZ,
    -- Counts edits, so that a send or an edit applies to the notice as its author saw it.
    revision        BIGINT NOT NULL,
    -- Counts sends: each send (the first, and each after a recall) is a round.
    round           INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    recalled_at     TIMESTAMPTZ
);
CREATE INDEX notices_tenant ON notices (tenant_id, id);
CREATE INDEX notices_due ON notices (send_at) WHERE status = 'scheduled';

CREATE TABLE notice_deliveries (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    notice_id       UUID NOT NULL REFERENCES notices (id),
    round           INTEGER NOT NULL,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status          TEXT NOT NULL
                    CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'recalled')),
    -- The channel trying it now, or the last one tried.
    channel         TEXT,
    -- The channels that failed or could not reach the person before it (a JSON array).
    tried           TEXT NOT NULL,
    detail          TEXT,
    -- When a queued delivery is next due (a claim's lease moves it on).
    due_at          TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (notice_id, round, user_id)
);
CREATE INDEX notice_deliveries_due ON notice_deliveries (due_at) WHERE status = 'queued';
CREATE INDEX notice_deliveries_status ON notice_deliveries (notice_id, round, status);
