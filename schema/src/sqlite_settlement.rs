//! The settlement-entities half of the SQLite engine. The single writer makes each check
//! (the entity is the tenant's and unused, the merchant is the tenant's) and its change one
//! step.

use async_trait::async_trait;
use rusqlite::{params, Connection, Row};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::Audit;
use crate::settlement_store::{
    no_such_entity, settlement_entity_in_use, settlement_entity_name_taken, MerchantSettlement,
    SettlementEntity, SettlementStore,
};
use crate::sqlite::{change_one, check_name_free, db, insert_audit, ms, ts, uuid_col, SqliteStore};

const COLS: &str =
    "id, name, legal_name, provider_sub_merchant, bank_account, created_at, updated_at";

fn entity_row(r: &Row) -> rusqlite::Result<SettlementEntity> {
    Ok(SettlementEntity {
        id: SettlementEntityId(uuid_col(r, 0)?),
        name: r.get(1)?,
        legal_name: r.get(2)?,
        provider_sub_merchant: r.get(3)?,
        bank_account: r.get(4)?,
        created_at: ts(r.get(5)?),
        updated_at: ts(r.get(6)?),
    })
}

fn entry_row(r: &Row) -> rusqlite::Result<MerchantSettlement> {
    let bad = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let day: String = r.get(1)?;
    let entity: Option<String> = r.get(2)?;
    let entity = entity
        .map(|e| uuid::Uuid::parse_str(&e).map(SettlementEntityId))
        .transpose()
        .map_err(|e| bad(2, Box::new(e)))?;
    Ok(MerchantSettlement {
        merchant_id: MerchantId(uuid_col(r, 0)?),
        effective_from: day.parse().map_err(|e| bad(1, Box::new(e)))?,
        assignment: MerchantSettlement::assignment_of(entity, r.get(3)?),
        set_at: ts(r.get(4)?),
    })
}

fn exists(c: &Connection, sql: &str, a: String, b: String) -> StoreResult<bool> {
    c.query_row(sql, [a, b], |r| r.get(0)).map_err(db)
}

#[async_trait]
impl SettlementStore for SqliteStore {
    async fn create_settlement_entity(
        &self,
        tenant: TenantId,
        e: SettlementEntity,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "settlement_entities",
                tenant,
                e.id.0,
                &e.name,
                settlement_entity_name_taken,
            )?;
            change_one(
                c,
                &format!(
                    "INSERT INTO settlement_entities (tenant_id, {COLS}) VALUES (?,?,?,?,?,?,?,?)"
                ),
                params![
                    tenant.to_string(),
                    e.id.to_string(),
                    e.name,
                    e.legal_name,
                    e.provider_sub_merchant,
                    e.bank_account,
                    ms(e.created_at),
                    ms(e.updated_at),
                ],
                &audit,
            )
        })
        .await
    }

    async fn list_settlement_entities(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Vec<SettlementEntity>> {
        self.tenant_rows_by_name(COLS, "settlement_entities", tenant, entity_row, Ok)
            .await
    }

    async fn get_settlement_entity(
        &self,
        tenant: TenantId,
        id: SettlementEntityId,
    ) -> StoreResult<SettlementEntity> {
        self.tenant_row(COLS, "settlement_entities", tenant, id.0, entity_row, Ok)
            .await
    }

    async fn update_settlement_entity(
        &self,
        tenant: TenantId,
        e: SettlementEntity,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "settlement_entities",
                tenant,
                e.id.0,
                &e.name,
                settlement_entity_name_taken,
            )?;
            change_one(
                c,
                "UPDATE settlement_entities SET name = ?, legal_name = ?, \
                 provider_sub_merchant = ?, bank_account = ?, updated_at = ? \
                 WHERE tenant_id = ? AND id = ?",
                params![
                    e.name,
                    e.legal_name,
                    e.provider_sub_merchant,
                    e.bank_account,
                    ms(e.updated_at),
                    tenant.to_string(),
                    e.id.to_string(),
                ],
                &audit,
            )
        })
        .await
    }

    async fn delete_settlement_entity(
        &self,
        tenant: TenantId,
        id: SettlementEntityId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            if exists(
                c,
                "SELECT EXISTS (SELECT 1 FROM merchant_settlements WHERE tenant_id = ? \
                 AND entity_id = ?)",
                tenant.to_string(),
                id.to_string(),
            )? {
                return Err(settlement_entity_in_use());
            }
            change_one(
                c,
                "DELETE FROM settlement_entities WHERE tenant_id = ? AND id = ?",
                params![tenant.to_string(), id.to_string()],
                &audit,
            )
        })
        .await
    }

    async fn set_merchant_settlement(
        &self,
        tenant: TenantId,
        entry: MerchantSettlement,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            if !exists(
                c,
                "SELECT EXISTS (SELECT 1 FROM merchants WHERE tenant_id = ? AND id = ?)",
                tenant.to_string(),
                entry.merchant_id.to_string(),
            )? {
                return Err(StoreError::NotFound);
            }
            let (entity, to_own) = entry.columns();
            if let Some(entity) = entity {
                if !exists(
                    c,
                    "SELECT EXISTS (SELECT 1 FROM settlement_entities WHERE tenant_id = ? \
                     AND id = ?)",
                    tenant.to_string(),
                    entity.to_string(),
                )? {
                    return Err(no_such_entity());
                }
            }
            c.execute(
                "INSERT INTO merchant_settlements (merchant_id, effective_from, tenant_id, \
                 entity_id, to_own, set_at) VALUES (?,?,?,?,?,?) \
                 ON CONFLICT (merchant_id, effective_from) DO UPDATE \
                 SET entity_id = excluded.entity_id, to_own = excluded.to_own, \
                 set_at = excluded.set_at",
                params![
                    entry.merchant_id.to_string(),
                    entry.effective_from.to_string(),
                    tenant.to_string(),
                    entity.map(|e| e.to_string()),
                    to_own,
                    ms(entry.set_at),
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn merchant_settlements(&self, tenant: TenantId) -> StoreResult<Vec<MerchantSettlement>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT merchant_id, effective_from, entity_id, to_own, set_at \
                 FROM merchant_settlements \
                 WHERE tenant_id = ? ORDER BY merchant_id, effective_from",
            )
            .and_then(|mut st| {
                st.query_map([tenant.to_string()], entry_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db)
        })
        .await
    }
}
