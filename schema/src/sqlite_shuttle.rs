//! The shuttle-bus half of the SQLite engine. The single writer makes each check and its
//! write one step; the unique indexes on names and code nonces would refuse a second one
//! even without the checks.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::shuttle_store::{OnceWrite, RideFilter, RideWrite, ShuttleStore};
use crate::sqlite::{
    change_one, check_name_free, check_refs, db, insert_audit, insert_token, ms, paginate, ts,
    uuid_col, SqliteStore,
};
use crate::sqlite_money::insert_outbox;
use crate::store::{bus_name_taken, from_json_text, shuttle_route_name_taken, to_json_text};
use crate::wallet::{OutboxEvent, OutboxPage};

const ROUTE_COLS: &str = "id, name, identities, created_at, updated_at, reboard_minutes";

fn route_row(r: &Row) -> rusqlite::Result<(ShuttleRoute, String)> {
    Ok((
        ShuttleRoute {
            id: ShuttleRouteId(uuid_col(r, 0)?),
            name: r.get(1)?,
            identities: Vec::new(),
            reboard_minutes: r.get(5)?,
            created_at: ts(r.get(3)?),
            updated_at: ts(r.get(4)?),
        },
        r.get(2)?,
    ))
}

fn route_from_row((mut route, identities): (ShuttleRoute, String)) -> StoreResult<ShuttleRoute> {
    route.identities = from_json_text(&identities)?;
    Ok(route)
}

const BUS_COLS: &str = "id, route_id, name, bound_at, created_at, updated_at";

fn bus_row(r: &Row) -> rusqlite::Result<Bus> {
    Ok(Bus {
        id: BusId(uuid_col(r, 0)?),
        route_id: ShuttleRouteId(uuid_col(r, 1)?),
        name: r.get(2)?,
        bound_at: r.get::<_, Option<i64>>(3)?.map(ts),
        created_at: ts(r.get(4)?),
        updated_at: ts(r.get(5)?),
    })
}

fn find_bus(c: &Connection, tenant: TenantId, id: BusId) -> StoreResult<Bus> {
    c.prepare_cached(&format!(
        "SELECT {BUS_COLS} FROM shuttle_buses WHERE tenant_id = ? AND id = ?"
    ))
    .and_then(|mut st| {
        st.query_row([tenant.to_string(), id.to_string()], bus_row)
            .optional()
    })
    .map_err(db)?
    .ok_or(StoreError::NotFound)
}

fn check_bus(c: &Connection, tenant: TenantId, bus: &Bus) -> StoreResult<()> {
    check_name_free(
        c,
        "shuttle_buses",
        tenant,
        bus.id.0,
        &bus.name,
        bus_name_taken,
    )?;
    check_refs(c, "shuttle_routes", tenant, &[bus.route_id.0], "route_id")
}

fn revoke_verifiers(c: &Connection, subject: uuid::Uuid) -> StoreResult<()> {
    c.execute(
        "DELETE FROM tokens WHERE kind = 'verifier' AND subject_id = ?",
        [subject.to_string()],
    )
    .map_err(db)?;
    Ok(())
}

/// Gives a row of `table` (a bus, a device) a one-time binding link, replacing any other.
pub(crate) fn set_binding(
    c: &Connection,
    table: &str,
    tenant: TenantId,
    id: uuid::Uuid,
    binding_hash: [u8; 32],
    expires_at: jiff::Timestamp,
    audit: &Audit,
) -> StoreResult<()> {
    change_one(
        c,
        &format!(
            "UPDATE {table} SET binding_hash = ?, binding_expires_at = ? \
             WHERE tenant_id = ? AND id = ?"
        ),
        params![
            &binding_hash[..],
            ms(expires_at),
            tenant.to_string(),
            id.to_string()
        ],
        audit,
    )
}

/// Opens a binding link of `table`: the row whose unexpired link it is gets `token` as its
/// one verifier and loses any earlier one; the link is used up. Answers the row's tenant
/// and id; `Gone` for a used or expired link, `NotFound` for an unknown one.
pub(crate) fn bind(
    c: &Connection,
    table: &str,
    binding_hash: [u8; 32],
    mut token: NewToken,
    now: jiff::Timestamp,
    mut audit: Audit,
) -> StoreResult<(TenantId, uuid::Uuid)> {
    let (tenant, id, expires) = c
        .query_row(
            &format!(
                "SELECT tenant_id, id, binding_expires_at FROM {table} WHERE binding_hash = ?"
            ),
            [&binding_hash[..]],
            |r| {
                Ok((
                    TenantId(uuid_col(r, 0)?),
                    uuid_col(r, 1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .optional()
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    // A used link keeps its hash with no expiry, so that it answers "used" rather than
    // "unknown" until a new link replaces it.
    if expires.is_none_or(|e| ms(now) >= e) {
        return Err(StoreError::Gone);
    }
    c.execute(
        &format!("UPDATE {table} SET binding_expires_at = NULL, bound_at = ? WHERE id = ?"),
        params![ms(now), id.to_string()],
    )
    .map_err(db)?;
    revoke_verifiers(c, id)?;
    token.tenant_id = Some(tenant);
    token.subject_id = Some(id);
    insert_token(c, &token)?;
    audit.tenant_id = Some(tenant);
    audit.target_id = id.to_string();
    insert_audit(c, &audit)?;
    Ok((tenant, id))
}

/// Revokes a row's verifier and any binding link not yet used.
pub(crate) fn unbind(
    c: &Connection,
    table: &str,
    tenant: TenantId,
    id: uuid::Uuid,
    audit: &Audit,
) -> StoreResult<()> {
    change_one(
        c,
        &format!(
            "UPDATE {table} SET binding_hash = NULL, binding_expires_at = NULL, \
             bound_at = NULL WHERE tenant_id = ? AND id = ?"
        ),
        [tenant.to_string(), id.to_string()],
        audit,
    )?;
    revoke_verifiers(c, id)
}

/// Records something that counts once by `key` (a ride, a maintenance visit): when
/// `earlier` (a query by the key) finds a record, that record, as `Repeat` when `same`
/// says it was at the same place and `Used` otherwise; else `insert` writes it, with its
/// outbox event, in the caller's write.
pub(crate) fn record_once<T>(
    c: &Connection,
    earlier: &str,
    key: &[u8],
    read: fn(&Row) -> rusqlite::Result<T>,
    same: impl FnOnce(&T) -> bool,
    insert: impl FnOnce(&Connection) -> rusqlite::Result<usize>,
    event: (TenantId, &OutboxEvent, jiff::Timestamp),
) -> StoreResult<OnceWrite<T>> {
    let first = c
        .prepare_cached(earlier)
        .and_then(|mut st| st.query_row([key], read).optional())
        .map_err(db)?;
    if let Some(first) = first {
        return Ok(if same(&first) {
            OnceWrite::Repeat(first)
        } else {
            OnceWrite::Used(first)
        });
    }
    insert(c).map_err(db)?;
    let (tenant, event, at) = event;
    let page = OutboxPage::of_one(tenant, std::slice::from_ref(event), at);
    insert_outbox(c, page.as_ref()).map_err(db)?;
    Ok(OnceWrite::Created)
}

const RIDE_COLS: &str = "d.id, d.route_id, d.bus_id, d.user_id, r.name, b.name, u.name, \
     u.number, d.at";
const RIDE_FROM: &str = "shuttle_rides d LEFT JOIN shuttle_routes r ON r.id = d.route_id \
     LEFT JOIN shuttle_buses b ON b.id = d.bus_id LEFT JOIN users u ON u.id = d.user_id";

fn ride_row(r: &Row) -> rusqlite::Result<Ride> {
    Ok(Ride {
        id: RideId(uuid_col(r, 0)?),
        route_id: ShuttleRouteId(uuid_col(r, 1)?),
        bus_id: BusId(uuid_col(r, 2)?),
        user_id: UserId(uuid_col(r, 3)?),
        route_name: r.get(4)?,
        bus_name: r.get(5)?,
        name: r.get(6)?,
        number: r.get(7)?,
        at: ts(r.get(8)?),
    })
}

#[async_trait]
impl ShuttleStore for SqliteStore {
    async fn create_route(
        &self,
        tenant: TenantId,
        route: ShuttleRoute,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "shuttle_routes",
                tenant,
                route.id.0,
                &route.name,
                shuttle_route_name_taken,
            )?;
            change_one(
                c,
                "INSERT INTO shuttle_routes (id, tenant_id, name, identities, created_at, \
                 updated_at, reboard_minutes) VALUES (?,?,?,?,?,?,?)",
                params![
                    route.id.to_string(),
                    tenant.to_string(),
                    route.name,
                    to_json_text(&route.identities)?,
                    ms(route.created_at),
                    ms(route.updated_at),
                    route.reboard_minutes,
                ],
                &audit,
            )
        })
        .await
    }

    async fn get_route(&self, tenant: TenantId, id: ShuttleRouteId) -> StoreResult<ShuttleRoute> {
        self.tenant_row(
            ROUTE_COLS,
            "shuttle_routes",
            tenant,
            id.0,
            route_row,
            route_from_row,
        )
        .await
    }

    async fn list_routes(&self, tenant: TenantId) -> StoreResult<Vec<ShuttleRoute>> {
        self.tenant_rows_by_name(
            ROUTE_COLS,
            "shuttle_routes",
            tenant,
            route_row,
            route_from_row,
        )
        .await
    }

    async fn update_route(
        &self,
        tenant: TenantId,
        route: ShuttleRoute,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "shuttle_routes",
                tenant,
                route.id.0,
                &route.name,
                shuttle_route_name_taken,
            )?;
            change_one(
                c,
                "UPDATE shuttle_routes SET name = ?, identities = ?, updated_at = ?, \
                 reboard_minutes = ? WHERE tenant_id = ? AND id = ?",
                params![
                    route.name,
                    to_json_text(&route.identities)?,
                    ms(route.updated_at),
                    route.reboard_minutes,
                    tenant.to_string(),
                    route.id.to_string(),
                ],
                &audit,
            )
        })
        .await
    }

    async fn create_bus(&self, tenant: TenantId, bus: Bus, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_bus(c, tenant, &bus)?;
            change_one(
                c,
                "INSERT INTO shuttle_buses (id, tenant_id, route_id, name, created_at, \
                 updated_at) VALUES (?,?,?,?,?,?)",
                params![
                    bus.id.to_string(),
                    tenant.to_string(),
                    bus.route_id.to_string(),
                    bus.name,
                    ms(bus.created_at),
                    ms(bus.updated_at),
                ],
                &audit,
            )
        })
        .await
    }

    async fn get_bus(&self, tenant: TenantId, id: BusId) -> StoreResult<Bus> {
        self.read(move |c| find_bus(c, tenant, id)).await
    }

    async fn list_buses(
        &self,
        tenant: TenantId,
        route: Option<ShuttleRouteId>,
    ) -> StoreResult<Vec<Bus>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {BUS_COLS} FROM shuttle_buses WHERE tenant_id = ?");
            let mut values = vec![tenant.to_string()];
            if let Some(r) = route {
                sql.push_str(" AND route_id = ?");
                values.push(r.to_string());
            }
            sql.push_str(" ORDER BY name");
            c.prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), bus_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)
        })
        .await
    }

    async fn update_bus(&self, tenant: TenantId, bus: Bus, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_bus(c, tenant, &bus)?;
            change_one(
                c,
                "UPDATE shuttle_buses SET route_id = ?, name = ?, updated_at = ? \
                 WHERE tenant_id = ? AND id = ?",
                params![
                    bus.route_id.to_string(),
                    bus.name,
                    ms(bus.updated_at),
                    tenant.to_string(),
                    bus.id.to_string(),
                ],
                &audit,
            )
        })
        .await
    }

    async fn set_bus_binding(
        &self,
        tenant: TenantId,
        id: BusId,
        binding_hash: [u8; 32],
        expires_at: jiff::Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            set_binding(
                c,
                "shuttle_buses",
                tenant,
                id.0,
                binding_hash,
                expires_at,
                &audit,
            )
        })
        .await
    }

    async fn bind_verifier(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: jiff::Timestamp,
        audit: Audit,
    ) -> StoreResult<(TenantId, Bus)> {
        self.write(move |c| {
            let (tenant, id) = bind(c, "shuttle_buses", binding_hash, token, now, audit)?;
            Ok((tenant, find_bus(c, tenant, BusId(id))?))
        })
        .await
    }

    async fn unbind_bus(&self, tenant: TenantId, id: BusId, audit: Audit) -> StoreResult<Bus> {
        self.write(move |c| {
            unbind(c, "shuttle_buses", tenant, id.0, &audit)?;
            find_bus(c, tenant, id)
        })
        .await
    }

    async fn record_ride(
        &self,
        tenant: TenantId,
        ride: Ride,
        nonce: Vec<u8>,
        event: OutboxEvent,
        reboard_since: Option<jiff::Timestamp>,
    ) -> StoreResult<RideWrite> {
        self.write(move |c| {
            // The single writer checks one rider's rides at a time. A code that boarded
            // already keeps its own answer (the same ride, or used elsewhere).
            if let Some(since) = reboard_since {
                let earlier = c
                    .prepare_cached(&format!(
                        "SELECT {RIDE_COLS} FROM {RIDE_FROM} WHERE d.user_id = ? \
                         AND d.route_id = ? AND d.at >= ? \
                         AND NOT EXISTS (SELECT 1 FROM shuttle_rides x WHERE x.code_nonce = ?) \
                         ORDER BY d.at DESC LIMIT 1"
                    ))
                    .and_then(|mut st| {
                        st.query_row(
                            params![
                                ride.user_id.to_string(),
                                ride.route_id.to_string(),
                                ms(since),
                                &nonce[..]
                            ],
                            ride_row,
                        )
                        .optional()
                    })
                    .map_err(db)?;
                if let Some(earlier) = earlier {
                    return Ok(OnceWrite::Repeat(earlier));
                }
            }
            record_once(
                c,
                &format!("SELECT {RIDE_COLS} FROM {RIDE_FROM} WHERE d.code_nonce = ?"),
                &nonce,
                ride_row,
                |first| first.bus_id == ride.bus_id,
                |c| {
                    c.prepare_cached(
                        "INSERT INTO shuttle_rides (id, tenant_id, route_id, bus_id, user_id, \
                         code_nonce, at) VALUES (?,?,?,?,?,?,?)",
                    )?
                    .execute(params![
                        ride.id.to_string(),
                        tenant.to_string(),
                        ride.route_id.to_string(),
                        ride.bus_id.to_string(),
                        ride.user_id.to_string(),
                        &nonce[..],
                        ms(ride.at),
                    ])
                },
                (tenant, &event, ride.at),
            )
        })
        .await
    }

    async fn list_rides(
        &self,
        tenant: TenantId,
        filter: RideFilter,
        page: PageReq<RideId>,
    ) -> StoreResult<Page<Ride, RideId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {RIDE_COLS} FROM {RIDE_FROM} WHERE d.tenant_id = ?");
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            let ids = [
                ("d.id > ?", page.after.map(|a| a.0)),
                ("d.route_id = ?", filter.route.map(|r| r.0)),
                ("d.bus_id = ?", filter.bus.map(|b| b.0)),
                ("d.user_id = ?", filter.user.map(|u| u.0)),
            ];
            for (condition, id) in ids {
                if let Some(id) = id {
                    sql.push_str(&format!(" AND {condition}"));
                    values.push(id.to_string().into());
                }
            }
            if let Some(t) = filter.from {
                sql.push_str(" AND d.at >= ?");
                values.push(ms(t).into());
            }
            if let Some(t) = filter.to {
                sql.push_str(" AND d.at < ?");
                values.push(ms(t).into());
            }
            sql.push_str(" ORDER BY d.id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), ride_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |r| r.id))
        })
        .await
    }
}
