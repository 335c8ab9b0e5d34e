//! The shuttle-bus half of the PostgreSQL engine. Names meet at the unique constraints
//! (`shuttle_route_name_taken`, `bus_name_taken`), a personal code at the unique nonce:
//! of two scans of one code at once, the second waits for the first and finds its ride.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::postgres::{check_refs, insert_audit, insert_token, pg, PgStore};
use crate::postgres_money::insert_outbox;
use crate::shuttle_store::{OnceWrite, RideFilter, RideWrite, ShuttleStore};
use crate::sqlite::paginate;
use crate::store::{from_json_text, to_json_text};
use crate::wallet::{OutboxEvent, OutboxPage};

const ROUTE_COLS: &str = "id, name, identities, created_at, updated_at, reboard_minutes";

fn route_from_row(r: &Row) -> StoreResult<ShuttleRoute> {
    Ok(ShuttleRoute {
        id: ShuttleRouteId(r.get(0)),
        name: r.get(1),
        identities: from_json_text(&r.get::<_, String>(2))?,
        reboard_minutes: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        created_at: r.get(3),
        updated_at: r.get(4),
    })
}

const BUS_COLS: &str = "id, route_id, name, bound_at, created_at, updated_at";

fn bus_from_row(r: &Row) -> StoreResult<Bus> {
    Ok(Bus {
        id: BusId(r.get(0)),
        route_id: ShuttleRouteId(r.get(1)),
        name: r.get(2),
        bound_at: r.get(3),
        created_at: r.get(4),
        updated_at: r.get(5),
    })
}

async fn find_bus<C: GenericClient>(c: &C, tenant: TenantId, id: BusId) -> StoreResult<Bus> {
    let row = c
        .query_opt(
            &format!("SELECT {BUS_COLS} FROM shuttle_buses WHERE tenant_id = $1 AND id = $2"),
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    bus_from_row(&row)
}

async fn revoke_verifiers<C: GenericClient>(c: &C, subject: Uuid) -> StoreResult<()> {
    c.execute(
        "DELETE FROM tokens WHERE kind = 'verifier' AND subject_id = $1",
        &[&subject],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Opens a binding link of `table` (a bus, a device) in `tx`: the row whose unexpired link
/// it is gets `token` as its one verifier and loses any earlier one; the link is used up.
/// Answers the row's tenant and id; `Gone` for a used or expired link, `NotFound` for an
/// unknown one.
pub(crate) async fn bind<C: GenericClient>(
    tx: &C,
    table: &str,
    binding_hash: [u8; 32],
    mut token: NewToken,
    now: Timestamp,
    mut audit: Audit,
) -> StoreResult<(TenantId, Uuid)> {
    // The row lock makes the link's one use, and the verifier it replaces, one step.
    let row = tx
        .query_opt(
            &format!(
                "SELECT tenant_id, id, binding_expires_at FROM {table} \
                 WHERE binding_hash = $1 FOR UPDATE"
            ),
            &[&&binding_hash[..]],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    let (tenant, id): (TenantId, Uuid) = (TenantId(row.get(0)), row.get(1));
    // A used link keeps its hash with no expiry, so that it answers "used" rather than
    // "unknown" until a new link replaces it.
    if row.get::<_, Option<Timestamp>>(2).is_none_or(|e| now >= e) {
        return Err(StoreError::Gone);
    }
    tx.execute(
        &format!("UPDATE {table} SET binding_expires_at = NULL, bound_at = $2 WHERE id = $1"),
        &[&id, &now],
    )
    .await
    .map_err(pg)?;
    revoke_verifiers(tx, id).await?;
    token.tenant_id = Some(tenant);
    token.subject_id = Some(id);
    insert_token(tx, &token).await?;
    audit.tenant_id = Some(tenant);
    audit.target_id = id.to_string();
    insert_audit(tx, &audit).await?;
    Ok((tenant, id))
}

/// Revokes a row's verifier and any binding link not yet used, in `tx`.
pub(crate) async fn unbind<C: GenericClient>(
    tx: &C,
    table: &str,
    tenant: TenantId,
    id: Uuid,
    audit: &Audit,
) -> StoreResult<()> {
    let changed = tx
        .execute(
            &format!(
                "UPDATE {table} SET binding_hash = NULL, binding_expires_at = NULL, \
                 bound_at = NULL WHERE tenant_id = $1 AND id = $2"
            ),
            &[&tenant.0, &id],
        )
        .await
        .map_err(pg)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    revoke_verifiers(tx, id).await?;
    insert_audit(tx, audit).await
}

/// The SQL that gives a row of `table` a one-time binding link, replacing any other ($1
/// tenant, $2 id, $3 hash, $4 expiry).
pub(crate) fn set_binding_sql(table: &str) -> String {
    format!(
        "UPDATE {table} SET binding_hash = $3, binding_expires_at = $4 \
         WHERE tenant_id = $1 AND id = $2"
    )
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// A check before a scan is recorded: `lock` (a statement that locks what the check
/// reads), then `query`; a row it finds is the answer (`Repeat`), and nothing is written.
/// Two statements, so the query's snapshot is taken once the lock is held.
pub(crate) struct Before<'a> {
    pub lock: (&'a str, Params<'a>),
    pub query: (&'a str, Params<'a>),
}

/// Records something that counts once by `key` (a ride, a maintenance visit): `insert`
/// (an `INSERT … ON CONFLICT DO NOTHING` on the key, with `params`) writes it with its
/// outbox event; when it inserts nothing, the record `earlier` (a query by the key) finds,
/// as `Repeat` when `same` says it was at the same place and `Used` otherwise. Of two at
/// once with one key, the second waits on the first's key and, once it commits, inserts
/// nothing. `before`, when given, is checked first.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_once<T>(
    store: &PgStore,
    insert: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    earlier: &str,
    key: &[u8],
    read: fn(&Row) -> StoreResult<T>,
    same: impl FnOnce(&T) -> bool,
    event: (TenantId, &OutboxEvent, Timestamp),
    before: Option<Before<'_>>,
) -> StoreResult<OnceWrite<T>> {
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(pg)?;
    if let Some(before) = before {
        tx.execute(before.lock.0, before.lock.1).await.map_err(pg)?;
        if let Some(row) = tx
            .query_opt(before.query.0, before.query.1)
            .await
            .map_err(pg)?
        {
            return Ok(OnceWrite::Repeat(read(&row)?));
        }
    }
    if tx.execute(insert, params).await.map_err(pg)? == 0 {
        let first = read(&tx.query_one(earlier, &[&key]).await.map_err(pg)?)?;
        return Ok(if same(&first) {
            OnceWrite::Repeat(first)
        } else {
            OnceWrite::Used(first)
        });
    }
    let (tenant, event, at) = event;
    let page = OutboxPage::of_one(tenant, std::slice::from_ref(event), at);
    insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(OnceWrite::Created)
}

const RIDE_COLS: &str = "d.id, d.route_id, d.bus_id, d.user_id, r.name, b.name, u.name, \
     u.number, d.at";
const RIDE_FROM: &str = "shuttle_rides d LEFT JOIN shuttle_routes r ON r.id = d.route_id \
     LEFT JOIN shuttle_buses b ON b.id = d.bus_id LEFT JOIN users u ON u.id = d.user_id";

fn ride_from_row(r: &Row) -> Ride {
    Ride {
        id: RideId(r.get(0)),
        route_id: ShuttleRouteId(r.get(1)),
        bus_id: BusId(r.get(2)),
        user_id: UserId(r.get(3)),
        route_name: r.get(4),
        bus_name: r.get(5),
        name: r.get(6),
        number: r.get(7),
        at: r.get(8),
    }
}

impl PgStore {
    /// Writes a bus (`sql` binds $1 tenant, $2 id, $3 route, $4 name, $5 updated, then
    /// $6 created when it inserts) once its route is known to be the tenant's.
    async fn write_bus(
        &self,
        sql: &str,
        tenant: TenantId,
        bus: &Bus,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_refs(&tx, "shuttle_routes", tenant, &[bus.route_id.0], "route_id").await?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &tenant.0,
            &bus.id.0,
            &bus.route_id.0,
            &bus.name,
            &bus.updated_at,
        ];
        if sql.starts_with("INSERT") {
            params.push(&bus.created_at);
        }
        if tx.execute(sql, &params).await.map_err(pg)? == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, audit).await?;
        tx.commit().await.map_err(pg)
    }
}

#[async_trait]
impl ShuttleStore for PgStore {
    async fn create_route(
        &self,
        tenant: TenantId,
        route: ShuttleRoute,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "INSERT INTO shuttle_routes (tenant_id, id, name, identities, updated_at, \
             created_at, reboard_minutes) VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[
                &tenant.0,
                &route.id.0,
                &route.name,
                &to_json_text(&route.identities)?,
                &route.updated_at,
                &route.created_at,
                &i32::try_from(route.reboard_minutes).unwrap_or(i32::MAX),
            ],
            &audit,
        )
        .await
    }

    async fn get_route(&self, tenant: TenantId, id: ShuttleRouteId) -> StoreResult<ShuttleRoute> {
        self.tenant_row(ROUTE_COLS, "shuttle_routes", tenant, id.0, route_from_row)
            .await
    }

    async fn list_routes(&self, tenant: TenantId) -> StoreResult<Vec<ShuttleRoute>> {
        self.tenant_rows_by_name(ROUTE_COLS, "shuttle_routes", tenant, route_from_row)
            .await
    }

    async fn update_route(
        &self,
        tenant: TenantId,
        route: ShuttleRoute,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "UPDATE shuttle_routes SET name = $3, identities = $4, updated_at = $5, \
             reboard_minutes = $6 WHERE tenant_id = $1 AND id = $2",
            &[
                &tenant.0,
                &route.id.0,
                &route.name,
                &to_json_text(&route.identities)?,
                &route.updated_at,
                &i32::try_from(route.reboard_minutes).unwrap_or(i32::MAX),
            ],
            &audit,
        )
        .await
    }

    async fn create_bus(&self, tenant: TenantId, bus: Bus, audit: Audit) -> StoreResult<()> {
        self.write_bus(
            "INSERT INTO shuttle_buses (tenant_id, id, route_id, name, updated_at, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6)",
            tenant,
            &bus,
            &audit,
        )
        .await
    }

    async fn get_bus(&self, tenant: TenantId, id: BusId) -> StoreResult<Bus> {
        let c = self.client().await?;
        find_bus(&c, tenant, id).await
    }

    async fn list_buses(
        &self,
        tenant: TenantId,
        route: Option<ShuttleRouteId>,
    ) -> StoreResult<Vec<Bus>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {BUS_COLS} FROM shuttle_buses WHERE tenant_id = $1 \
                 AND ($2::uuid IS NULL OR route_id = $2) ORDER BY name"
            ),
            &[&tenant.0, &route.map(|r| r.0)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(bus_from_row)
        .collect()
    }

    async fn update_bus(&self, tenant: TenantId, bus: Bus, audit: Audit) -> StoreResult<()> {
        self.write_bus(
            "UPDATE shuttle_buses SET route_id = $3, name = $4, updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2",
            tenant,
            &bus,
            &audit,
        )
        .await
    }

    async fn set_bus_binding(
        &self,
        tenant: TenantId,
        id: BusId,
        binding_hash: [u8; 32],
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            &set_binding_sql("shuttle_buses"),
            &[&tenant.0, &id.0, &&binding_hash[..], &expires_at],
            &audit,
        )
        .await
    }

    async fn bind_verifier(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(TenantId, Bus)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let (tenant, id) = bind(&tx, "shuttle_buses", binding_hash, token, now, audit).await?;
        let found = find_bus(&tx, tenant, BusId(id)).await?;
        tx.commit().await.map_err(pg)?;
        Ok((tenant, found))
    }

    async fn unbind_bus(&self, tenant: TenantId, id: BusId, audit: Audit) -> StoreResult<Bus> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        unbind(&tx, "shuttle_buses", tenant, id.0, &audit).await?;
        let bus = find_bus(&tx, tenant, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(bus)
    }

    async fn record_ride(
        &self,
        tenant: TenantId,
        ride: Ride,
        nonce: Vec<u8>,
        event: OutboxEvent,
        reboard_since: Option<Timestamp>,
    ) -> StoreResult<RideWrite> {
        let lock = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE";
        let query = format!(
            "SELECT {RIDE_COLS} FROM {RIDE_FROM} WHERE d.user_id = $1 AND d.route_id = $2 \
             AND d.at >= $3 \
             AND NOT EXISTS (SELECT 1 FROM shuttle_rides x WHERE x.code_nonce = $4) \
             ORDER BY d.at DESC LIMIT 1"
        );
        let since = reboard_since.unwrap_or(Timestamp::MIN);
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ride.user_id.0];
        let query_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&ride.user_id.0, &ride.route_id.0, &since, &nonce];
        let before = reboard_since.map(|_| Before {
            lock: (lock, &lock_params),
            query: (&query, &query_params),
        });
        record_once(
            self,
            "INSERT INTO shuttle_rides (id, tenant_id, route_id, bus_id, user_id, code_nonce, \
             at) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (code_nonce) DO NOTHING",
            &[
                &ride.id.0,
                &tenant.0,
                &ride.route_id.0,
                &ride.bus_id.0,
                &ride.user_id.0,
                &nonce,
                &ride.at,
            ],
            &format!("SELECT {RIDE_COLS} FROM {RIDE_FROM} WHERE d.code_nonce = $1"),
            &nonce,
            |r| Ok(ride_from_row(r)),
            |first| first.bus_id == ride.bus_id,
            (tenant, &event, ride.at),
            before,
        )
        .await
    }

    async fn list_rides(
        &self,
        tenant: TenantId,
        filter: RideFilter,
        page: PageReq<RideId>,
    ) -> StoreResult<Page<Ride, RideId>> {
        let c = self.client().await?;
        let after = page.after.map(|a| a.0).unwrap_or(Uuid::nil());
        let rows = c
            .query(
                &format!(
                    "SELECT {RIDE_COLS} FROM {RIDE_FROM} \
                     WHERE d.tenant_id = $1 AND d.id > $2 \
                     AND ($3::uuid IS NULL OR d.route_id = $3) \
                     AND ($4::uuid IS NULL OR d.bus_id = $4) \
                     AND ($5::uuid IS NULL OR d.user_id = $5) \
                     AND ($6::timestamptz IS NULL OR d.at >= $6) \
                     AND ($7::timestamptz IS NULL OR d.at < $7) \
                     ORDER BY d.id LIMIT $8"
                ),
                &[
                    &tenant.0,
                    &after,
                    &filter.route.map(|r| r.0),
                    &filter.bus.map(|b| b.0),
                    &filter.user.map(|u| u.0),
                    &filter.from,
                    &filter.to,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let rides = rows.iter().map(ride_from_row).collect();
        Ok(paginate(rides, page.limit, |r| r.id))
    }
}
