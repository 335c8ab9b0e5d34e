//! The canteen collection code half of the PostgreSQL engine. Two terminals given one
//! code meet at the unique constraint (`code_taken`).

use async_trait::async_trait;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::collection_store::{CollectionStore, VisitFilter, VisitWrite};
use crate::error::StoreResult;
use crate::ids::*;
use crate::model::{Collection, CollectionMode, Page, PageReq, Visit};
use crate::postgres::{enum_col, pg, PgStore};
use crate::postgres_money::insert_outbox;
use crate::sqlite::paginate;
use crate::wallet::{OutboxEvent, OutboxPage, Terminal};

pub(crate) const TERMINAL_COLS: &str =
    "id, merchant_id, name, created_at, collection_code, collection_mode, retired_at";

pub(crate) fn terminal_from_row(r: &Row) -> StoreResult<Terminal> {
    let code: Option<String> = r.get(4);
    let collection = match code {
        Some(code) => Some(Collection {
            code,
            mode: enum_col(r, 5, CollectionMode::parse)?,
        }),
        None => None,
    };
    Ok(Terminal {
        id: TerminalId(r.get(0)),
        merchant_id: MerchantId(r.get(1)),
        name: r.get(2),
        created_at: r.get(3),
        collection,
        retired_at: r.get(6),
    })
}

const VISIT_COLS: &str = "v.id, v.terminal_id, v.merchant_id, v.user_id, u.name, u.number, v.at";

fn visit_from_row(r: &Row) -> Visit {
    Visit {
        id: VisitId(r.get(0)),
        terminal_id: TerminalId(r.get(1)),
        merchant_id: MerchantId(r.get(2)),
        user_id: UserId(r.get(3)),
        name: r.get(4),
        number: r.get(5),
        at: r.get(6),
    }
}

/// The advisory lock (two-key form, a key space of its own) of one person's visits at one
/// code: the class says "a visit", the key folds both ids into 32 bits, the same on every
/// node. Two pairs that fold alike only wait for each other now and then.
fn visit_lock(terminal: TerminalId, user: UserId) -> (i32, i32) {
    const VISIT_CLASS: i32 = 0x5649_5354; // "VIST"
    let fold = |u: &Uuid| {
        u.as_bytes().chunks_exact(4).fold(0u32, |acc, w| {
            acc.rotate_left(5) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]])
        })
    };
    let key = fold(&terminal.0).wrapping_mul(0x9E37_79B9) ^ fold(&user.0);
    (VISIT_CLASS, key as i32)
}

fn uuids(merchants: &[MerchantId]) -> Vec<Uuid> {
    merchants.iter().map(|m| m.0).collect()
}

#[async_trait]
impl CollectionStore for PgStore {
    async fn list_terminals(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
    ) -> StoreResult<Vec<Terminal>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {TERMINAL_COLS} FROM terminals WHERE tenant_id = $1 \
                 AND merchant_id = ANY($2) ORDER BY created_at, id"
            ),
            &[&tenant.0, &uuids(&merchants)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(terminal_from_row)
        .collect()
    }

    async fn terminal_by_code(&self, code: String) -> StoreResult<Option<(TenantId, Terminal)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TERMINAL_COLS}, tenant_id FROM terminals WHERE collection_code = $1"
            ))
            .await
            .map_err(pg)?;
        match c.query_opt(&st, &[&code]).await.map_err(pg)? {
            Some(r) => Ok(Some((TenantId(r.get(7)), terminal_from_row(&r)?))),
            None => Ok(None),
        }
    }

    async fn record_visit(
        &self,
        tenant: TenantId,
        visit: Visit,
        event: OutboxEvent,
        repeat_since: Timestamp,
    ) -> StoreResult<VisitWrite> {
        let mut c = self.client().await?;
        let repeat_sql = format!(
            "SELECT {VISIT_COLS} FROM collection_visits v \
             LEFT JOIN users u ON u.id = v.user_id \
             WHERE v.tenant_id = $1 AND v.user_id = $2 AND v.terminal_id = $3 \
             AND v.at >= $4 ORDER BY v.at DESC LIMIT 1"
        );
        let (lock, repeat, insert) = tokio::try_join!(
            c.prepare_cached("SELECT pg_advisory_xact_lock($1, $2)"),
            c.prepare_cached(&repeat_sql),
            c.prepare_cached(
                "INSERT INTO collection_visits (id, tenant_id, terminal_id, merchant_id, \
                 user_id, at) VALUES ($1,$2,$3,$4,$5,$6)"
            ),
        )
        .map_err(pg)?;
        let tx = c.transaction().await.map_err(pg)?;
        // Serialises this person's visits at this code, and nobody else's, so that of two
        // taps at once the second finds the first while a queue of different people goes
        // through side by side. A statement of its own: the check below must see what the
        // transaction waited for.
        let (class, key) = visit_lock(visit.terminal_id, visit.user_id);
        tx.execute(&lock, &[&class, &key]).await.map_err(pg)?;
        let first = tx
            .query_opt(
                &repeat,
                &[
                    &tenant.0,
                    &visit.user_id.0,
                    &visit.terminal_id.0,
                    &repeat_since,
                ],
            )
            .await
            .map_err(pg)?;
        if let Some(first) = first {
            return Ok(VisitWrite::Repeat(visit_from_row(&first)));
        }
        tx.execute(
            &insert,
            &[
                &visit.id.0,
                &tenant.0,
                &visit.terminal_id.0,
                &visit.merchant_id.0,
                &visit.user_id.0,
                &visit.at,
            ],
        )
        .await
        .map_err(pg)?;
        let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), visit.at);
        insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(VisitWrite::Created)
    }

    async fn list_visits(
        &self,
        tenant: TenantId,
        filter: VisitFilter,
        page: PageReq<VisitId>,
    ) -> StoreResult<Page<Visit, VisitId>> {
        let c = self.client().await?;
        let after = page.after.map(|a| a.0).unwrap_or(Uuid::nil());
        let merchants = filter.merchants.as_deref().map(uuids);
        let rows = c
            .query(
                &format!(
                    "SELECT {VISIT_COLS} FROM collection_visits v \
                     LEFT JOIN users u ON u.id = v.user_id \
                     WHERE v.tenant_id = $1 AND v.id > $2 \
                     AND ($3::uuid[] IS NULL OR v.merchant_id = ANY($3)) \
                     AND ($4::uuid IS NULL OR v.terminal_id = $4) \
                     AND ($5::uuid IS NULL OR v.user_id = $5) \
                     AND ($6::timestamptz IS NULL OR v.at >= $6) \
                     AND ($7::timestamptz IS NULL OR v.at < $7) \
                     ORDER BY v.id LIMIT $8"
                ),
                &[
                    &tenant.0,
                    &after,
                    &merchants,
                    &filter.terminal.map(|t| t.0),
                    &filter.user.map(|u| u.0),
                    &filter.from,
                    &filter.to,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let visits = rows.iter().map(visit_from_row).collect();
        Ok(paginate(visits, page.limit, |v| v.id))
    }

    async fn count_visits(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<(TerminalId, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT terminal_id, count(*) FROM collection_visits \
                 WHERE tenant_id = $1 AND merchant_id = ANY($2) AND at >= $3 AND at < $4 \
                 GROUP BY terminal_id ORDER BY terminal_id",
                &[&tenant.0, &uuids(&merchants), &from, &to],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (TerminalId(r.get(0)), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }
}
