-- Idempotency records are kept for `ONECARD_IDEMPOTENCY_KEEP_DAYS` (30 by default), no
-- longer for ever: each node purges older ones, oldest first, a batch per statement, and
-- these indexes find them. A payment adds one entry at the index's end. Building them
-- reads each table once and holds writes to it meanwhile (docs/OPERATIONS.md). Nodes of
-- the previous release keep working beside them.
CREATE INDEX money_requests_created ON money_requests (created_at);
CREATE INDEX idempotency_created ON idempotency (created_at);
