-- Foundation: tenants, tokens, admins, directory, audit, idempotency.
-- Ids are UUID text; times are integer unix milliseconds (UTC).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('k12', 'university', 'enterprise')),
    edition     TEXT NOT NULL CHECK (edition IN ('basic_edu', 'standard', 'advanced', 'professional', 'flagship')),
    timezone    TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    CHECK (edition <> 'basic_edu' OR kind = 'k12')
);

CREATE TABLE tokens (
    hash        BLOB PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('root', 'admin', 'terminal', 'cardholder')),
    tenant_id   TEXT REFERENCES tenants (id),
    subject_id  TEXT,
    created_at  INTEGER NOT NULL,
    CHECK ((kind = 'root') = (tenant_id IS NULL))
);
CREATE INDEX tokens_subject ON tokens (subject_id);
CREATE UNIQUE INDEX tokens_one_root ON tokens (kind) WHERE kind = 'root';

CREATE TABLE departments (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    parent_id   TEXT REFERENCES departments (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX departments_sibling_name ON departments (tenant_id, coalesce(parent_id, ''), name);

CREATE TABLE tags (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    number      TEXT NOT NULL,
    phone       TEXT,
    id_hash     BLOB,
    id_last4    TEXT,
    identity    TEXT,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'left')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, number)
);
CREATE INDEX users_tenant_id ON users (tenant_id, id);

CREATE TABLE user_departments (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    department_id TEXT NOT NULL REFERENCES departments (id),
    PRIMARY KEY (user_id, department_id)
);
CREATE INDEX user_departments_dept ON user_departments (department_id, user_id);

CREATE TABLE user_tags (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag_id      TEXT NOT NULL REFERENCES tags (id),
    PRIMARY KEY (user_id, tag_id)
);
CREATE INDEX user_tags_tag ON user_tags (tag_id, user_id);

CREATE TABLE admins (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    user_id     TEXT REFERENCES users (id),
    role        TEXT NOT NULL CHECK (role IN ('super_admin', 'sub_admin')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'active')),
    created_at  INTEGER NOT NULL,
    bound_at    INTEGER
);
CREATE INDEX admins_tenant ON admins (tenant_id, id);

CREATE TABLE admin_bindings (
    hash        BLOB PRIMARY KEY,
    admin_id    TEXT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    at          INTEGER NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_tenant ON audit_log (tenant_id, id);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER,
    body         BLOB,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
