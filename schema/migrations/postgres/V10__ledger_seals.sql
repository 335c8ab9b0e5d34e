-- Ledger seals (docs/OPERATIONS.md, "The ledger check"). The check reads the whole ledger,
-- so its time grows with every entry ever written; a seal keeps the sums of every entry
-- up to an id, and the check adds only the entries after it.
--
-- A seal covers whole transactions: its boundary is taken while no transaction writing
-- entries is open (`seal_ledger`), so every entry at or below it is committed and none
-- will appear there later. Entries are never changed or deleted; `?full=true` on the
-- check reads every entry again, for anyone who wants to verify that too.

-- One row: entries with id <= through_id are in the sums below.
CREATE TABLE ledger_seal (
    one        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    through_id BIGINT NOT NULL,
    sealed_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO ledger_seal (one, through_id, sealed_at) VALUES (TRUE, 0, now());

-- Per tenant: how many sealed entries, their sum, and whether a sealed transaction's
-- entries do not sum to zero.
CREATE TABLE ledger_seal_tenants (
    tenant_id  UUID PRIMARY KEY,
    entries    BIGINT NOT NULL,
    total      BIGINT NOT NULL,
    unbalanced BOOLEAN NOT NULL
);

-- The sealed sum of each account a wallet is compared with (cash, arrears, subsidy).
CREATE TABLE ledger_seal_sums (
    tenant_id UUID NOT NULL,
    account   TEXT NOT NULL,
    ref_id    UUID NOT NULL,
    total     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, account, ref_id)
);
