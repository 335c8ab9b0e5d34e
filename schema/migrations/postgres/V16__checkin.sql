-- Event check-in (SPEC §13): events with a code (unique across tenants, since a person
-- scanning it does not say whose it is), their designated attendees, and at most one
-- check-in per person and event (the primary key holds that under concurrency).
CREATE TABLE checkin_events (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    code           TEXT NOT NULL,
    starts_at      TIMESTAMPTZ NOT NULL,
    ends_at        TIMESTAMPTZ NOT NULL,
    early_minutes  INTEGER NOT NULL CHECK (early_minutes >= 0),
    fence_lat      DOUBLE PRECISION,
    fence_lng      DOUBLE PRECISION,
    fence_radius_m INTEGER,
    designated     BOOLEAN NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT checkin_events_code_key UNIQUE (code),
    CHECK (ends_at > starts_at),
    CHECK ((fence_lat IS NULL) = (fence_radius_m IS NULL) AND (fence_lng IS NULL) = (fence_radius_m IS NULL))
);
CREATE INDEX checkin_events_tenant ON checkin_events (tenant_id, id);

CREATE TABLE checkin_attendees (
    event_id UUID NOT NULL REFERENCES checkin_events (id) ON DELETE CASCADE,
    user_id  UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX checkin_attendees_user ON checkin_attendees (user_id);

CREATE TABLE check_ins (
    event_id   UUID NOT NULL REFERENCES checkin_events (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id         UUID NOT NULL UNIQUE,
    at         TIMESTAMPTZ NOT NULL,
    method     TEXT NOT NULL CHECK (method IN ('self', 'staff')),
    distance_m INTEGER,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX check_ins_event_order ON check_ins (event_id, id);
CREATE INDEX check_ins_user ON check_ins (user_id);
