-- No index entry written per payment for the merchant's ledger entry. The merchant-day
-- index is read only for a merchant's refunds of a day (the sales are read from payments,
-- by payments_merchant), yet it held every merchant entry: one index insert per payment.
-- Refund entries are the negative ones, and they are few. Building the new index reads
-- the ledger once, under a lock that holds writes to it for that time (docs/OPERATIONS.md).
DROP INDEX ledger_merchant_day;
CREATE INDEX ledger_merchant_refunds ON ledger_entries (tenant_id, ref_id, created_at)
    WHERE account = 'merchant_receivable' AND amount < 0;
