-- The group commit sends a batch whole, `BEGIN` to `COMMIT`, in one round trip. Its
-- checks (every card still active, every wallet at the version its commit was made from,
-- every payment a refund changes as its decision saw it) cannot then be answers the
-- node reads before it decides to commit: each check fails the transaction itself,
-- through this function, and the node goes over the batch again commit by commit.
-- Nodes of the previous release do not call it and keep working beside it.
CREATE FUNCTION onecard_expect(ok BOOLEAN, what TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'batch check failed: %', what USING ERRCODE = 'OC001';
    END IF;
    RETURN TRUE;
END
$$;
