-- Money core (SQLite: ids TEXT, times unix ms, id lists as JSON text): merchants, terminals, wallets, subsidies, coupons, payments, the
-- double-entry ledger, used payment codes, risk events and the outbox.

CREATE TABLE merchants (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    parent_id    TEXT REFERENCES merchants (id),
    name         TEXT NOT NULL,
    number       TEXT NOT NULL,
    single_limit BIGINT NOT NULL CHECK (single_limit > 0),
    depth        INTEGER NOT NULL CHECK (depth BETWEEN 1 AND 3),
    created_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, number)
);

CREATE TABLE terminals (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE wallets (
    user_id          TEXT PRIMARY KEY REFERENCES users (id),
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    balance          BIGINT NOT NULL CHECK (balance >= 0),
    arrears          BIGINT NOT NULL CHECK (arrears >= 0),
    version          BIGINT NOT NULL,
    agreement_signed INTEGER NOT NULL,
    frozen           INTEGER NOT NULL,
    frozen_until     INTEGER,
    freeze_count     INTEGER NOT NULL,
    reminded_on      TEXT,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX wallets_arrears ON wallets (tenant_id) WHERE arrears > 0;

CREATE TABLE subsidy_accounts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id),
    rule_id      TEXT,
    name         TEXT NOT NULL,
    balance      BIGINT NOT NULL CHECK (balance >= 0),
    merchant_ids TEXT NOT NULL,
    expires_at   INTEGER,
    created_at   INTEGER NOT NULL
);
CREATE INDEX subsidy_accounts_user ON subsidy_accounts (user_id);

CREATE TABLE coupons (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    discount     BIGINT NOT NULL CHECK (discount > 0),
    threshold    BIGINT NOT NULL CHECK (threshold >= 0),
    merchant_ids TEXT NOT NULL,
    valid_from   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_payment TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX coupons_user ON coupons (user_id);

CREATE TABLE subsidy_rules (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    amount         BIGINT NOT NULL CHECK (amount > 0),
    targets        TEXT NOT NULL,
    merchant_ids   TEXT NOT NULL,
    expires_at     INTEGER,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'effective')),
    created_by     TEXT NOT NULL,
    approved_by    TEXT,
    credited_users BIGINT NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    approved_at    INTEGER
);

CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    user_id         TEXT,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    terminal_id     TEXT NOT NULL REFERENCES terminals (id),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    status          TEXT NOT NULL,
    decline_reason  TEXT,
    coupon_id       TEXT,
    coupon_amount   BIGINT NOT NULL CHECK (coupon_amount >= 0),
    subsidy_amount  BIGINT NOT NULL CHECK (subsidy_amount >= 0),
    balance_amount  BIGINT NOT NULL CHECK (balance_amount >= 0),
    deferred_amount BIGINT NOT NULL CHECK (deferred_amount >= 0),
    subsidy_parts   TEXT NOT NULL,
    refunded        BIGINT NOT NULL CHECK (refunded >= 0 AND refunded <= amount),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK (status = 'declined' OR coupon_amount + subsidy_amount + balance_amount + deferred_amount = amount)
);
CREATE INDEX payments_tenant ON payments (tenant_id, id);
CREATE INDEX payments_user ON payments (user_id, id);
CREATE INDEX payments_merchant ON payments (merchant_id, created_at);

CREATE TABLE used_codes (
    nonce   BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    used_at INTEGER NOT NULL
);

CREATE TABLE risk_events (
    id      TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX risk_events_user ON risk_events (user_id, at);

-- Double entry: every movement is a set of rows with the same tx_id summing to zero.
-- account names a kind of account; ref_id says whose (user, subsidy account, merchant).
CREATE TABLE ledger_entries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL,
    tx_id      TEXT NOT NULL,
    account    TEXT NOT NULL,
    ref_id     TEXT,
    amount     BIGINT NOT NULL,
    payment_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX ledger_tenant_account ON ledger_entries (tenant_id, account, ref_id);

-- Money-path idempotency lives in the same transaction as the money it guards.
CREATE TABLE money_requests (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    topics       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
