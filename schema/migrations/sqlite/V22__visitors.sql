-- Visitor reservation (SPEC §13): each tenant's visitor form, and visitors' requests to
-- visit a member (the host), who approves or rejects them. A request is found by the
-- hash of its pass (the secret in the visitor's link and QR code), never by the secret.
CREATE TABLE visitor_forms (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants (id),
    form        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE visitor_requests (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    host_id     TEXT NOT NULL,
    pass_hash   BLOB NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    phone       TEXT,
    company     TEXT,
    purpose     TEXT,
    plate       TEXT,
    id_hash     BLOB,
    id_last4    TEXT,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    reason      TEXT,
    decided_at  INTEGER,
    entered_at  INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX visitor_requests_tenant ON visitor_requests (tenant_id, id);
CREATE INDEX visitor_requests_host ON visitor_requests (tenant_id, host_id, id);
