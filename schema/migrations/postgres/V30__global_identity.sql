-- Global identity (SPEC §1): one person across the member tenants of a tenant group. A
-- person links their records (users) in several members by proving each with its card:
-- a one-time link code made with one card, redeemed with the other. At most one record
-- per tenant; a record belongs to at most one person. Nodes of earlier releases neither
-- read nor write these tables.
CREATE TABLE persons (
    id          UUID PRIMARY KEY,
    group_id    UUID NOT NULL REFERENCES tenant_groups (id),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE person_links (
    user_id     UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    person_id   UUID NOT NULL REFERENCES persons (id),
    linked_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (person_id, tenant_id)
);
CREATE INDEX person_links_tenant ON person_links (tenant_id);

-- One outstanding code per record; a new one replaces it. Stored only as its SHA-256.
CREATE TABLE person_link_codes (
    hash        BYTEA PRIMARY KEY,
    user_id     UUID NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    expires_at  TIMESTAMPTZ NOT NULL
);
