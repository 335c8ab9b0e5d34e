//! The visitor half of the SQLite engine. The single writer makes each check of a
//! request's status and its move one step.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::sqlite::{
    check_refs, db, insert_audit, ms, paginate, parse_enum, ts, uuid_col, SqliteStore,
};
use crate::sqlite_money::insert_outbox;
use crate::store::{from_json_text, to_json_text};
use crate::visitor_store::{
    not_movable, NewVisitorRequest, VisitorCounts, VisitorFilter, VisitorStore,
};
use crate::wallet::{OutboxEvent, OutboxPage};

const COLS: &str = "r.id, r.host_id, u.name, r.name, r.phone, r.company, r.purpose, r.plate, \
     r.id_last4, r.starts_at, r.ends_at, r.status, r.reason, r.decided_at, r.entered_at, \
     r.created_at, r.tenant_id";
const FROM: &str = "visitor_requests r LEFT JOIN users u ON u.id = r.host_id";

fn request_row(r: &Row) -> rusqlite::Result<VisitorRequest> {
    Ok(VisitorRequest {
        id: VisitorRequestId(uuid_col(r, 0)?),
        host_id: UserId(uuid_col(r, 1)?),
        host_name: r.get(2)?,
        name: r.get(3)?,
        phone: r.get(4)?,
        company: r.get(5)?,
        purpose: r.get(6)?,
        plate: r.get(7)?,
        id_last4: r.get(8)?,
        starts_at: ts(r.get(9)?),
        ends_at: ts(r.get(10)?),
        status: parse_enum(r, 11, VisitStatus::parse)?,
        reason: r.get(12)?,
        decided_at: r.get::<_, Option<i64>>(13)?.map(ts),
        entered_at: r.get::<_, Option<i64>>(14)?.map(ts),
        created_at: ts(r.get(15)?),
    })
}

fn find(c: &Connection, tenant: TenantId, id: VisitorRequestId) -> StoreResult<VisitorRequest> {
    c.prepare_cached(&format!(
        "SELECT {COLS} FROM {FROM} WHERE r.tenant_id = ? AND r.id = ?"
    ))
    .and_then(|mut st| {
        st.query_row([tenant.to_string(), id.to_string()], request_row)
            .optional()
    })
    .map_err(db)?
    .ok_or(StoreError::NotFound)
}

fn outbox(c: &Connection, tenant: TenantId, event: &OutboxEvent, at: Timestamp) -> StoreResult<()> {
    let page = OutboxPage::of_one(tenant, std::slice::from_ref(event), at);
    insert_outbox(c, page.as_ref()).map_err(db)
}

#[async_trait]
impl VisitorStore for SqliteStore {
    async fn visitor_form(&self, tenant: TenantId) -> StoreResult<VisitorForm> {
        self.read(move |c| {
            let form: Option<String> = c
                .query_row(
                    "SELECT form FROM visitor_forms WHERE tenant_id = ?",
                    [tenant.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            form.map_or(Ok(VisitorForm::default()), |f| from_json_text(&f))
        })
        .await
    }

    async fn put_visitor_form(
        &self,
        tenant: TenantId,
        form: VisitorForm,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO visitor_forms (tenant_id, form, updated_at) VALUES (?,?,?) \
                 ON CONFLICT (tenant_id) DO UPDATE SET form = excluded.form, \
                 updated_at = excluded.updated_at",
                params![tenant.to_string(), to_json_text(&form)?, ms(at)],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn create_visitor_request(
        &self,
        tenant: TenantId,
        new: NewVisitorRequest,
        event: OutboxEvent,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let r = &new.request;
            check_refs(c, "users", tenant, &[r.host_id.0], "host")?;
            c.execute(
                "INSERT INTO visitor_requests (id, tenant_id, host_id, pass_hash, name, phone, \
                 company, purpose, plate, id_hash, id_last4, starts_at, ends_at, status, \
                 created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                params![
                    r.id.to_string(),
                    tenant.to_string(),
                    r.host_id.to_string(),
                    &new.pass_hash[..],
                    r.name,
                    r.phone,
                    r.company,
                    r.purpose,
                    r.plate,
                    new.id_hash.as_ref().map(|h| &h[..]),
                    r.id_last4,
                    ms(r.starts_at),
                    ms(r.ends_at),
                    r.status.as_str(),
                    ms(r.created_at),
                ],
            )
            .map_err(db)?;
            outbox(c, tenant, &event, r.created_at)
        })
        .await
    }

    async fn get_visitor_request(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
    ) -> StoreResult<VisitorRequest> {
        self.read(move |c| find(c, tenant, id)).await
    }

    async fn visitor_request_by_pass(
        &self,
        pass_hash: [u8; 32],
    ) -> StoreResult<Option<(TenantId, VisitorRequest)>> {
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {COLS} FROM {FROM} WHERE r.pass_hash = ?"))
                .and_then(|mut st| {
                    st.query_row([&pass_hash[..]], |r| {
                        Ok((TenantId(uuid_col(r, 16)?), request_row(r)?))
                    })
                    .optional()
                })
                .map_err(db)
        })
        .await
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
        self.write(move |c| {
            let now = find(c, tenant, id)?;
            if host.is_some_and(|h| h != now.host_id) {
                return Err(StoreError::NotFound);
            }
            if !from.contains(&now.status) {
                return Err(not_movable(now.status));
            }
            c.execute(
                "UPDATE visitor_requests SET status = ?, reason = ?, decided_at = ? WHERE id = ?",
                params![to.as_str(), reason, ms(at), id.to_string()],
            )
            .map_err(db)?;
            find(c, tenant, id)
        })
        .await
    }

    async fn enter_visitor(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
        at: Timestamp,
        event: OutboxEvent,
    ) -> StoreResult<(VisitorRequest, bool)> {
        self.write(move |c| {
            let now = find(c, tenant, id)?;
            if now.status != VisitStatus::Approved {
                return Err(not_movable(now.status));
            }
            if now.entered_at.is_some() {
                return Ok((now, false));
            }
            c.execute(
                "UPDATE visitor_requests SET entered_at = ? WHERE id = ?",
                params![ms(at), id.to_string()],
            )
            .map_err(db)?;
            outbox(c, tenant, &event, at)?;
            Ok((find(c, tenant, id)?, true))
        })
        .await
    }

    async fn list_visitor_requests(
        &self,
        tenant: TenantId,
        filter: VisitorFilter,
        page: PageReq<VisitorRequestId>,
    ) -> StoreResult<Page<VisitorRequest, VisitorRequestId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {COLS} FROM {FROM} WHERE r.tenant_id = ?");
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            if let Some(after) = page.after {
                sql.push_str(" AND r.id > ?");
                values.push(after.to_string().into());
            }
            if let Some(h) = filter.host {
                sql.push_str(" AND r.host_id = ?");
                values.push(h.to_string().into());
            }
            if let Some(s) = filter.status {
                sql.push_str(" AND r.status = ?");
                values.push(s.as_str().to_string().into());
            }
            if let Some(t) = filter.from {
                sql.push_str(" AND r.starts_at >= ?");
                values.push(ms(t).into());
            }
            if let Some(t) = filter.to {
                sql.push_str(" AND r.starts_at < ?");
                values.push(ms(t).into());
            }
            sql.push_str(" ORDER BY r.id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), request_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |r| r.id))
        })
        .await
    }

    async fn count_visitor_requests(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<VisitorCounts> {
        self.read(move |c| {
            let mut counts = VisitorCounts::default();
            let mut st = c
                .prepare(
                    "SELECT status, count(*), count(entered_at) FROM visitor_requests \
                     WHERE tenant_id = ? AND starts_at >= ? AND starts_at < ? GROUP BY status",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![tenant.to_string(), ms(from), ms(to)], |r| {
                    Ok((
                        parse_enum(r, 0, VisitStatus::parse)?,
                        r.get::<_, i64>(1)?.max(0) as u64,
                        r.get::<_, i64>(2)?.max(0) as u64,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (status, n, entered) = row.map_err(db)?;
                counts.add(status, n, entered);
            }
            Ok(counts)
        })
        .await
    }
}
