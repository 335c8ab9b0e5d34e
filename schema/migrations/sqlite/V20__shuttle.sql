-- Shuttle-bus verification (SPEC §13): routes, the buses on them, and the rides verified
-- by each bus's phone. A bus's phone holds a `verifier` token whose subject is the bus; it
-- gets it by opening a one-time binding link (`binding_hash`, kept until used or replaced).
-- SQLite cannot change a CHECK constraint in place: `tokens` is rebuilt with the new kind.
CREATE TABLE tokens_v20 (
    hash        BLOB PRIMARY KEY,
    kind        TEXT NOT NULL
                CHECK (kind IN ('root', 'admin', 'terminal', 'cardholder', 'verifier')),
    tenant_id   TEXT REFERENCES tenants (id),
    subject_id  TEXT,
    created_at  INTEGER NOT NULL,
    CHECK ((kind = 'root') = (tenant_id IS NULL))
);
INSERT INTO tokens_v20 (hash, kind, tenant_id, subject_id, created_at)
    SELECT hash, kind, tenant_id, subject_id, created_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v20 RENAME TO tokens;
CREATE INDEX tokens_subject ON tokens (subject_id);
CREATE UNIQUE INDEX tokens_one_root ON tokens (kind) WHERE kind = 'root';

CREATE TABLE shuttle_routes (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    -- Who may ride: users whose identity is one of these (a JSON array); everyone when empty.
    identities  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE shuttle_buses (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    route_id            TEXT NOT NULL REFERENCES shuttle_routes (id),
    name                TEXT NOT NULL,
    binding_hash        BLOB UNIQUE,
    binding_expires_at  INTEGER,
    bound_at            INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX shuttle_buses_route ON shuttle_buses (route_id);

-- A ride is a record: its route, bus and rider are not foreign keys, so that a ride stays
-- as it was verified. `code_nonce` makes each personal code board once.
CREATE TABLE shuttle_rides (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    route_id    TEXT NOT NULL,
    bus_id      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    code_nonce  BLOB NOT NULL UNIQUE,
    at          INTEGER NOT NULL
);
CREATE INDEX shuttle_rides_tenant ON shuttle_rides (tenant_id, id);
CREATE INDEX shuttle_rides_user ON shuttle_rides (tenant_id, user_id, id);
CREATE INDEX shuttle_rides_bus ON shuttle_rides (tenant_id, bus_id, id);
