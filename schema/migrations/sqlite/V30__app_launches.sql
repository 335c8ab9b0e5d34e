-- The card's launcher (SPEC §12: an H5 app gets its own link, a mini-program its own
-- code). An app's entry page, and the one-time launch tickets with which it learns who
-- opened it from their card: one outstanding per app and cardholder, stored as SHA-256.
ALTER TABLE apps ADD COLUMN entry_url TEXT;

CREATE TABLE app_launches (
    hash        BLOB PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    expires_at  INTEGER NOT NULL,
    UNIQUE (app_id, user_id)
);
