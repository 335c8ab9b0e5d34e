-- Withdrawals (docs/OPERATIONS.md "Withdrawals"): the finance office pays a cardholder's
-- cash balance out to them, a person leaving, say. The income summary counts them by
-- day, so the reports' roll-ups gain a column (0 for every quarter hour before), and
-- their ledger entries a partial index of their own: no other movement writes one, and
-- the reports' movements index stays as it is.
ALTER TABLE report_movements ADD COLUMN withdrawals BIGINT NOT NULL DEFAULT 0;
CREATE INDEX ledger_tenant_withdrawals ON ledger_entries (tenant_id, created_at)
    WHERE account = 'withdrawal_clearing';
