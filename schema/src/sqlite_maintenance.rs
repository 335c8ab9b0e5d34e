//! The equipment maintenance half of the SQLite engine. The single writer makes each check
//! and its write one step; the unique indexes on names, codes and dedupe keys would refuse
//! a second one even without the checks.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::maintenance_store::{MaintenanceStore, RecordFilter, RecordWrite};
use crate::model::*;
use crate::sqlite::{
    change_one, check_name_free, check_refs, db, ms, opt_uuid_col, paginate, parse_enum, ts,
    uuid_col, SqliteStore,
};
use crate::sqlite_shuttle::{bind, record_once, set_binding, unbind};
use crate::store::{device_code_taken, device_type_name_taken, from_json_text, to_json_text};
use crate::wallet::OutboxEvent;

const TYPE_COLS: &str = "id, name, windows, identities, created_at, updated_at";

type TypeRow = (DeviceType, String, String);

fn type_row(r: &Row) -> rusqlite::Result<TypeRow> {
    Ok((
        DeviceType {
            id: DeviceTypeId(uuid_col(r, 0)?),
            name: r.get(1)?,
            windows: Vec::new(),
            identities: Vec::new(),
            created_at: ts(r.get(4)?),
            updated_at: ts(r.get(5)?),
        },
        r.get(2)?,
        r.get(3)?,
    ))
}

fn type_from_row((mut t, windows, identities): TypeRow) -> StoreResult<DeviceType> {
    t.windows = from_json_text(&windows)?;
    t.identities = from_json_text(&identities)?;
    Ok(t)
}

const DEVICE_COLS: &str = "id, type_id, name, location, code, bound_at, created_at, updated_at";

fn device_row(r: &Row) -> rusqlite::Result<Device> {
    Ok(Device {
        id: DeviceId(uuid_col(r, 0)?),
        type_id: DeviceTypeId(uuid_col(r, 1)?),
        name: r.get(2)?,
        location: r.get(3)?,
        code: r.get(4)?,
        bound_at: r.get::<_, Option<i64>>(5)?.map(ts),
        created_at: ts(r.get(6)?),
        updated_at: ts(r.get(7)?),
    })
}

fn find_device(c: &Connection, tenant: TenantId, id: DeviceId) -> StoreResult<Device> {
    c.prepare_cached(&format!(
        "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = ? AND id = ?"
    ))
    .and_then(|mut st| {
        st.query_row([tenant.to_string(), id.to_string()], device_row)
            .optional()
    })
    .map_err(db)?
    .ok_or(StoreError::NotFound)
}

const RECORD_COLS: &str = "m.id, m.device_id, m.type_id, m.user_id, m.method, m.verified_by, \
     m.note, d.name, d.location, t.name, u.name, u.number, m.at";
const RECORD_FROM: &str = "maintenance_records m LEFT JOIN devices d ON d.id = m.device_id \
     LEFT JOIN device_types t ON t.id = m.type_id LEFT JOIN users u ON u.id = m.user_id";

fn record_row(r: &Row) -> rusqlite::Result<MaintenanceRecord> {
    Ok(MaintenanceRecord {
        id: MaintenanceId(uuid_col(r, 0)?),
        device_id: DeviceId(uuid_col(r, 1)?),
        type_id: DeviceTypeId(uuid_col(r, 2)?),
        user_id: UserId(uuid_col(r, 3)?),
        method: parse_enum(r, 4, MaintenanceMethod::parse)?,
        verified_by: opt_uuid_col(r, 5)?.map(AdminId),
        note: r.get(6)?,
        device_name: r.get(7)?,
        location: r.get(8)?,
        type_name: r.get(9)?,
        name: r.get(10)?,
        number: r.get(11)?,
        at: ts(r.get(12)?),
    })
}

fn type_params(tenant: TenantId, t: &DeviceType) -> StoreResult<Vec<rusqlite::types::Value>> {
    Ok(vec![
        t.name.clone().into(),
        to_json_text(&t.windows)?.into(),
        to_json_text(&t.identities)?.into(),
        ms(t.updated_at).into(),
        tenant.to_string().into(),
        t.id.to_string().into(),
    ])
}

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn create_device_type(
        &self,
        tenant: TenantId,
        t: DeviceType,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "device_types",
                tenant,
                t.id.0,
                &t.name,
                device_type_name_taken,
            )?;
            let mut values = type_params(tenant, &t)?;
            values.push(ms(t.created_at).into());
            change_one(
                c,
                "INSERT INTO device_types (name, windows, identities, updated_at, tenant_id, id, \
                 created_at) VALUES (?,?,?,?,?,?,?)",
                params_from_iter(values),
                &audit,
            )
        })
        .await
    }

    async fn get_device_type(&self, tenant: TenantId, id: DeviceTypeId) -> StoreResult<DeviceType> {
        self.tenant_row(
            TYPE_COLS,
            "device_types",
            tenant,
            id.0,
            type_row,
            type_from_row,
        )
        .await
    }

    async fn list_device_types(&self, tenant: TenantId) -> StoreResult<Vec<DeviceType>> {
        self.tenant_rows_by_name(TYPE_COLS, "device_types", tenant, type_row, type_from_row)
            .await
    }

    async fn update_device_type(
        &self,
        tenant: TenantId,
        t: DeviceType,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "device_types",
                tenant,
                t.id.0,
                &t.name,
                device_type_name_taken,
            )?;
            change_one(
                c,
                "UPDATE device_types SET name = ?, windows = ?, identities = ?, updated_at = ? \
                 WHERE tenant_id = ? AND id = ?",
                params_from_iter(type_params(tenant, &t)?),
                &audit,
            )
        })
        .await
    }

    async fn create_device(&self, tenant: TenantId, d: Device, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_refs(c, "device_types", tenant, &[d.type_id.0], "type_id")?;
            let taken: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM devices WHERE code = ?)",
                    [&d.code],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if taken {
                return Err(device_code_taken());
            }
            change_one(
                c,
                "INSERT INTO devices (id, tenant_id, type_id, name, location, code, created_at, \
                 updated_at) VALUES (?,?,?,?,?,?,?,?)",
                params![
                    d.id.to_string(),
                    tenant.to_string(),
                    d.type_id.to_string(),
                    d.name,
                    d.location,
                    d.code,
                    ms(d.created_at),
                    ms(d.updated_at),
                ],
                &audit,
            )
        })
        .await
    }

    async fn get_device(&self, tenant: TenantId, id: DeviceId) -> StoreResult<Device> {
        self.read(move |c| find_device(c, tenant, id)).await
    }

    async fn list_devices(
        &self,
        tenant: TenantId,
        device_type: Option<DeviceTypeId>,
    ) -> StoreResult<Vec<Device>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = ?");
            let mut values = vec![tenant.to_string()];
            if let Some(t) = device_type {
                sql.push_str(" AND type_id = ?");
                values.push(t.to_string());
            }
            sql.push_str(" ORDER BY location, name, id");
            c.prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), device_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)
        })
        .await
    }

    async fn update_device(&self, tenant: TenantId, d: Device, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_refs(c, "device_types", tenant, &[d.type_id.0], "type_id")?;
            change_one(
                c,
                "UPDATE devices SET type_id = ?, name = ?, location = ?, updated_at = ? \
                 WHERE tenant_id = ? AND id = ?",
                params![
                    d.type_id.to_string(),
                    d.name,
                    d.location,
                    ms(d.updated_at),
                    tenant.to_string(),
                    d.id.to_string(),
                ],
                &audit,
            )
        })
        .await
    }

    async fn device_by_code(&self, code: String) -> StoreResult<Option<(TenantId, Device)>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DEVICE_COLS}, tenant_id FROM devices WHERE code = ?"
            ))
            .and_then(|mut st| {
                st.query_row([code], |r| Ok((TenantId(uuid_col(r, 8)?), device_row(r)?)))
                    .optional()
            })
            .map_err(db)
        })
        .await
    }

    async fn set_device_binding(
        &self,
        tenant: TenantId,
        id: DeviceId,
        binding_hash: [u8; 32],
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            set_binding(c, "devices", tenant, id.0, binding_hash, expires_at, &audit)
        })
        .await
    }

    async fn bind_scanner(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(TenantId, Device)> {
        self.write(move |c| {
            let (tenant, id) = bind(c, "devices", binding_hash, token, now, audit)?;
            Ok((tenant, find_device(c, tenant, DeviceId(id))?))
        })
        .await
    }

    async fn unbind_device(
        &self,
        tenant: TenantId,
        id: DeviceId,
        audit: Audit,
    ) -> StoreResult<Device> {
        self.write(move |c| {
            unbind(c, "devices", tenant, id.0, &audit)?;
            find_device(c, tenant, id)
        })
        .await
    }

    async fn record_maintenance(
        &self,
        tenant: TenantId,
        record: MaintenanceRecord,
        dedupe: Vec<u8>,
        event: OutboxEvent,
    ) -> StoreResult<RecordWrite> {
        self.write(move |c| {
            record_once(
                c,
                &format!("SELECT {RECORD_COLS} FROM {RECORD_FROM} WHERE m.dedupe = ?"),
                &dedupe,
                record_row,
                |first| first.device_id == record.device_id,
                |c| {
                    c.prepare_cached(
                        "INSERT INTO maintenance_records (id, tenant_id, device_id, type_id, \
                         user_id, method, verified_by, note, dedupe, at) \
                         VALUES (?,?,?,?,?,?,?,?,?,?)",
                    )?
                    .execute(params![
                        record.id.to_string(),
                        tenant.to_string(),
                        record.device_id.to_string(),
                        record.type_id.to_string(),
                        record.user_id.to_string(),
                        record.method.as_str(),
                        record.verified_by.map(|a| a.to_string()),
                        record.note,
                        &dedupe[..],
                        ms(record.at),
                    ])
                },
                (tenant, &event, record.at),
            )
        })
        .await
    }

    async fn list_maintenance(
        &self,
        tenant: TenantId,
        filter: RecordFilter,
        page: PageReq<MaintenanceId>,
    ) -> StoreResult<Page<MaintenanceRecord, MaintenanceId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {RECORD_COLS} FROM {RECORD_FROM} WHERE m.tenant_id = ?");
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            let ids = [
                ("m.id > ?", page.after.map(|a| a.0)),
                ("m.device_id = ?", filter.device.map(|d| d.0)),
                ("m.type_id = ?", filter.device_type.map(|t| t.0)),
                ("m.user_id = ?", filter.user.map(|u| u.0)),
            ];
            for (condition, id) in ids {
                if let Some(id) = id {
                    sql.push_str(&format!(" AND {condition}"));
                    values.push(id.to_string().into());
                }
            }
            if let Some(place) = &filter.location {
                sql.push_str(" AND instr(lower(d.location), lower(?)) > 0");
                values.push(place.clone().into());
            }
            if let Some(t) = filter.from {
                sql.push_str(" AND m.at >= ?");
                values.push(ms(t).into());
            }
            if let Some(t) = filter.to {
                sql.push_str(" AND m.at < ?");
                values.push(ms(t).into());
            }
            sql.push_str(" ORDER BY m.id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), record_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |r| r.id))
        })
        .await
    }
}
