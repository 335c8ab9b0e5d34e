-- Canteen collection codes (SPEC §13). A terminal may be a merchant's static code that
-- cardholders scan with their phone: to pay an amount they enter (`pay`) or to be
-- counted (`count`). The code is unique across tenants, since a phone scanning it does not
-- say whose it is. (SQLite cannot add a table CHECK; the store writes code and mode
-- together.)
ALTER TABLE terminals ADD COLUMN collection_code TEXT;
ALTER TABLE terminals ADD COLUMN collection_mode TEXT CHECK (collection_mode IN ('pay', 'count'));
CREATE UNIQUE INDEX terminals_collection_code ON terminals (collection_code)
    WHERE collection_code IS NOT NULL;
CREATE INDEX terminals_merchant ON terminals (tenant_id, merchant_id, id);

-- A visit counted at a count-only code. The user is not a foreign key, as on payments:
-- a deleted user's visits still count in the merchant's figures.
CREATE TABLE collection_visits (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    terminal_id TEXT NOT NULL REFERENCES terminals (id),
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    user_id     TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX collection_visits_merchant ON collection_visits (tenant_id, merchant_id, at);
CREATE INDEX collection_visits_user ON collection_visits (tenant_id, user_id, id);
