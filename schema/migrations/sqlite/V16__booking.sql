-- Venue and meeting-room booking (SPEC §13). A booking holds one `booking_slots` row per
-- 5-minute granule of its time; the primary key (room, granule) is what keeps two
-- bookings of one moment from both committing.
CREATE TABLE rooms (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    location        TEXT,
    capacity        INTEGER NOT NULL CHECK (capacity > 0),
    opens           TEXT NOT NULL,
    closes          TEXT NOT NULL,
    days            TEXT NOT NULL,
    slot_minutes    INTEGER NOT NULL CHECK (slot_minutes > 0),
    max_slots       INTEGER NOT NULL CHECK (max_slots > 0),
    book_ahead_days INTEGER NOT NULL CHECK (book_ahead_days > 0),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE bookings (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    room_id      TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL,
    attendees    INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    created_at   INTEGER NOT NULL,
    cancelled_at INTEGER,
    CHECK (ends_at > starts_at)
);
CREATE INDEX bookings_tenant ON bookings (tenant_id, id);
CREATE INDEX bookings_room_time ON bookings (room_id, starts_at);
CREATE INDEX bookings_user ON bookings (user_id, id);

CREATE TABLE booking_slots (
    room_id    TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    slot_start INTEGER NOT NULL,
    booking_id TEXT NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    PRIMARY KEY (room_id, slot_start)
) WITHOUT ROWID;
CREATE INDEX booking_slots_booking ON booking_slots (booking_id);
