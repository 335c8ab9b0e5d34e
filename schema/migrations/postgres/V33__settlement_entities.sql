-- Multi-merchant-entity settlement (SPEC §1, advanced edition and up): the legal bodies a
-- tenant's merchants settle to (a canteen's catering contractor, a shop's operator), and
-- each merchant's schedule of them by tenant-local day. A merchant with no entry on a day
-- takes its parent's entity; a root with none settles to the tenant itself, as does a
-- merchant set to. The API takes changes from the tenant's today on, never for a past
-- day, so a day's statement stays what it was.
-- Nodes of earlier releases neither read nor write these tables.
CREATE TABLE settlement_entities (
    id                    UUID PRIMARY KEY,
    tenant_id             UUID NOT NULL REFERENCES tenants (id),
    name                  TEXT NOT NULL,
    legal_name            TEXT NOT NULL DEFAULT '',
    provider_sub_merchant TEXT NOT NULL DEFAULT '',
    bank_account          TEXT NOT NULL DEFAULT '',
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE merchant_settlements (
    merchant_id    UUID NOT NULL REFERENCES merchants (id),
    effective_from DATE NOT NULL,
    tenant_id      UUID NOT NULL REFERENCES tenants (id),
    -- NULL with to_own false: the merchant takes its parent's from that day; with
    -- to_own true: it settles to the tenant itself whatever its parent does.
    entity_id      UUID REFERENCES settlement_entities (id),
    to_own         BOOLEAN NOT NULL DEFAULT false,
    set_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (merchant_id, effective_from),
    CHECK (NOT (to_own AND entity_id IS NOT NULL))
);
CREATE INDEX merchant_settlements_tenant ON merchant_settlements (tenant_id);
CREATE INDEX merchant_settlements_entity ON merchant_settlements (entity_id)
    WHERE entity_id IS NOT NULL;
