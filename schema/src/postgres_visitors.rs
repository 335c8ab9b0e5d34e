//! The visitor half of the PostgreSQL engine. A request's row is locked while its status
//! is checked and moved, so that a host's decision, the visitor's cancellation and an
//! entry at the gate take turns.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::postgres::{check_refs, enum_col, pg, PgStore};
use crate::postgres_money::insert_outbox;
use crate::sqlite::paginate;
use crate::store::{from_json_text, to_json_text};
use crate::visitor_store::{
    not_movable, NewVisitorRequest, VisitorCounts, VisitorFilter, VisitorStore,
};
use crate::wallet::{OutboxEvent, OutboxPage};

const COLS: &str = "r.id, r.host_id, u.name, r.name, r.phone, r.company, r.purpose, r.plate, \
     r.id_last4, r.starts_at, r.ends_at, r.status, r.reason, r.decided_at, r.entered_at, \
     r.created_at, r.tenant_id";
const FROM: &str = "visitor_requests r LEFT JOIN users u ON u.id = r.host_id";

fn request_from_row(r: &Row) -> StoreResult<VisitorRequest> {
    Ok(VisitorRequest {
        id: VisitorRequestId(r.get(0)),
        host_id: UserId(r.get(1)),
        host_name: r.get(2),
        name: r.get(3),
        phone: r.get(4),
        company: r.get(5),
        purpose: r.get(6),
        plate: r.get(7),
        id_last4: r.get(8),
        starts_at: r.get(9),
        ends_at: r.get(10),
        status: enum_col(r, 11, VisitStatus::parse)?,
        reason: r.get(12),
        decided_at: r.get(13),
        entered_at: r.get(14),
        created_at: r.get(15),
    })
}

/// The request, its row locked until the transaction ends when `lock`.
async fn find<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    id: VisitorRequestId,
    lock: bool,
) -> StoreResult<VisitorRequest> {
    if lock {
        c.execute(
            "SELECT 1 FROM visitor_requests WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?;
    }
    let row = c
        .query_opt(
            &format!("SELECT {COLS} FROM {FROM} WHERE r.tenant_id = $1 AND r.id = $2"),
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    request_from_row(&row)
}

#[async_trait]
impl VisitorStore for PgStore {
    async fn visitor_form(&self, tenant: TenantId) -> StoreResult<VisitorForm> {
        let c = self.client().await?;
        match c
            .query_opt(
                "SELECT form FROM visitor_forms WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?
        {
            Some(r) => from_json_text(&r.get::<_, String>(0)),
            None => Ok(VisitorForm::default()),
        }
    }

    async fn put_visitor_form(
        &self,
        tenant: TenantId,
        form: VisitorForm,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "INSERT INTO visitor_forms (tenant_id, form, updated_at) VALUES ($1,$2,$3) \
             ON CONFLICT (tenant_id) DO UPDATE SET form = excluded.form, \
             updated_at = excluded.updated_at",
            &[&tenant.0, &to_json_text(&form)?, &at],
            &audit,
        )
        .await
    }

    async fn create_visitor_request(
        &self,
        tenant: TenantId,
        new: NewVisitorRequest,
        event: OutboxEvent,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let r = &new.request;
        check_refs(&tx, "users", tenant, &[r.host_id.0], "host").await?;
        tx.execute(
            "INSERT INTO visitor_requests (id, tenant_id, host_id, pass_hash, name, phone, \
             company, purpose, plate, id_hash, id_last4, starts_at, ends_at, status, \
             created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
            &[
                &r.id.0,
                &tenant.0,
                &r.host_id.0,
                &&new.pass_hash[..],
                &r.name,
                &r.phone,
                &r.company,
                &r.purpose,
                &r.plate,
                &new.id_hash.as_ref().map(|h| &h[..]),
                &r.id_last4,
                &r.starts_at,
                &r.ends_at,
                &r.status.as_str(),
                &r.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), r.created_at);
        insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn get_visitor_request(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
    ) -> StoreResult<VisitorRequest> {
        let c = self.client().await?;
        find(&c, tenant, id, false).await
    }

    async fn visitor_request_by_pass(
        &self,
        pass_hash: [u8; 32],
    ) -> StoreResult<Option<(TenantId, VisitorRequest)>> {
        let c = self.client().await?;
        match c
            .query_opt(
                &format!("SELECT {COLS} FROM {FROM} WHERE r.pass_hash = $1"),
                &[&&pass_hash[..]],
            )
            .await
            .map_err(pg)?
        {
            Some(r) => Ok(Some((TenantId(r.get(16)), request_from_row(&r)?))),
            None => Ok(None),
        }
    }

    async fn move_visitor_request(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
        host: Option<UserId>,
        from: Vec<VisitStatus>,
        to: VisitStatus,
        reason: Option<String>,
        at: Timestamp,
    ) -> StoreResult<VisitorRequest> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let now = find(&tx, tenant, id, true).await?;
        if host.is_some_and(|h| h != now.host_id) {
            return Err(StoreError::NotFound);
        }
        if !from.contains(&now.status) {
            return Err(not_movable(now.status));
        }
        tx.execute(
            "UPDATE visitor_requests SET status = $2, reason = $3, decided_at = $4 WHERE id = $1",
            &[&id.0, &to.as_str(), &reason, &at],
        )
        .await
        .map_err(pg)?;
        let moved = find(&tx, tenant, id, false).await?;
        tx.commit().await.map_err(pg)?;
        Ok(moved)
    }

    async fn enter_visitor(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
        at: Timestamp,
        event: OutboxEvent,
    ) -> StoreResult<(VisitorRequest, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let now = find(&tx, tenant, id, true).await?;
        if now.status != VisitStatus::Approved {
            return Err(not_movable(now.status));
        }
        if now.entered_at.is_some() {
            return Ok((now, false));
        }
        tx.execute(
            "UPDATE visitor_requests SET entered_at = $2 WHERE id = $1",
            &[&id.0, &at],
        )
        .await
        .map_err(pg)?;
        let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), at);
        insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
        let entered = find(&tx, tenant, id, false).await?;
        tx.commit().await.map_err(pg)?;
        Ok((entered, true))
    }

    async fn list_visitor_requests(
        &self,
        tenant: TenantId,
        filter: VisitorFilter,
        page: PageReq<VisitorRequestId>,
    ) -> StoreResult<Page<VisitorRequest, VisitorRequestId>> {
        let c = self.client().await?;
        let after = page.after.map(|a| a.0).unwrap_or(Uuid::nil());
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM {FROM} WHERE r.tenant_id = $1 AND r.id > $2 \
                     AND ($3::uuid IS NULL OR r.host_id = $3) \
                     AND ($4::text IS NULL OR r.status = $4) \
                     AND ($5::timestamptz IS NULL OR r.starts_at >= $5) \
                     AND ($6::timestamptz IS NULL OR r.starts_at < $6) \
                     ORDER BY r.id LIMIT $7"
                ),
                &[
                    &tenant.0,
                    &after,
                    &filter.host.map(|h| h.0),
                    &filter.status.map(|s| s.as_str()),
                    &filter.from,
                    &filter.to,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let requests = rows
            .iter()
            .map(request_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(requests, page.limit, |r| r.id))
    }

    async fn count_visitor_requests(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<VisitorCounts> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT status, count(*), count(entered_at) FROM visitor_requests \
                 WHERE tenant_id = $1 AND starts_at >= $2 AND starts_at < $3 GROUP BY status",
                &[&tenant.0, &from, &to],
            )
            .await
            .map_err(pg)?;
        let mut counts = VisitorCounts::default();
        for r in &rows {
            counts.add(
                enum_col(r, 0, VisitStatus::parse)?,
                r.get::<_, i64>(1).max(0) as u64,
                r.get::<_, i64>(2).max(0) as u64,
            );
        }
        Ok(counts)
    }
}
