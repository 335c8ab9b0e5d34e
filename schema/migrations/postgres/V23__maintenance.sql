-- Equipment maintenance codes (SPEC §13): device types named by the tenant, with the time
-- windows their codes are valid in and who may maintain them; devices with a printed code
-- (unique across tenants) and an optional fixed scanner, bound as a shuttle bus's phone is
-- (a `verifier` token whose subject is the device); and the visits recorded at them.
CREATE TABLE device_types (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    windows     TEXT NOT NULL,
    identities  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE devices (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    type_id             UUID NOT NULL REFERENCES device_types (id),
    name                TEXT NOT NULL,
    location            TEXT NOT NULL,
    code                TEXT NOT NULL UNIQUE,
    binding_hash        BYTEA UNIQUE,
    binding_expires_at  TIMESTAMPTZ,
    bound_at            TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX devices_tenant_type ON devices (tenant_id, type_id);

-- A record: its device, type and technician are not foreign keys, so that it stays as it
-- was verified. `dedupe` makes a personal code record once, and a technician's taps on a
-- device's code within one clock minute record once.
CREATE TABLE maintenance_records (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    device_id    UUID NOT NULL,
    type_id      UUID NOT NULL,
    user_id      UUID NOT NULL,
    method       TEXT NOT NULL CHECK (method IN ('device_code', 'staff_scan', 'fixed_scanner')),
    verified_by  UUID,
    note         TEXT,
    dedupe       BYTEA NOT NULL UNIQUE,
    at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX maintenance_records_tenant ON maintenance_records (tenant_id, id);
CREATE INDEX maintenance_records_user ON maintenance_records (tenant_id, user_id, id);
CREATE INDEX maintenance_records_device ON maintenance_records (tenant_id, device_id, id);
