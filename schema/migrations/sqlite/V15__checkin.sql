-- Event check-in (SPEC §13): events with a code (unique across tenants, since a person
-- scanning it does not say whose it is), their designated attendees, and at most one
-- check-in per person and event (the primary key holds that under concurrency).
CREATE TABLE checkin_events (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    code           TEXT NOT NULL UNIQUE,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    early_minutes  INTEGER NOT NULL CHECK (early_minutes >= 0),
    fence_lat      REAL,
    fence_lng      REAL,
    fence_radius_m INTEGER,
    designated     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CHECK (ends_at > starts_at),
    CHECK ((fence_lat IS NULL) = (fence_radius_m IS NULL) AND (fence_lng IS NULL) = (fence_radius_m IS NULL))
);
CREATE INDEX checkin_events_tenant ON checkin_events (tenant_id, id);

CREATE TABLE checkin_attendees (
    event_id TEXT NOT NULL REFERENCES checkin_events (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, user_id)
) WITHOUT ROWID;
CREATE INDEX checkin_attendees_user ON checkin_attendees (user_id);

CREATE TABLE check_ins (
    event_id   TEXT NOT NULL REFERENCES checkin_events (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id         TEXT NOT NULL UNIQUE,
    at         INTEGER NOT NULL,
    method     TEXT NOT NULL CHECK (method IN ('self', 'staff')),
    distance_m INTEGER,
    PRIMARY KEY (event_id, user_id)
) WITHOUT ROWID;
CREATE INDEX check_ins_event_order ON check_ins (event_id, id);
CREATE INDEX check_ins_user ON check_ins (user_id);
