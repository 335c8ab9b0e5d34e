-- A tenant's own front end (SPEC §1 "dedicated mini-program", professional edition and
-- up): the address its card pages are served at, the name and colour they show, and its
-- logo. Every link the server makes for the tenant carries its address, and a page opened
-- there takes its look from it. An address belongs to one tenant (the host is unique).
CREATE TABLE tenant_front_ends (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants (id),
    public_url   TEXT,
    -- The address's host (and port), lower case: what a request's Host is matched with.
    host         TEXT UNIQUE,
    title        TEXT,
    accent_color TEXT,
    logo         BLOB,
    logo_type    TEXT,
    logo_sha256  BLOB,
    updated_at   INTEGER NOT NULL,
    CHECK ((public_url IS NULL) = (host IS NULL)),
    CHECK ((logo IS NULL) = (logo_sha256 IS NULL))
);
CREATE INDEX tenant_front_ends_logo ON tenant_front_ends (logo_sha256)
    WHERE logo_sha256 IS NOT NULL;
