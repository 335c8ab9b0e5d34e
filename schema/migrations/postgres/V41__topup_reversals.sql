-- Top-up reversals (docs/OPERATIONS.md "The top-up register"): a top-up credited to the
-- wrong person, or twice under two references, is taken back from the cash it credited,
-- in the commit of the reversal's ledger entries, and its line says when, by whom, why,
-- and under which transaction. A reversed top-up's reference is free again, so that the
-- same bank transfer can be credited to the right person: the guard covers the top-ups
-- that stand.
ALTER TABLE topups
    ADD COLUMN reversal_id     UUID,
    ADD COLUMN reversed_at     TIMESTAMPTZ,
    ADD COLUMN reversed_by     TEXT,
    ADD COLUMN reversal_reason TEXT;
DROP INDEX topups_reference;
CREATE UNIQUE INDEX topups_reference ON topups (tenant_id, reference)
    WHERE reference IS NOT NULL AND reversal_id IS NULL;
CREATE INDEX topups_reversal ON topups (reversal_id) WHERE reversal_id IS NOT NULL;
