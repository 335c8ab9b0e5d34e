//! The settlement-entities half of the PostgreSQL engine. Names meet at the unique
//! constraint (`settlement_entity_name_taken`). A schedule entry shares the entity's row
//! lock and a deletion takes it whole, so an entity deleted while a merchant is being
//! moved to it is either kept, named by the entry, or gone with no entry naming it.

use async_trait::async_trait;
use tokio_postgres::Row;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::Audit;
use crate::postgres::{insert_audit, pg, PgStore};
use crate::settlement_store::{
    no_such_entity, settlement_entity_in_use, MerchantSettlement, SettlementEntity, SettlementStore,
};

const COLS: &str =
    "id, name, legal_name, provider_sub_merchant, bank_account, created_at, updated_at";

fn entity_from_row(r: &Row) -> StoreResult<SettlementEntity> {
    Ok(SettlementEntity {
        id: SettlementEntityId(r.try_get(0).map_err(pg)?),
        name: r.try_get(1).map_err(pg)?,
        legal_name: r.try_get(2).map_err(pg)?,
        provider_sub_merchant: r.try_get(3).map_err(pg)?,
        bank_account: r.try_get(4).map_err(pg)?,
        created_at: r.try_get(5).map_err(pg)?,
        updated_at: r.try_get(6).map_err(pg)?,
    })
}

fn entry_from_row(r: &Row) -> StoreResult<MerchantSettlement> {
    let entity = r
        .try_get::<_, Option<uuid::Uuid>>(2)
        .map_err(pg)?
        .map(SettlementEntityId);
    Ok(MerchantSettlement {
        merchant_id: MerchantId(r.try_get(0).map_err(pg)?),
        effective_from: r.try_get(1).map_err(pg)?,
        assignment: MerchantSettlement::assignment_of(entity, r.try_get(3).map_err(pg)?),
        set_at: r.try_get(4).map_err(pg)?,
    })
}

#[async_trait]
impl SettlementStore for PgStore {
    async fn create_settlement_entity(
        &self,
        tenant: TenantId,
        e: SettlementEntity,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            &format!(
                "INSERT INTO settlement_entities (tenant_id, {COLS}) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
            ),
            &[
                &tenant.0,
                &e.id.0,
                &e.name,
                &e.legal_name,
                &e.provider_sub_merchant,
                &e.bank_account,
                &e.created_at,
                &e.updated_at,
            ],
            &audit,
        )
        .await
    }

    async fn list_settlement_entities(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Vec<SettlementEntity>> {
        self.tenant_rows_by_name(COLS, "settlement_entities", tenant, entity_from_row)
            .await
    }

    async fn get_settlement_entity(
        &self,
        tenant: TenantId,
        id: SettlementEntityId,
    ) -> StoreResult<SettlementEntity> {
        self.tenant_row(COLS, "settlement_entities", tenant, id.0, entity_from_row)
            .await
    }

    async fn update_settlement_entity(
        &self,
        tenant: TenantId,
        e: SettlementEntity,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "UPDATE settlement_entities SET name = $3, legal_name = $4, \
             provider_sub_merchant = $5, bank_account = $6, updated_at = $7 \
             WHERE tenant_id = $1 AND id = $2",
            &[
                &tenant.0,
                &e.id.0,
                &e.name,
                &e.legal_name,
                &e.provider_sub_merchant,
                &e.bank_account,
                &e.updated_at,
            ],
            &audit,
        )
        .await
    }

    async fn delete_settlement_entity(
        &self,
        tenant: TenantId,
        id: SettlementEntityId,
        audit: Audit,
    ) -> StoreResult<()> {
        // Waits for any schedule entry being written with it (they share its lock).
        self.delete_unheld(
            "settlement_entities",
            tenant,
            id.0,
            &[(
                "SELECT EXISTS (SELECT 1 FROM merchant_settlements WHERE entity_id = $1)",
                "",
            )],
            |_| settlement_entity_in_use(),
            &audit,
        )
        .await
    }

    async fn set_merchant_settlement(
        &self,
        tenant: TenantId,
        entry: MerchantSettlement,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.query_opt(
            "SELECT 1 FROM merchants WHERE tenant_id = $1 AND id = $2",
            &[&tenant.0, &entry.merchant_id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
        let (entity, to_own) = entry.columns();
        if let Some(entity) = entity {
            // Shares the entity's lock with other entries; a deletion waits for it, or it
            // for the deletion, and then finds no row.
            tx.query_opt(
                "SELECT 1 FROM settlement_entities WHERE tenant_id = $1 AND id = $2 FOR SHARE",
                &[&tenant.0, &entity.0],
            )
            .await
            .map_err(pg)?
            .ok_or_else(no_such_entity)?;
        }
        tx.execute(
            "INSERT INTO merchant_settlements (merchant_id, effective_from, tenant_id, \
             entity_id, to_own, set_at) VALUES ($1,$2,$3,$4,$5,$6) \
             ON CONFLICT (merchant_id, effective_from) DO UPDATE \
             SET entity_id = excluded.entity_id, to_own = excluded.to_own, \
             set_at = excluded.set_at",
            &[
                &entry.merchant_id.0,
                &entry.effective_from,
                &tenant.0,
                &entity.map(|e| e.0),
                &to_own,
                &entry.set_at,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn merchant_settlements(&self, tenant: TenantId) -> StoreResult<Vec<MerchantSettlement>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT merchant_id, effective_from, entity_id, to_own, set_at \
                 FROM merchant_settlements \
                 WHERE tenant_id = $1 ORDER BY merchant_id, effective_from",
            )
            .await
            .map_err(pg)?;
        c.query(&st, &[&tenant.0])
            .await
            .map_err(pg)?
            .iter()
            .map(entry_from_row)
            .collect()
    }
}
