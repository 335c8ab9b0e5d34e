-- Sub-admin permission groups (SPEC §11): what a group's admins may see and change.
-- `grants` is one JSON document (departments and tags with view or manage, basic
-- features, apps), read whole with the admin's token and checked by the server.
CREATE TABLE admin_groups (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    grants      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

-- A sub-admin belongs to exactly one group; a super admin to none.
ALTER TABLE admins ADD COLUMN group_id TEXT REFERENCES admin_groups (id)
    CHECK ((role = 'sub_admin') = (group_id IS NOT NULL));
CREATE INDEX admins_group ON admins (group_id) WHERE group_id IS NOT NULL;
