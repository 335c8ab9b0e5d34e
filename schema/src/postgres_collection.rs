//! The canteen collection code half of the PostgreSQL engine. Two terminals given one
//! code meet at the unique constraint (`code_taken`).

use async_trait::async_trait;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::collection_store::{CollectionStore, VisitFilter, VisitWrite};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::{Collection, CollectionMode, Page, PageReq, Visit};
use crate::postgres::{enum_col, pg, PgStore};
use crate::postgres_money::insert_outbox;
use crate::sqlite::paginate;
use crate::wallet::{OutboxEvent, OutboxPage, Terminal};

pub(crate) const TERMINAL_COLS: &str =
    "id, merchant_id, name, created_at, collection_code, collection_mode";

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
            Some(r) => Ok(Some((TenantId(r.get(6)), terminal_from_row(&r)?))),
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
        let tx = c.transaction().await.map_err(pg)?;
        // Serialises the visits at this code (not its payments: a payment's foreign key
        // takes KEY SHARE, which NO KEY UPDATE leaves alone), so that of two taps at once
        // the second finds the first.
        let found = tx
            .query_opt(
                "SELECT 1 FROM terminals WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE",
                &[&tenant.0, &visit.terminal_id.0],
            )
            .await
            .map_err(pg)?;
        if found.is_none() {
            return Err(StoreError::NotFound);
        }
        let repeat = tx
            .query_opt(
                &format!(
                    "SELECT {VISIT_COLS} FROM collection_visits v \
                     LEFT JOIN users u ON u.id = v.user_id \
                     WHERE v.tenant_id = $1 AND v.user_id = $2 AND v.terminal_id = $3 \
                     AND v.at >= $4 ORDER BY v.at DESC LIMIT 1"
                ),
                &[
                    &tenant.0,
                    &visit.user_id.0,
                    &visit.terminal_id.0,
                    &repeat_since,
                ],
            )
            .await
            .map_err(pg)?;
        if let Some(first) = repeat {
            return Ok(VisitWrite::Repeat(visit_from_row(&first)));
        }
        tx.execute(
            "INSERT INTO collection_visits (id, tenant_id, terminal_id, merchant_id, user_id, at) \
             VALUES ($1,$2,$3,$4,$5,$6)",
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
