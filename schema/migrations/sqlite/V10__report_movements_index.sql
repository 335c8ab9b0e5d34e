-- Financial reports (SPEC §9, docs/OPERATIONS.md "Financial reports"). The income summary
-- sums a tenant's top-ups, subsidies issued and arrears opened, recovered and written off
-- by day. The ledger has no index by time (each one costs every payment an index insert),
-- so these entries get a partial index of their own: a payment writes none of them, only
-- top-ups, subsidy rules, provider declines, repayments and write-offs do. Building it
-- reads the ledger once, under a lock that holds writes to it for that time.
CREATE INDEX ledger_tenant_movements ON ledger_entries (tenant_id, created_at)
    WHERE account IN ('topup_clearing', 'subsidy_funding', 'arrears', 'repayment_clearing', 'arrears_written_off');
