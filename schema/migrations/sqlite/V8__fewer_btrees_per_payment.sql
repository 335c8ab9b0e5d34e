-- Fewer B-trees written per payment (docs/BENCHMARKS.md, thirty-ninth run).
--
-- Payments: the primary key is (tenant_id, id) instead of id. A rowid table with a TEXT
-- key keeps the key in an index of its own, and the tenant's listing had a second index on
-- (tenant_id, id): every payment went into both. Now one index is both the key and the
-- listing's order. Every query names the tenant with the id, so none loses its index, and
-- ids stay unique (UUIDv7, made by the server).
--
-- Ledger entries: `INTEGER PRIMARY KEY` without AUTOINCREMENT. AUTOINCREMENT reads and
-- rewrites the table's row in `sqlite_sequence` on every insert, one more B-tree write per
-- entry (two or three a payment). All it adds is that an id of a deleted last row is
-- never reused, and ledger entries are never deleted. Every entry keeps its id.
--
-- Open payments (a deferred debit waiting for its provider, or unsettled) have an index of
-- their own, which a wallet's load reads: before, it read every payment the cardholder
-- ever made to find the few still open (6 ms for 100 payments from a cold cache, 0.06 ms
-- with this index; docs/BENCHMARKS.md, thirty-ninth run), on the first payment after the
-- wallet's actor had stopped. A payment that succeeds at once never enters it.
--
-- Both tables are copied once, at the first start of the release (docs/OPERATIONS.md).
CREATE TABLE payments_v8 (
    id              TEXT NOT NULL,
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
    PRIMARY KEY (tenant_id, id),
    CHECK (status = 'declined' OR coupon_amount + subsidy_amount + balance_amount + deferred_amount = amount)
);
INSERT INTO payments_v8 (id, tenant_id, user_id, merchant_id, terminal_id, amount, status,
                         decline_reason, coupon_id, coupon_amount, subsidy_amount, balance_amount,
                         deferred_amount, subsidy_parts, refunded, created_at, updated_at)
    SELECT id, tenant_id, user_id, merchant_id, terminal_id, amount, status,
           decline_reason, coupon_id, coupon_amount, subsidy_amount, balance_amount,
           deferred_amount, subsidy_parts, refunded, created_at, updated_at
    FROM payments ORDER BY tenant_id, id;
DROP TABLE payments;
ALTER TABLE payments_v8 RENAME TO payments;
CREATE INDEX payments_user ON payments (user_id, id);
CREATE INDEX payments_merchant ON payments (merchant_id, created_at);
CREATE INDEX payments_user_open ON payments (user_id, id) WHERE status IN ('accepted', 'unsettled');

CREATE TABLE ledger_entries_v8 (
    id         INTEGER PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    tx_id      TEXT NOT NULL,
    account    TEXT NOT NULL,
    ref_id     TEXT,
    amount     BIGINT NOT NULL,
    payment_id TEXT,
    created_at INTEGER NOT NULL
);
INSERT INTO ledger_entries_v8 (id, tenant_id, tx_id, account, ref_id, amount, payment_id, created_at)
    SELECT id, tenant_id, tx_id, account, ref_id, amount, payment_id, created_at
    FROM ledger_entries ORDER BY id;
DROP TABLE ledger_entries;
ALTER TABLE ledger_entries_v8 RENAME TO ledger_entries;
CREATE INDEX ledger_merchant_refunds ON ledger_entries (tenant_id, ref_id, created_at)
    WHERE account = 'merchant_receivable' AND amount < 0;
