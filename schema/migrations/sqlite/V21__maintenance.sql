-- Equipment maintenance codes (SPEC §13): device types named by the tenant, with the time
-- windows their codes are valid in and who may maintain them; devices with a printed code
-- (unique across tenants) and an optional fixed scanner, bound as a shuttle bus's phone is
-- (a `verifier` token whose subject is the device); and the visits recorded at them.
CREATE TABLE device_types (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    windows     TEXT NOT NULL,
    identities  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    type_id             TEXT NOT NULL REFERENCES device_types (id),
    name                TEXT NOT NULL,
    location            TEXT NOT NULL,
    code                TEXT NOT NULL UNIQUE,
    binding_hash        BLOB UNIQUE,
    binding_expires_at  INTEGER,
    bound_at            INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX devices_tenant_type ON devices (tenant_id, type_id);

-- A record: its device, type and technician are not foreign keys, so that it stays as it
-- was verified. `dedupe` makes a personal code record once, and a technician's taps on a
-- device's code within one clock minute record once.
CREATE TABLE maintenance_records (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    type_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    method       TEXT NOT NULL CHECK (method IN ('device_code', 'staff_scan', 'fixed_scanner')),
    verified_by  TEXT,
    note         TEXT,
    dedupe       BLOB NOT NULL UNIQUE,
    at           INTEGER NOT NULL
);
CREATE INDEX maintenance_records_tenant ON maintenance_records (tenant_id, id);
CREATE INDEX maintenance_records_user ON maintenance_records (tenant_id, user_id, id);
CREATE INDEX maintenance_records_device ON maintenance_records (tenant_id, device_id, id);
