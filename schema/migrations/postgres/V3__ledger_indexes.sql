-- Fewer index pages written per payment. The ledger index over every (account, ref_id)
-- put each payment's cardholder entry at a random page of a large index; only the
-- merchant-day queries need an index (the ledger check reads the tenant's entries in one
-- pass), and the merchants are few, so their entries go to a few pages in time order.
DROP INDEX ledger_tenant_account;
CREATE INDEX ledger_merchant_day ON ledger_entries (tenant_id, ref_id, created_at)
    WHERE account = 'merchant_receivable';
