//! The tenant-groups half of the PostgreSQL engine. Each change locks the rows it checks
//! (the group, the tenant), so two operators adding one tenant to two groups at once
//! cannot both succeed.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::error::{StoreError, StoreResult};
use crate::group_store::{
    head_cannot_leave, head_not_member, in_other_group, not_empty, TenantGroup, TenantGroupPatch,
    TenantGroupStore, TenantPatch,
};
use crate::ids::*;
use crate::model::*;
use crate::postgres::{insert_audit, pg, tenant_from_row, PgStore, TENANT_COLS};
use crate::sqlite::paginate;

const COLS: &str = "id, name, head_tenant_id, created_at, updated_at";

fn group_from_row(r: &Row) -> StoreResult<TenantGroup> {
    Ok(TenantGroup {
        id: TenantGroupId(r.try_get(0).map_err(pg)?),
        name: r.try_get(1).map_err(pg)?,
        head_tenant_id: TenantId(r.try_get(2).map_err(pg)?),
        created_at: r.try_get(3).map_err(pg)?,
        updated_at: r.try_get(4).map_err(pg)?,
    })
}

/// The group, locked for the rest of the transaction when `lock`.
async fn load_group<C: GenericClient>(
    c: &C,
    id: TenantGroupId,
    lock: bool,
) -> StoreResult<TenantGroup> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = c
        .query_opt(
            &format!("SELECT {COLS} FROM tenant_groups WHERE id = $1{lock}"),
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    group_from_row(&row)
}

/// The tenant, locked for the rest of the transaction.
async fn lock_tenant<C: GenericClient>(c: &C, id: TenantId) -> StoreResult<Tenant> {
    let row = c
        .query_opt(
            &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1 FOR UPDATE"),
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    tenant_from_row(&row)
}

async fn set_group<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    group: Option<TenantGroupId>,
) -> StoreResult<()> {
    c.execute(
        "UPDATE tenants SET group_id = $1 WHERE id = $2",
        &[&group.map(|g| g.0), &tenant.0],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

#[async_trait]
impl TenantGroupStore for PgStore {
    async fn create_tenant_group(&self, g: TenantGroup, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let head = lock_tenant(&tx, g.head_tenant_id).await?;
        if let Some(other) = head.group_id {
            return Err(in_other_group(head.id, other));
        }
        tx.execute(
            &format!("INSERT INTO tenant_groups ({COLS}) VALUES ($1,$2,$3,$4,$5)"),
            &[
                &g.id.0,
                &g.name,
                &g.head_tenant_id.0,
                &g.created_at,
                &g.updated_at,
            ],
        )
        .await
        .map_err(pg)?;
        set_group(&tx, head.id, Some(g.id)).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_tenant_groups(
        &self,
        page: PageReq<TenantGroupId>,
    ) -> StoreResult<Page<TenantGroup, TenantGroupId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM tenant_groups WHERE ($1::uuid IS NULL OR id > $1) \
                     ORDER BY id LIMIT $2"
                ),
                &[&page.after.map(|a| a.0), &(i64::from(page.limit) + 1)],
            )
            .await
            .map_err(pg)?;
        let groups = rows
            .iter()
            .map(group_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(groups, page.limit, |g| g.id))
    }

    async fn get_tenant_group(&self, id: TenantGroupId) -> StoreResult<TenantGroup> {
        let c = self.client().await?;
        load_group(&c, id, false).await
    }

    async fn group_headed_by(&self, tenant: TenantId) -> StoreResult<Option<TenantGroup>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLS} FROM tenant_groups WHERE head_tenant_id = $1"
            ))
            .await
            .map_err(pg)?;
        c.query_opt(&st, &[&tenant.0])
            .await
            .map_err(pg)?
            .map(|r| group_from_row(&r))
            .transpose()
    }

    async fn update_tenant_group(
        &self,
        id: TenantGroupId,
        patch: TenantGroupPatch,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<TenantGroup> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let mut g = load_group(&tx, id, true).await?;
        if let Some(head) = patch.head_tenant_id {
            let member = match lock_tenant(&tx, head).await {
                Ok(t) => t.group_id == Some(id),
                Err(StoreError::NotFound) => false,
                Err(e) => return Err(e),
            };
            if !member {
                return Err(head_not_member());
            }
            g.head_tenant_id = head;
        }
        if let Some(name) = patch.name {
            g.name = name;
        }
        g.updated_at = at;
        tx.execute(
            "UPDATE tenant_groups SET name = $1, head_tenant_id = $2, updated_at = $3 \
             WHERE id = $4",
            &[&g.name, &g.head_tenant_id.0, &at, &id.0],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(g)
    }

    async fn delete_tenant_group(&self, id: TenantGroupId, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let g = load_group(&tx, id, true).await?;
        let others: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM tenants WHERE group_id = $1 AND id <> $2",
                &[&id.0, &g.head_tenant_id.0],
            )
            .await
            .map_err(pg)?
            .get(0);
        if others > 0 {
            return Err(not_empty(others as u64));
        }
        set_group(&tx, g.head_tenant_id, None).await?;
        tx.execute("DELETE FROM tenant_groups WHERE id = $1", &[&id.0])
            .await
            .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn add_group_member(
        &self,
        id: TenantGroupId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // The group is locked first, as a delete locks it before counting its members.
        load_group(&tx, id, true).await?;
        match lock_tenant(&tx, tenant).await?.group_id {
            Some(g) if g == id => return Ok(false),
            Some(other) => return Err(in_other_group(tenant, other)),
            None => {}
        }
        set_group(&tx, tenant, Some(id)).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn remove_group_member(
        &self,
        id: TenantGroupId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let g = load_group(&tx, id, true).await?;
        if lock_tenant(&tx, tenant).await?.group_id != Some(id) {
            return Err(StoreError::NotFound);
        }
        if g.head_tenant_id == tenant {
            return Err(head_cannot_leave());
        }
        crate::postgres_persons::take_tenant_out(&tx, tenant).await?;
        set_group(&tx, tenant, None).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_tenants(
        &self,
        group: Option<TenantGroupId>,
        page: PageReq<TenantId>,
    ) -> StoreResult<Page<Tenant, TenantId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE ($1::uuid IS NULL OR group_id = $1) \
                     AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
                ),
                &[
                    &group.map(|g| g.0),
                    &page.after.map(|a| a.0),
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let tenants = rows
            .iter()
            .map(tenant_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(tenants, page.limit, |t| t.id))
    }

    async fn patch_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        audit: Audit,
    ) -> StoreResult<Tenant> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let mut t = lock_tenant(&tx, id).await?;
        if let Some(name) = patch.name {
            t.name = name;
        }
        if let Some(edition) = patch.edition {
            t.edition = edition;
        }
        tx.execute(
            "UPDATE tenants SET name = $1, edition = $2 WHERE id = $3",
            &[&t.name, &t.edition.as_str(), &id.0],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(t)
    }
}
