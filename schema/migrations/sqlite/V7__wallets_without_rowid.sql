-- Wallets stored in their primary key's B-tree (WITHOUT ROWID). A rowid table with a TEXT
-- primary key is two B-trees: finding a wallet by user_id walked the key's index, then the
-- table by rowid. Every payment's fenced upsert of its wallet did both, at a random page
-- of each, so the writer read ~1 page a payment more than it needs to, and every wallet
-- load walked two trees. Now one walk finds the row and the update writes it in place
-- (docs/BENCHMARKS.md, thirty-fourth run: 7.0-7.2 -> 6.0-6.2 page reads a payment on the
-- writer). Columns, checks and the arrears index are as before; nothing refers to a
-- wallet's rowid. The copy is quick: one row per cardholder.
CREATE TABLE wallets_v7 (
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
) WITHOUT ROWID;
INSERT INTO wallets_v7 (user_id, tenant_id, balance, arrears, version, agreement_signed, frozen,
                        frozen_until, freeze_count, reminded_on, updated_at)
    SELECT user_id, tenant_id, balance, arrears, version, agreement_signed, frozen,
           frozen_until, freeze_count, reminded_on, updated_at
    FROM wallets;
DROP TABLE wallets;
ALTER TABLE wallets_v7 RENAME TO wallets;
CREATE INDEX wallets_arrears ON wallets (tenant_id) WHERE arrears > 0;
