-- Less work per payment in the group commit (measured with pg_stat_statements under
-- `loadtest pay`; docs/BENCHMARKS.md, eighth run).

-- Idempotency keys compare byte-wise: with the database's default collation every
-- comparison in the (scope, key) index went through the locale's strcoll.
ALTER TABLE money_requests
    ALTER COLUMN scope TYPE TEXT COLLATE "C",
    ALTER COLUMN key TYPE TEXT COLLATE "C";

-- The outbox is a queue: its payload is written once, read once by the relay and
-- deleted. `json` keeps the text as sent (validated) instead of converting it to `jsonb`.
ALTER TABLE outbox ALTER COLUMN payload TYPE JSON USING payload::json;

-- Payments are the busiest table and are only ever inserted by the ledger writer, with
-- the tenant, merchant and terminal of an authenticated till, which are never deleted.
-- Their foreign keys cost a locking lookup of three parent rows per payment (the
-- tenant's row shared by every payment of the tenant), so they are dropped.
ALTER TABLE payments
    DROP CONSTRAINT IF EXISTS payments_tenant_id_fkey,
    DROP CONSTRAINT IF EXISTS payments_merchant_id_fkey,
    DROP CONSTRAINT IF EXISTS payments_terminal_id_fkey;
