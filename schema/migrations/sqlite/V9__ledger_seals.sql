-- Ledger seals (docs/OPERATIONS.md, "The ledger check"). The check reads the whole ledger,
-- so its time grows with every entry ever written; a seal keeps the sums of every entry
-- up to an id, and the check adds only the entries after it.
--
-- A seal covers whole transactions: the store has one writer, so every entry at or below
-- the largest id a snapshot holds is committed and none will appear there later. Entries
-- are never changed or deleted; `?full=true` on the check reads every entry again, for
-- anyone who wants to verify that too.

-- One row: entries with id <= through_id are in the sums below.
CREATE TABLE ledger_seal (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    through_id INTEGER NOT NULL,
    sealed_at  INTEGER NOT NULL
);
INSERT INTO ledger_seal (one, through_id, sealed_at) VALUES (1, 0, 0);

-- Per tenant: how many sealed entries, their sum, and whether a sealed transaction's
-- entries do not sum to zero.
CREATE TABLE ledger_seal_tenants (
    tenant_id  TEXT PRIMARY KEY,
    entries    INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    unbalanced INTEGER NOT NULL
) WITHOUT ROWID;

-- The sealed sum of each account a wallet is compared with (cash, arrears, subsidy).
CREATE TABLE ledger_seal_sums (
    tenant_id TEXT NOT NULL,
    account   TEXT NOT NULL,
    ref_id    TEXT NOT NULL,
    total     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, account, ref_id)
) WITHOUT ROWID;
