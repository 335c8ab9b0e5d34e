-- Money core: merchants, terminals, wallets, subsidies, coupons, payments, the
-- double-entry ledger, used payment codes, risk events and the outbox.

CREATE TABLE merchants (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants (id),
    parent_id    UUID REFERENCES merchants (id),
    name         TEXT NOT NULL,
    number       TEXT NOT NULL,
    single_limit BIGINT NOT NULL CHECK (single_limit > 0),
    depth        SMALLINT NOT NULL CHECK (depth BETWEEN 1 AND 3),
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, number)
);

CREATE TABLE terminals (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    merchant_id UUID NOT NULL REFERENCES merchants (id),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE wallets (
    user_id          UUID PRIMARY KEY REFERENCES users (id),
    tenant_id        UUID NOT NULL REFERENCES tenants (id),
    balance          BIGINT NOT NULL CHECK (balance >= 0),
    arrears          BIGINT NOT NULL CHECK (arrears >= 0),
    version          BIGINT NOT NULL,
    agreement_signed BOOLEAN NOT NULL,
    frozen           BOOLEAN NOT NULL,
    frozen_until     TIMESTAMPTZ,
    freeze_count     INTEGER NOT NULL,
    reminded_on      TEXT,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX wallets_arrears ON wallets (tenant_id) WHERE arrears > 0;

CREATE TABLE subsidy_accounts (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    user_id      UUID NOT NULL REFERENCES users (id),
    rule_id      UUID,
    name         TEXT NOT NULL,
    balance      BIGINT NOT NULL CHECK (balance >= 0),
    merchant_ids UUID[] NOT NULL,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX subsidy_accounts_user ON subsidy_accounts (user_id);

CREATE TABLE coupons (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    user_id      UUID NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    discount     BIGINT NOT NULL CHECK (discount > 0),
    threshold    BIGINT NOT NULL CHECK (threshold >= 0),
    merchant_ids UUID[] NOT NULL,
    valid_from   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    used_payment UUID,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX coupons_user ON coupons (user_id);

CREATE TABLE subsidy_rules (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    amount         BIGINT NOT NULL CHECK (amount > 0),
    targets        JSONB NOT NULL,
    merchant_ids   UUID[] NOT NULL,
    expires_at     TIMESTAMPTZ,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'effective')),
    created_by     UUID NOT NULL,
    approved_by    UUID,
    credited_users BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    approved_at    TIMESTAMPTZ
);

CREATE TABLE payments (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    user_id         UUID,
    merchant_id     UUID NOT NULL REFERENCES merchants (id),
    terminal_id     UUID NOT NULL REFERENCES terminals (id),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    status          TEXT NOT NULL,
    decline_reason  TEXT,
    coupon_id       UUID,
    coupon_amount   BIGINT NOT NULL CHECK (coupon_amount >= 0),
    subsidy_amount  BIGINT NOT NULL CHECK (subsidy_amount >= 0),
    balance_amount  BIGINT NOT NULL CHECK (balance_amount >= 0),
    deferred_amount BIGINT NOT NULL CHECK (deferred_amount >= 0),
    subsidy_parts   JSONB NOT NULL,
    refunded        BIGINT NOT NULL CHECK (refunded >= 0 AND refunded <= amount),
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CHECK (status = 'declined' OR coupon_amount + subsidy_amount + balance_amount + deferred_amount = amount)
);
CREATE INDEX payments_tenant ON payments (tenant_id, id);
CREATE INDEX payments_user ON payments (user_id, id);
CREATE INDEX payments_merchant ON payments (merchant_id, created_at);

CREATE TABLE used_codes (
    nonce   BYTEA PRIMARY KEY,
    user_id UUID NOT NULL,
    used_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE risk_events (
    id      UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    kind    TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX risk_events_user ON risk_events (user_id, at);

-- Double entry: every movement is a set of rows with the same tx_id summing to zero.
-- account names a kind of account; ref_id says whose (user, subsidy account, merchant).
CREATE TABLE ledger_entries (
    id         BIGSERIAL PRIMARY KEY,
    tenant_id  UUID NOT NULL,
    tx_id      UUID NOT NULL,
    account    TEXT NOT NULL,
    ref_id     UUID,
    amount     BIGINT NOT NULL,
    payment_id UUID,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ledger_tenant_account ON ledger_entries (tenant_id, account, ref_id);

-- Money-path idempotency lives in the same transaction as the money it guards.
CREATE TABLE money_requests (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       INTEGER NOT NULL,
    body         BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE outbox (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    topics       TEXT[] NOT NULL,
    kind         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
