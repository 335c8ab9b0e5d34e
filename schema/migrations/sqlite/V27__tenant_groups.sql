-- Tenant groups (SPEC §1, "group management"): a school district or a corporate group.
-- The platform operator forms a group around a head tenant (the district office, the
-- group's headquarters) and adds member tenants; a tenant belongs to at most one group.
-- The super admins of the head tenant are the group's admins: they see every member and
-- act in any of them.
CREATE TABLE tenant_groups (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    head_tenant_id  TEXT NOT NULL UNIQUE REFERENCES tenants (id),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

ALTER TABLE tenants ADD COLUMN group_id TEXT REFERENCES tenant_groups (id);
CREATE INDEX tenants_group ON tenants (group_id, id) WHERE group_id IS NOT NULL;
