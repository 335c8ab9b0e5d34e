-- No index page written per payment for the merchant's ledger entry. The merchant-day
-- index is read only for a merchant's refunds of a day (the sales are read from payments,
-- by payments_merchant), yet it held every merchant entry: one insert per payment, at the
-- tail of that merchant's part of the index, so every group commit wrote one or more index
-- pages per merchant that sold in it (18 of its 171 pages under `loadtest pay`, 8 stalls;
-- docs/BENCHMARKS.md). Refund entries are the negative ones, and they are few.
DROP INDEX ledger_merchant_day;
CREATE INDEX ledger_merchant_refunds ON ledger_entries (tenant_id, ref_id, created_at)
    WHERE account = 'merchant_receivable' AND amount < 0;
