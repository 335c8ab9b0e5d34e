-- Fewer index pages written per payment. The ledger index over every (account, ref_id)
-- put each payment's cardholder entry at a random page of a large index; only the
-- merchant-day queries need an index (the ledger check reads the tenant's entries in one
-- pass), and the merchants are few, so their entries go to a few pages in time order.
DROP INDEX ledger_tenant_account;
CREATE INDEX ledger_merchant_day ON ledger_entries (tenant_id, ref_id, created_at)
    WHERE account = 'merchant_receivable';

-- The outbox is a queue: every row is deleted seconds after it is written. Vacuum and
-- analyze it by row count, not by a share of a table that is almost always empty, so its
-- dead rows are reclaimed and its statistics stay true.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 10000
);
