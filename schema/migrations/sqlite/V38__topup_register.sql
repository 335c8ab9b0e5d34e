-- The top-up register (docs/OPERATIONS.md "The top-up register"): each credit of a
-- cardholder's cash, with the bank's reference for it and who credited it, written in
-- the commit of its ledger entries under their transaction's id. Payments never write it.
-- A reference is credited once in a tenant: the unique index is the store's own guard,
-- so that one bank transfer is never credited twice, whichever admin, upload or node
-- credits it. Top-ups made before it are copied from the ledger (a top-up's cash entry
-- names its holder), with neither reference nor creditor: those went to the audit log.
CREATE TABLE topups (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    reference   TEXT,
    credited_by TEXT,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX topups_tenant ON topups (tenant_id, id);
CREATE INDEX topups_user ON topups (user_id, id);
CREATE UNIQUE INDEX topups_reference ON topups (tenant_id, reference) WHERE reference IS NOT NULL;
INSERT INTO topups (id, tenant_id, user_id, amount, created_at)
SELECT t.tx_id, t.tenant_id, c.ref_id, -t.amount, t.created_at
FROM ledger_entries t
JOIN ledger_entries c ON c.tx_id = t.tx_id AND c.account = 'cash'
WHERE t.account = 'topup_clearing';
