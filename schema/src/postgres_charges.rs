//! Online top-ups' orders on PostgreSQL. Ending one is a single conditional update, so two
//! nodes ending the same charge at once leave it as the first left it.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::charge_store::{Charge, ChargeEnd, ChargeFilter, ChargeStatus, ChargeStore};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::{Page, PageReq};
use crate::money::Money;
use crate::postgres::{enum_col, pg, PgStore};
use crate::sqlite::paginate;

const COLS: &str = "id, tenant_id, user_id, amount, provider, status, created_at, expires_at, \
                    provider_tx, topup_id, settled_at";

fn charge_from_row(r: &Row) -> StoreResult<Charge> {
    Ok(Charge {
        id: ChargeId(r.get(0)),
        tenant_id: TenantId(r.get(1)),
        user_id: UserId(r.get(2)),
        amount: Money(r.get(3)),
        provider: r.get(4),
        status: enum_col(r, 5, ChargeStatus::parse)?,
        created_at: r.get(6),
        expires_at: r.get(7),
        transaction: r.get(8),
        topup_id: r.get(9),
        settled_at: r.get(10),
    })
}

async fn get<C: GenericClient>(c: &C, tenant: TenantId, id: ChargeId) -> StoreResult<Charge> {
    let row = c
        .query_opt(
            &format!("SELECT {COLS} FROM charges WHERE tenant_id = $1 AND id = $2"),
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    charge_from_row(&row)
}

#[async_trait]
impl ChargeStore for PgStore {
    async fn create_charge(&self, ch: Charge) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            &format!("INSERT INTO charges ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"),
            &[
                &ch.id.0,
                &ch.tenant_id.0,
                &ch.user_id.0,
                &ch.amount.0,
                &ch.provider,
                &ch.status.as_str(),
                &ch.created_at,
                &ch.expires_at,
                &ch.transaction,
                &ch.topup_id,
                &ch.settled_at,
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn get_charge(&self, tenant: TenantId, id: ChargeId) -> StoreResult<Charge> {
        get(&self.client().await?, tenant, id).await
    }

    async fn list_charges(
        &self,
        tenant: TenantId,
        filter: ChargeFilter,
        page: PageReq<ChargeId>,
    ) -> StoreResult<Page<Charge, ChargeId>> {
        let c = self.client().await?;
        let after = page.after.map(|a| a.0).unwrap_or(Uuid::nil());
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM charges WHERE tenant_id = $1 AND id > $2 \
                     AND ($3::uuid IS NULL OR user_id = $3) \
                     AND ($4::text IS NULL OR status = $4) \
                     AND ($5::timestamptz IS NULL OR created_at >= $5) \
                     AND ($6::timestamptz IS NULL OR created_at < $6) \
                     ORDER BY id LIMIT $7"
                ),
                &[
                    &tenant.0,
                    &after,
                    &filter.user.map(|u| u.0),
                    &filter.status.map(ChargeStatus::as_str),
                    &filter.from,
                    &filter.to,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let charges = rows
            .iter()
            .map(charge_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(charges, page.limit, |c| c.id))
    }

    async fn pending_charges(&self, before: Timestamp, limit: u32) -> StoreResult<Vec<Charge>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {COLS} FROM charges WHERE status = 'pending' AND created_at < $1 \
                 ORDER BY created_at LIMIT $2"
            ),
            &[&before, &i64::from(limit)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(charge_from_row)
        .collect()
    }

    async fn end_charge(
        &self,
        tenant: TenantId,
        id: ChargeId,
        end: ChargeEnd,
    ) -> StoreResult<Charge> {
        let c = self.client().await?;
        let (status, tx, topup, at) = end.columns();
        c.execute(
            "UPDATE charges SET status = $3, provider_tx = $4, topup_id = $5, settled_at = $6 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
            &[&tenant.0, &id.0, &status.as_str(), &tx, &topup, &at],
        )
        .await
        .map_err(pg)?;
        // On the same connection: one charge's end never waits for a second one.
        get(&c, tenant, id).await
    }
}
