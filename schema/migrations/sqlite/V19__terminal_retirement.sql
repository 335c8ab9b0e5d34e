-- A terminal retired (a till sold, a stall closed): its tokens are revoked and its
-- collection code stops answering; it stays, with its payments and visits.
ALTER TABLE terminals ADD COLUMN retired_at INTEGER;
