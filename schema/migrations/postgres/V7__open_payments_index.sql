-- Open payments (a deferred debit waiting for its provider, or unsettled) have an index of
-- their own, which a wallet's load reads: before, it read every payment the cardholder ever
-- made to find the few still open, on the first payment after the wallet's actor had
-- stopped (docs/BENCHMARKS.md, thirty-ninth run). A payment that succeeds at once never
-- enters it. Nodes of the previous release keep working beside it. Building it reads
-- `payments` once and holds writes to it meanwhile (docs/OPERATIONS.md).
CREATE INDEX payments_user_open ON payments (user_id, id) WHERE status IN ('accepted', 'unsettled');
