-- Open platform (SPEC §12): a tenant's self-built and third-party apps. An app calls the
-- API with signed requests; its secret is derived from the master key, the app's id and
-- `secret_version` (a rotation bumps it), so no secret is stored.
CREATE TABLE apps (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('h5', 'mini_program', 'headless')),
    description    TEXT,
    logo_url       TEXT,
    scopes         TEXT NOT NULL,
    secret_version INTEGER NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Each signed request's nonce, kept past the ±5 min clock window so a replay is refused.
CREATE TABLE app_nonces (
    app_id   UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    nonce    TEXT NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app_id, nonce)
);
CREATE INDEX app_nonces_seen ON app_nonces (seen_at);
