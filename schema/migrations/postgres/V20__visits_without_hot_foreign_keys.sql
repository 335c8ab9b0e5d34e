-- Every visit at one code referenced the same tenant, terminal and merchant rows, and a
-- foreign key check locks the row it references (KEY SHARE) until the transaction ends:
-- thousands of visits a minute at one door shared those three locks, which PostgreSQL
-- keeps as ever-growing multixacts. Visits are written only by the server, from the code
-- it has just read, and terminals and merchants are never deleted; the references go.
-- (Payments keep theirs: the ledger writer commits them in batches.)
ALTER TABLE collection_visits
    DROP CONSTRAINT collection_visits_tenant_id_fkey,
    DROP CONSTRAINT collection_visits_terminal_id_fkey,
    DROP CONSTRAINT collection_visits_merchant_id_fkey;
