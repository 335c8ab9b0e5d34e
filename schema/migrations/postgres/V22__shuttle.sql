-- Shuttle-bus verification (SPEC §13): routes, the buses on them, and the rides verified
-- by each bus's phone. A bus's phone holds a `verifier` token whose subject is the bus; it
-- gets it by opening a one-time binding link (`binding_hash`, kept until used or replaced).
ALTER TABLE tokens DROP CONSTRAINT tokens_kind_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_kind_check
    CHECK (kind IN ('root', 'admin', 'terminal', 'cardholder', 'verifier'));

CREATE TABLE shuttle_routes (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    -- Who may ride: users whose identity is one of these (a JSON array); everyone when empty.
    identities  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE shuttle_buses (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    route_id            UUID NOT NULL REFERENCES shuttle_routes (id),
    name                TEXT NOT NULL,
    binding_hash        BYTEA UNIQUE,
    binding_expires_at  TIMESTAMPTZ,
    bound_at            TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX shuttle_buses_route ON shuttle_buses (route_id);

-- A ride is a record: its route, bus and rider are not foreign keys, so that a ride stays
-- as it was verified. `code_nonce` makes each personal code board once.
CREATE TABLE shuttle_rides (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    route_id    UUID NOT NULL,
    bus_id      UUID NOT NULL,
    user_id     UUID NOT NULL,
    code_nonce  BYTEA NOT NULL UNIQUE,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX shuttle_rides_tenant ON shuttle_rides (tenant_id, id);
CREATE INDEX shuttle_rides_user ON shuttle_rides (tenant_id, user_id, id);
CREATE INDEX shuttle_rides_bus ON shuttle_rides (tenant_id, bus_id, id);
