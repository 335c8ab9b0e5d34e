-- The withdrawal register (docs/OPERATIONS.md "Withdrawals"): each payout of a
-- cardholder's cash, with how the office paid it and who paid it out, written in the
-- commit of its ledger entries under their transaction's id. Payments never write it.
-- Withdrawals made before it are copied from the ledger (a withdrawal's cash entry names
-- its holder), with neither reference nor payer: those went to the audit log only.
CREATE TABLE withdrawals (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    reference  TEXT,
    paid_by    TEXT,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX withdrawals_tenant ON withdrawals (tenant_id, id);
CREATE INDEX withdrawals_user ON withdrawals (user_id, id);
INSERT INTO withdrawals (id, tenant_id, user_id, amount, created_at)
SELECT w.tx_id, w.tenant_id, c.ref_id, w.amount, w.created_at
FROM ledger_entries w
JOIN ledger_entries c ON c.tx_id = w.tx_id AND c.account = 'cash'
WHERE w.account = 'withdrawal_clearing';
