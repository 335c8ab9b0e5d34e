//! The tenant-groups half of the SQLite engine. The single writer makes each membership
//! check and its change one step.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{StoreError, StoreResult};
use crate::group_store::{
    head_cannot_leave, head_not_member, in_other_group, not_empty, TenantGroup, TenantGroupPatch,
    TenantGroupStore, TenantPatch,
};
use crate::ids::*;
use crate::model::*;
use crate::sqlite::{
    db, insert_audit, load_tenant, ms, paginate, tenant_from_row, ts, uuid_col, SqliteStore,
    TENANT_COLS,
};

const COLS: &str = "id, name, head_tenant_id, created_at, updated_at";

fn group_from_row(r: &Row) -> rusqlite::Result<TenantGroup> {
    Ok(TenantGroup {
        id: TenantGroupId(uuid_col(r, 0)?),
        name: r.get(1)?,
        head_tenant_id: TenantId(uuid_col(r, 2)?),
        created_at: ts(r.get(3)?),
        updated_at: ts(r.get(4)?),
    })
}

fn load_group(c: &Connection, id: TenantGroupId) -> StoreResult<TenantGroup> {
    c.prepare_cached(&format!("SELECT {COLS} FROM tenant_groups WHERE id = ?"))
        .and_then(|mut st| st.query_row([id.to_string()], group_from_row).optional())
        .map_err(db)?
        .ok_or(StoreError::NotFound)
}

fn set_group(c: &Connection, tenant: TenantId, group: Option<TenantGroupId>) -> StoreResult<()> {
    c.execute(
        "UPDATE tenants SET group_id = ? WHERE id = ?",
        params![group.map(|g| g.to_string()), tenant.to_string()],
    )
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl TenantGroupStore for SqliteStore {
    async fn create_tenant_group(&self, g: TenantGroup, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let head = load_tenant(c, g.head_tenant_id)?;
            if let Some(other) = head.group_id {
                return Err(in_other_group(head.id, other));
            }
            c.execute(
                &format!("INSERT INTO tenant_groups ({COLS}) VALUES (?,?,?,?,?)"),
                params![
                    g.id.to_string(),
                    g.name,
                    g.head_tenant_id.to_string(),
                    ms(g.created_at),
                    ms(g.updated_at),
                ],
            )
            .map_err(db)?;
            set_group(c, head.id, Some(g.id))?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_tenant_groups(
        &self,
        page: PageReq<TenantGroupId>,
    ) -> StoreResult<Page<TenantGroup, TenantGroupId>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM tenant_groups WHERE (?1 IS NULL OR id > ?1) \
                     ORDER BY id LIMIT ?2"
                ))
                .map_err(db)?;
            let rows = st
                .query_map(
                    params![page.after.map(|a| a.to_string()), i64::from(page.limit) + 1],
                    group_from_row,
                )
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |g| g.id))
        })
        .await
    }

    async fn get_tenant_group(&self, id: TenantGroupId) -> StoreResult<TenantGroup> {
        self.read(move |c| load_group(c, id)).await
    }

    async fn group_headed_by(&self, tenant: TenantId) -> StoreResult<Option<TenantGroup>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLS} FROM tenant_groups WHERE head_tenant_id = ?"
            ))
            .and_then(|mut st| {
                st.query_row([tenant.to_string()], group_from_row)
                    .optional()
            })
            .map_err(db)
        })
        .await
    }

    async fn update_tenant_group(
        &self,
        id: TenantGroupId,
        patch: TenantGroupPatch,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<TenantGroup> {
        self.write(move |c| {
            let mut g = load_group(c, id)?;
            if let Some(head) = patch.head_tenant_id {
                if load_tenant(c, head).ok().and_then(|t| t.group_id) != Some(id) {
                    return Err(head_not_member());
                }
                g.head_tenant_id = head;
            }
            if let Some(name) = patch.name {
                g.name = name;
            }
            g.updated_at = at;
            c.execute(
                "UPDATE tenant_groups SET name = ?, head_tenant_id = ?, updated_at = ? \
                 WHERE id = ?",
                params![g.name, g.head_tenant_id.to_string(), ms(at), id.to_string()],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            Ok(g)
        })
        .await
    }

    async fn delete_tenant_group(&self, id: TenantGroupId, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let g = load_group(c, id)?;
            let others: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM tenants WHERE group_id = ? AND id <> ?",
                    params![id.to_string(), g.head_tenant_id.to_string()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if others > 0 {
                return Err(not_empty(others as u64));
            }
            set_group(c, g.head_tenant_id, None)?;
            c.execute("DELETE FROM tenant_groups WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn add_group_member(
        &self,
        id: TenantGroupId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.write(move |c| {
            load_group(c, id)?;
            let t = load_tenant(c, tenant)?;
            match t.group_id {
                Some(g) if g == id => return Ok(false),
                Some(other) => return Err(in_other_group(tenant, other)),
                None => {}
            }
            set_group(c, tenant, Some(id))?;
            insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn remove_group_member(
        &self,
        id: TenantGroupId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let g = load_group(c, id)?;
            if load_tenant(c, tenant)?.group_id != Some(id) {
                return Err(StoreError::NotFound);
            }
            if g.head_tenant_id == tenant {
                return Err(head_cannot_leave());
            }
            crate::sqlite_persons::take_tenant_out(c, tenant)?;
            set_group(c, tenant, None)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_tenants(
        &self,
        group: Option<TenantGroupId>,
        page: PageReq<TenantId>,
    ) -> StoreResult<Page<Tenant, TenantId>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE (?1 IS NULL OR group_id = ?1) \
                     AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
                ))
                .map_err(db)?;
            let rows = st
                .query_map(
                    params![
                        group.map(|g| g.to_string()),
                        page.after.map(|a| a.to_string()),
                        i64::from(page.limit) + 1
                    ],
                    tenant_from_row,
                )
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |t| t.id))
        })
        .await
    }

    async fn patch_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        audit: Audit,
    ) -> StoreResult<Tenant> {
        self.write(move |c| {
            let mut t = load_tenant(c, id)?;
            if let Some(name) = patch.name {
                t.name = name;
            }
            if let Some(edition) = patch.edition {
                t.edition = edition;
            }
            c.execute(
                "UPDATE tenants SET name = ?, edition = ? WHERE id = ?",
                params![t.name, t.edition.as_str(), id.to_string()],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            Ok(t)
        })
        .await
    }
}
