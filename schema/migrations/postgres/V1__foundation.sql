-- Foundation: tenants, tokens, admins, directory, audit, idempotency.

CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('k12', 'university', 'enterprise')),
    edition     TEXT NOT NULL CHECK (edition IN ('basic_edu', 'standard', 'advanced', 'professional', 'flagship')),
    timezone    TEXT NOT NULL,
    settings    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    CHECK (edition <> 'basic_edu' OR kind = 'k12')
);

CREATE TABLE tokens (
    hash        BYTEA PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('root', 'admin', 'terminal', 'cardholder')),
    tenant_id   UUID REFERENCES tenants (id),
    subject_id  UUID,
    created_at  TIMESTAMPTZ NOT NULL,
    CHECK ((kind = 'root') = (tenant_id IS NULL))
);
CREATE INDEX tokens_subject ON tokens (subject_id);
CREATE UNIQUE INDEX tokens_one_root ON tokens (kind) WHERE kind = 'root';

CREATE TABLE departments (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    parent_id   UUID REFERENCES departments (id),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, parent_id, name)
);

CREATE TABLE tags (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE users (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    number      TEXT NOT NULL,
    phone       TEXT,
    id_hash     BYTEA,
    id_last4    TEXT,
    identity    TEXT,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'left')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, number)
);
CREATE INDEX users_tenant_id ON users (tenant_id, id);

CREATE TABLE user_departments (
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    department_id UUID NOT NULL REFERENCES departments (id),
    PRIMARY KEY (user_id, department_id)
);
CREATE INDEX user_departments_dept ON user_departments (department_id, user_id);

CREATE TABLE user_tags (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag_id      UUID NOT NULL REFERENCES tags (id),
    PRIMARY KEY (user_id, tag_id)
);
CREATE INDEX user_tags_tag ON user_tags (tag_id, user_id);

CREATE TABLE admins (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    user_id     UUID REFERENCES users (id),
    role        TEXT NOT NULL CHECK (role IN ('super_admin', 'sub_admin')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'active')),
    created_at  TIMESTAMPTZ NOT NULL,
    bound_at    TIMESTAMPTZ
);
CREATE INDEX admins_tenant ON admins (tenant_id, id);

CREATE TABLE admin_bindings (
    hash        BYTEA PRIMARY KEY,
    admin_id    UUID NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

CREATE TABLE audit_log (
    id          UUID PRIMARY KEY,
    tenant_id   UUID,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    detail      JSONB NOT NULL
);
CREATE INDEX audit_tenant ON audit_log (tenant_id, id);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       INTEGER,
    body         BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
