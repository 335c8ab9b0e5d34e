-- "Was this transfer credited, and to whom?" (`GET /wallets/topups?reference=`, and the
-- same on the withdrawal register; an online top-up finding its line): found through
-- an index of every line with a reference, taken back or not, instead of reading the
-- tenant's whole register (about a microsecond a line: a second at a million top-ups).
-- The unique index of standing references stays the guard.
CREATE INDEX topups_reference_lookup ON topups (tenant_id, reference, id)
    WHERE reference IS NOT NULL;
CREATE INDEX withdrawals_reference_lookup ON withdrawals (tenant_id, reference, id)
    WHERE reference IS NOT NULL;
