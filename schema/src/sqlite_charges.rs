//! Online top-ups' orders on SQLite. The one writer ends a charge and reads it back in one
//! step, so two ends at once leave it as the first left it.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::charge_store::{Charge, ChargeEnd, ChargeFilter, ChargeStatus, ChargeStore};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::{Page, PageReq};
use crate::money::Money;
use crate::sqlite::{db, ms, opt_uuid_col, paginate, parse_enum, ts, uuid_col, SqliteStore};

const COLS: &str = "id, tenant_id, user_id, amount, provider, status, created_at, expires_at, \
                    provider_tx, topup_id, settled_at";

fn charge_row(r: &Row) -> rusqlite::Result<Charge> {
    Ok(Charge {
        id: ChargeId(uuid_col(r, 0)?),
        tenant_id: TenantId(uuid_col(r, 1)?),
        user_id: UserId(uuid_col(r, 2)?),
        amount: Money(r.get(3)?),
        provider: r.get(4)?,
        status: parse_enum(r, 5, ChargeStatus::parse)?,
        created_at: ts(r.get(6)?),
        expires_at: ts(r.get(7)?),
        transaction: r.get(8)?,
        topup_id: opt_uuid_col(r, 9)?,
        settled_at: r.get::<_, Option<i64>>(10)?.map(ts),
    })
}

fn get(c: &Connection, tenant: TenantId, id: ChargeId) -> StoreResult<Charge> {
    c.prepare_cached(&format!(
        "SELECT {COLS} FROM charges WHERE tenant_id = ? AND id = ?"
    ))
    .and_then(|mut st| {
        st.query_row(params![tenant.to_string(), id.to_string()], charge_row)
            .optional()
    })
    .map_err(db)?
    .ok_or(StoreError::NotFound)
}

#[async_trait]
impl ChargeStore for SqliteStore {
    async fn create_charge(&self, ch: Charge) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO charges ({COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            ))
            .and_then(|mut st| {
                st.execute(params![
                    ch.id.to_string(),
                    ch.tenant_id.to_string(),
                    ch.user_id.to_string(),
                    ch.amount.0,
                    ch.provider,
                    ch.status.as_str(),
                    ms(ch.created_at),
                    ms(ch.expires_at),
                    ch.transaction,
                    ch.topup_id.map(|t| t.to_string()),
                    ch.settled_at.map(ms),
                ])
            })
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_charge(&self, tenant: TenantId, id: ChargeId) -> StoreResult<Charge> {
        self.read(move |c| get(c, tenant, id)).await
    }

    async fn list_charges(
        &self,
        tenant: TenantId,
        filter: ChargeFilter,
        page: PageReq<ChargeId>,
    ) -> StoreResult<Page<Charge, ChargeId>> {
        self.read(move |c| {
            let after = page.after.map(|a| a.to_string()).unwrap_or_default();
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM charges WHERE tenant_id = ?1 AND id > ?2 \
                     AND (?3 IS NULL OR user_id = ?3) AND (?4 IS NULL OR status = ?4) \
                     AND (?5 IS NULL OR created_at >= ?5) AND (?6 IS NULL OR created_at < ?6) \
                     ORDER BY id LIMIT ?7"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![
                            tenant.to_string(),
                            after,
                            filter.user.map(|u| u.to_string()),
                            filter.status.map(ChargeStatus::as_str),
                            filter.from.map(ms),
                            filter.to.map(ms),
                            i64::from(page.limit) + 1,
                        ],
                        charge_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |c| c.id))
        })
        .await
    }

    async fn pending_charges(&self, before: Timestamp, limit: u32) -> StoreResult<Vec<Charge>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLS} FROM charges WHERE status = 'pending' AND created_at < ? \
                 ORDER BY created_at LIMIT ?"
            ))
            .and_then(|mut st| {
                st.query_map(params![ms(before), i64::from(limit)], charge_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db)
        })
        .await
    }

    async fn end_charge(
        &self,
        tenant: TenantId,
        id: ChargeId,
        end: ChargeEnd,
    ) -> StoreResult<Charge> {
        self.write(move |c| {
            let (status, tx, topup, at) = end.columns();
            c.prepare_cached(
                "UPDATE charges SET status = ?3, provider_tx = ?4, topup_id = ?5, settled_at = ?6 \
                 WHERE tenant_id = ?1 AND id = ?2 AND status = 'pending'",
            )
            .and_then(|mut st| {
                st.execute(params![
                    tenant.to_string(),
                    id.to_string(),
                    status.as_str(),
                    tx,
                    topup.map(|t| t.to_string()),
                    ms(at),
                ])
            })
            .map_err(db)?;
            get(c, tenant, id)
        })
        .await
    }
}
