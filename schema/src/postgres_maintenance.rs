//! The equipment maintenance half of the PostgreSQL engine. Names and codes meet at the
//! unique constraints (`device_type_name_taken`, `code_taken`), records at the unique
//! dedupe key: of two scans of one code at once, the second waits for the first and finds
//! its record.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::maintenance_store::{MaintenanceStore, RecordFilter, RecordWrite};
use crate::model::*;
use crate::postgres::{check_refs, enum_col, insert_audit, pg, PgStore};
use crate::postgres_shuttle::{bind, record_once, set_binding_sql, unbind};
use crate::sqlite::paginate;
use crate::store::{from_json_text, to_json_text};
use crate::wallet::OutboxEvent;

const TYPE_COLS: &str = "id, name, windows, identities, created_at, updated_at";

fn type_from_row(r: &Row) -> StoreResult<DeviceType> {
    Ok(DeviceType {
        id: DeviceTypeId(r.get(0)),
        name: r.get(1),
        windows: from_json_text(&r.get::<_, String>(2))?,
        identities: from_json_text(&r.get::<_, String>(3))?,
        created_at: r.get(4),
        updated_at: r.get(5),
    })
}

const DEVICE_COLS: &str = "id, type_id, name, location, code, bound_at, created_at, updated_at";

fn device_from_row(r: &Row) -> StoreResult<Device> {
    Ok(Device {
        id: DeviceId(r.get(0)),
        type_id: DeviceTypeId(r.get(1)),
        name: r.get(2),
        location: r.get(3),
        code: r.get(4),
        bound_at: r.get(5),
        created_at: r.get(6),
        updated_at: r.get(7),
    })
}

async fn find_device<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    id: DeviceId,
) -> StoreResult<Device> {
    let row = c
        .query_opt(
            &format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND id = $2"),
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    device_from_row(&row)
}

const RECORD_COLS: &str = "m.id, m.device_id, m.type_id, m.user_id, m.method, m.verified_by, \
     m.note, d.name, d.location, t.name, u.name, u.number, m.at";
const RECORD_FROM: &str = "maintenance_records m LEFT JOIN devices d ON d.id = m.device_id \
     LEFT JOIN device_types t ON t.id = m.type_id LEFT JOIN users u ON u.id = m.user_id";

fn record_from_row(r: &Row) -> StoreResult<MaintenanceRecord> {
    Ok(MaintenanceRecord {
        id: MaintenanceId(r.get(0)),
        device_id: DeviceId(r.get(1)),
        type_id: DeviceTypeId(r.get(2)),
        user_id: UserId(r.get(3)),
        method: enum_col(r, 4, MaintenanceMethod::parse)?,
        verified_by: r.get::<_, Option<Uuid>>(5).map(AdminId),
        note: r.get(6),
        device_name: r.get(7),
        location: r.get(8),
        type_name: r.get(9),
        name: r.get(10),
        number: r.get(11),
        at: r.get(12),
    })
}

impl PgStore {
    /// Writes a device (`sql` binds $1 tenant, $2 id, $3 type, $4 name, $5 location, $6
    /// updated, then $7 code and $8 created when it inserts) once its type is known to be
    /// the tenant's.
    async fn write_device(
        &self,
        sql: &str,
        tenant: TenantId,
        d: &Device,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_refs(&tx, "device_types", tenant, &[d.type_id.0], "type_id").await?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &tenant.0,
            &d.id.0,
            &d.type_id.0,
            &d.name,
            &d.location,
            &d.updated_at,
        ];
        if sql.starts_with("INSERT") {
            params.push(&d.code);
            params.push(&d.created_at);
        }
        if tx.execute(sql, &params).await.map_err(pg)? == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, audit).await?;
        tx.commit().await.map_err(pg)
    }
}

#[async_trait]
impl MaintenanceStore for PgStore {
    async fn create_device_type(
        &self,
        tenant: TenantId,
        t: DeviceType,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "INSERT INTO device_types (tenant_id, id, name, windows, identities, updated_at, \
             created_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[
                &tenant.0,
                &t.id.0,
                &t.name,
                &to_json_text(&t.windows)?,
                &to_json_text(&t.identities)?,
                &t.updated_at,
                &t.created_at,
            ],
            &audit,
        )
        .await
    }

    async fn get_device_type(&self, tenant: TenantId, id: DeviceTypeId) -> StoreResult<DeviceType> {
        self.tenant_row(TYPE_COLS, "device_types", tenant, id.0, type_from_row)
            .await
    }

    async fn list_device_types(&self, tenant: TenantId) -> StoreResult<Vec<DeviceType>> {
        self.tenant_rows_by_name(TYPE_COLS, "device_types", tenant, type_from_row)
            .await
    }

    async fn update_device_type(
        &self,
        tenant: TenantId,
        t: DeviceType,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "UPDATE device_types SET name = $3, windows = $4, identities = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND id = $2",
            &[
                &tenant.0,
                &t.id.0,
                &t.name,
                &to_json_text(&t.windows)?,
                &to_json_text(&t.identities)?,
                &t.updated_at,
            ],
            &audit,
        )
        .await
    }

    async fn create_device(&self, tenant: TenantId, d: Device, audit: Audit) -> StoreResult<()> {
        self.write_device(
            "INSERT INTO devices (tenant_id, id, type_id, name, location, updated_at, code, \
             created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            tenant,
            &d,
            &audit,
        )
        .await
    }

    async fn get_device(&self, tenant: TenantId, id: DeviceId) -> StoreResult<Device> {
        let c = self.client().await?;
        find_device(&c, tenant, id).await
    }

    async fn list_devices(
        &self,
        tenant: TenantId,
        device_type: Option<DeviceTypeId>,
    ) -> StoreResult<Vec<Device>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 \
                 AND ($2::uuid IS NULL OR type_id = $2) ORDER BY location, name, id"
            ),
            &[&tenant.0, &device_type.map(|t| t.0)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(device_from_row)
        .collect()
    }

    async fn update_device(&self, tenant: TenantId, d: Device, audit: Audit) -> StoreResult<()> {
        self.write_device(
            "UPDATE devices SET type_id = $3, name = $4, location = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND id = $2",
            tenant,
            &d,
            &audit,
        )
        .await
    }

    async fn device_by_code(&self, code: String) -> StoreResult<Option<(TenantId, Device)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLS}, tenant_id FROM devices WHERE code = $1"
            ))
            .await
            .map_err(pg)?;
        match c.query_opt(&st, &[&code]).await.map_err(pg)? {
            Some(r) => Ok(Some((TenantId(r.get(8)), device_from_row(&r)?))),
            None => Ok(None),
        }
    }

    async fn set_device_binding(
        &self,
        tenant: TenantId,
        id: DeviceId,
        binding_hash: [u8; 32],
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            &set_binding_sql("devices"),
            &[&tenant.0, &id.0, &&binding_hash[..], &expires_at],
            &audit,
        )
        .await
    }

    async fn bind_scanner(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(TenantId, Device)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let (tenant, id) = bind(&tx, "devices", binding_hash, token, now, audit).await?;
        let found = find_device(&tx, tenant, DeviceId(id)).await?;
        tx.commit().await.map_err(pg)?;
        Ok((tenant, found))
    }

    async fn unbind_device(
        &self,
        tenant: TenantId,
        id: DeviceId,
        audit: Audit,
    ) -> StoreResult<Device> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        unbind(&tx, "devices", tenant, id.0, &audit).await?;
        let device = find_device(&tx, tenant, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(device)
    }

    async fn record_maintenance(
        &self,
        tenant: TenantId,
        record: MaintenanceRecord,
        dedupe: Vec<u8>,
        event: OutboxEvent,
    ) -> StoreResult<RecordWrite> {
        record_once(
            self,
            "INSERT INTO maintenance_records (id, tenant_id, device_id, type_id, user_id, \
             method, verified_by, note, dedupe, at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) \
             ON CONFLICT (dedupe) DO NOTHING",
            &[
                &record.id.0,
                &tenant.0,
                &record.device_id.0,
                &record.type_id.0,
                &record.user_id.0,
                &record.method.as_str(),
                &record.verified_by.map(|a| a.0),
                &record.note,
                &dedupe,
                &record.at,
            ],
            &format!("SELECT {RECORD_COLS} FROM {RECORD_FROM} WHERE m.dedupe = $1"),
            &dedupe,
            record_from_row,
            |first| first.device_id == record.device_id,
            (tenant, &event, record.at),
            None,
        )
        .await
    }

    async fn list_maintenance(
        &self,
        tenant: TenantId,
        filter: RecordFilter,
        page: PageReq<MaintenanceId>,
    ) -> StoreResult<Page<MaintenanceRecord, MaintenanceId>> {
        let c = self.client().await?;
        let after = page.after.map(|a| a.0).unwrap_or(Uuid::nil());
        let rows = c
            .query(
                &format!(
                    "SELECT {RECORD_COLS} FROM {RECORD_FROM} \
                     WHERE m.tenant_id = $1 AND m.id > $2 \
                     AND ($3::uuid IS NULL OR m.device_id = $3) \
                     AND ($4::uuid IS NULL OR m.type_id = $4) \
                     AND ($5::uuid IS NULL OR m.user_id = $5) \
                     AND ($6::text IS NULL OR strpos(lower(d.location), lower($6)) > 0) \
                     AND ($7::timestamptz IS NULL OR m.at >= $7) \
                     AND ($8::timestamptz IS NULL OR m.at < $8) \
                     ORDER BY m.id LIMIT $9"
                ),
                &[
                    &tenant.0,
                    &after,
                    &filter.device.map(|d| d.0),
                    &filter.device_type.map(|t| t.0),
                    &filter.user.map(|u| u.0),
                    &filter.location,
                    &filter.from,
                    &filter.to,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let records = rows
            .iter()
            .map(record_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(records, page.limit, |r| r.id))
    }
}
