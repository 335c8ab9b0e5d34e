-- The card's launcher (SPEC §12: an H5 app gets its own link, a mini-program its own
-- code). An app's entry page, and the one-time launch tickets with which it learns who
-- opened it from their card: one outstanding per app and cardholder, stored as SHA-256.
-- Nodes of earlier releases neither read nor write either.
ALTER TABLE apps ADD COLUMN entry_url TEXT;

CREATE TABLE app_launches (
    hash        BYTEA PRIMARY KEY,
    app_id      UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    expires_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (app_id, user_id)
);
