//! The production engine: PostgreSQL through deadpool-postgres.
//!
//! Unlike SQLite there are many writers here (and several nodes), so every rule that
//! must hold under concurrency is held by the database: unique constraints for numbers,
//! names and idempotency keys, and `FOR UPDATE` where a write depends on a count.

use std::pin::pin;
use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use jiff::Timestamp;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::sqlite::paginate;
use crate::store::{
    app_name_taken, check_deletable, check_unchanged, dedup, from_json_text, granted_ids,
    group_in_use, group_name_taken, to_json_text, Store,
};

/// A timestamp bound as `timestamptz`, converted by arithmetic. postgres-types' own
/// conversion for jiff goes through a `Span` and its rounding, ~900 instructions a value:
/// a payment binds seven or so, on the commit thread every batch waits on (~7,000
/// instructions per payment, docs/BENCHMARKS.md, twenty-sixth run). The value is the same:
/// microseconds since 2000-01-01 (a test compares the two on thousands of instants).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PgTime(pub Timestamp);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in nanoseconds since the Unix epoch.
const PG_EPOCH_NS: i128 = 946_684_800 * 1_000_000_000;

impl PgTime {
    fn micros(self) -> i64 {
        // Truncated toward zero, as postgres-types does (its `Span` keeps the nanoseconds
        // apart and binds the microseconds). jiff's range (years -9999 to 9999) is well
        // inside i64 microseconds.
        ((self.0.as_nanosecond() - PG_EPOCH_NS) / 1000) as i64
    }
}

impl ToSql for PgTime {
    fn to_sql(
        &self,
        _: &Type,
        w: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        postgres_protocol::types::timestamp_to_sql(self.micros(), w);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Several nodes may start at once; one advisory lock makes their migrations take turns.
const MIGRATION_LOCK_KEY: i64 = 0x4f4e_4341_5244; // "ONCARD" in ASCII

/// Connections of the group commit's own pool (two batches in flight, and a spare).
const LEDGER_CONNECTIONS: usize = 3;

pub struct PgStore {
    pool: Pool,
    /// The group commit's connections, apart from the rest. deadpool spawns each
    /// connection's driver task on the runtime that opens it, so these, opened by the
    /// ledger writer, are driven on the writer's own thread: a batch's round trips never
    /// wait for a busy HTTP worker that happened to open a shared connection, nor cost a
    /// wake-up of another thread each.
    ledger: Pool,
}

/// How long a node waits to open a connection to PostgreSQL, unless the URL says
/// (`connect_timeout`): a host that is down or unreachable is answered 503 in seconds.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long data sent to PostgreSQL may go unacknowledged before the connection is
/// closed, unless the URL says (`tcp_user_timeout`): a server that vanished without a
/// word (a partition, a failed-over address) breaks the connection in seconds rather
/// than after the kernel's retransmissions, about a quarter of an hour.
const TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether `e` says that PostgreSQL could not be reached or went away (a restart, a
/// failover, a broken connection, a server refusing connections for now), rather than
/// that it refused what was asked. Such failures are answered 503: try again later.
pub(crate) fn unreachable(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exceptions; 57P01..57P04: shut down, crashed, starting up, the
        // database dropped; 53300: too many connections; 25006: a read-only transaction
        // (a failover left this node on a standby).
        return code.starts_with("08")
            || code.starts_with("57P")
            || code == "53300"
            || code == "25006";
    }
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.to_string().starts_with("timeout")
}

pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    if unreachable(&e) {
        return StoreError::Unavailable(format!("PostgreSQL: {e}"));
    }
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::UNIQUE_VIOLATION {
            match db.constraint() {
                Some("users_tenant_id_number_key") => return number_taken(),
                Some("tags_tenant_id_name_key") => {
                    return StoreError::conflict(
                        "tag_name_taken",
                        Some("name"),
                        "a tag with this name exists",
                    )
                }
                Some("admin_groups_tenant_id_name_key") => return group_name_taken(),
                Some("person_links_person_id_tenant_id_key") => {
                    return crate::person_store::tenant_already_linked()
                }
                Some("apps_tenant_id_name_key") => return app_name_taken(),
                Some("checkin_events_code_key") => return crate::store::code_taken(),
                Some("terminals_collection_code_key") => {
                    return crate::store::collection_code_taken()
                }
                Some("rooms_tenant_id_name_key") => return crate::store::room_name_taken(),
                Some("shuttle_routes_tenant_id_name_key") => {
                    return crate::store::shuttle_route_name_taken()
                }
                Some("shuttle_buses_tenant_id_name_key") => return crate::store::bus_name_taken(),
                Some("device_types_tenant_id_name_key") => {
                    return crate::store::device_type_name_taken()
                }
                Some("devices_code_key") => return crate::store::device_code_taken(),
                Some("identity_types_tenant_id_name_key") => {
                    return crate::store::identity_type_name_taken()
                }
                Some("booking_slots_pkey") => return crate::store::slot_taken(),
                Some("tenant_front_ends_host_key") => {
                    return crate::front_end_store::address_taken()
                }
                Some("settlement_entities_tenant_id_name_key") => {
                    return crate::settlement_store::settlement_entity_name_taken()
                }
                Some("departments_tenant_id_parent_id_name_key") => {
                    return StoreError::conflict(
                        "department_name_taken",
                        Some("name"),
                        "a sibling department already has this name",
                    )
                }
                _ => {}
            }
        }
        // A department or tag deleted while someone was being put in it, or a department
        // moved under it.
        if *db.code() == SqlState::FOREIGN_KEY_VIOLATION {
            let field = match db.constraint() {
                Some("user_departments_department_id_fkey") => Some("department_ids"),
                Some("user_tags_tag_id_fkey") => Some("tag_ids"),
                Some("departments_parent_id_fkey") => Some("parent_id"),
                _ => None,
            };
            if let Some(field) = field {
                return StoreError::InvalidReference {
                    field,
                    detail: "it was deleted meanwhile".into(),
                };
            }
        }
        // An event deleted while someone was being checked in to it.
        if *db.code() == SqlState::FOREIGN_KEY_VIOLATION
            && matches!(
                db.constraint(),
                Some("check_ins_event_id_fkey" | "checkin_attendees_event_id_fkey")
            )
        {
            return StoreError::NotFound;
        }
        // A group deleted while an admin was being added to it.
        if *db.code() == SqlState::FOREIGN_KEY_VIOLATION
            && db.constraint() == Some("admins_group_id_fkey")
        {
            return StoreError::InvalidReference {
                field: "group_id",
                detail: "this admin group does not exist".into(),
            };
        }
    }
    StoreError::backend(e)
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("database pool: {e}"))
}

fn number_taken() -> StoreError {
    StoreError::conflict(
        "number_taken",
        Some("number"),
        "another user already has this number",
    )
}

pub(crate) fn enum_col<T>(row: &Row, idx: usize, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let s: &str = row.try_get(idx).map_err(pg)?;
    parse(s).ok_or_else(|| StoreError::Backend(format!("unexpected stored value {s:?}").into()))
}

impl PgStore {
    /// Connects, applies migrations under an advisory lock, and builds the pool.
    pub async fn open(url: &str, pool_size: usize) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(pg)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        Self::migrate(&config).await?;
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let pool = Pool::builder(Manager::from_config(
            config.clone(),
            NoTls,
            manager_config(),
        ))
        .max_size(pool_size.max(2))
        .build()
        .map_err(StoreError::backend)?;
        let ledger = Pool::builder(Manager::from_config(config, NoTls, manager_config()))
            .max_size(LEDGER_CONNECTIONS)
            .build()
            .map_err(StoreError::backend)?;
        Ok(Self { pool, ledger })
    }

    async fn migrate(config: &tokio_postgres::Config) -> StoreResult<()> {
        let (mut client, conn) = config.connect(NoTls).await.map_err(pg)?;
        let driver = tokio::spawn(conn);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(pg)?;
        let result = embedded::migrations::runner().run_async(&mut client).await;
        // The lock is also released when the session ends; unlock explicitly anyway so a
        // pooled session could never keep it.
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await;
        drop(client);
        driver.abort();
        result.map(|_| ()).map_err(StoreError::backend)
    }

    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// A connection of the group commit's own pool.
    pub(crate) async fn ledger_client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.ledger.get().await.map_err(pool_err)
    }
}

pub(crate) async fn insert_audit<C: GenericClient>(c: &C, a: &Audit) -> StoreResult<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO audit_log (id, tenant_id, actor, action, target_type, target_id, \
             request_id, at, detail) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        )
        .await
        .map_err(pg)?;
    c.execute(
        &st,
        &[
            &a.id.0,
            &a.tenant_id.map(|t| t.0),
            &a.actor.as_string(),
            &a.action,
            &a.target_type,
            &a.target_id,
            &a.request_id,
            &a.at,
            &a.detail,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(crate) async fn insert_token<C: GenericClient>(c: &C, t: &NewToken) -> StoreResult<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO tokens (hash, kind, tenant_id, subject_id, created_at) \
             VALUES ($1,$2,$3,$4,$5)",
        )
        .await
        .map_err(pg)?;
    c.execute(
        &st,
        &[
            &&t.hash[..],
            &t.kind.as_str(),
            &t.tenant_id.map(|x| x.0),
            &t.subject_id,
            &t.created_at,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

impl PgStore {
    /// One row of a tenant's table by its id (`NotFound` when absent, or another
    /// tenant's), mapped.
    pub(crate) async fn tenant_row<T>(
        &self,
        cols: &str,
        table: &str,
        tenant: TenantId,
        id: Uuid,
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {cols} FROM {table} WHERE tenant_id = $1 AND id = $2"
            ))
            .await
            .map_err(pg)?;
        let row = c
            .query_opt(&st, &[&tenant.0, &id])
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        map(&row)
    }

    /// One statement that must change a row (`NotFound` when it changes none), with its
    /// audit entry, in one transaction.
    pub(crate) async fn change_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        if tx.execute(sql, params).await.map_err(pg)? == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, audit).await?;
        tx.commit().await.map_err(pg)
    }

    /// Deletes the tenant's row `id` of `table` unless one of `holders` (a query of the
    /// id, `$1`, answering whether something holds the row, and what to say) finds
    /// something (`in_use(why)`). The row is locked first and the holders read after the
    /// lock, so a writer naming the row (holding its lock, or a foreign key's) either
    /// finished before and is seen, or waits and then finds the row gone.
    pub(crate) async fn delete_unheld(
        &self,
        table: &str,
        tenant: TenantId,
        id: Uuid,
        holders: &[(&str, &str)],
        in_use: fn(&str) -> StoreError,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.query_opt(
            &format!("SELECT 1 FROM {table} WHERE tenant_id = $1 AND id = $2 FOR UPDATE"),
            &[&tenant.0, &id],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
        for (sql, why) in holders {
            let held: bool = tx.query_one(*sql, &[&id]).await.map_err(pg)?.get(0);
            if held {
                return Err(in_use(why));
            }
        }
        tx.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id])
            .await
            .map_err(pg)?;
        insert_audit(&tx, audit).await?;
        tx.commit().await.map_err(pg)
    }

    /// Every row of one of a tenant's small named tables (groups, apps), by name.
    pub(crate) async fn tenant_rows_by_name<T>(
        &self,
        cols: &str,
        table: &str,
        tenant: TenantId,
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {cols} FROM {table} WHERE tenant_id = $1 ORDER BY name"
            ))
            .await
            .map_err(pg)?;
        c.query(&st, &[&tenant.0])
            .await
            .map_err(pg)?
            .iter()
            .map(map)
            .collect()
    }
}

const APP_COLS: &str = "a.id, a.name, a.kind, a.description, a.logo_url, a.scopes, \
     a.secret_version, a.created_at, a.updated_at, a.webhook_url, a.webhook_events, \
     a.entry_url";
/// Columns after `APP_COLS` start here.
const APP_COLS_END: usize = 12;

fn app_from_row(r: &Row) -> StoreResult<App> {
    Ok(App {
        id: AppId(r.get(0)),
        name: r.get(1),
        kind: enum_col(r, 2, AppKind::parse)?,
        description: r.get(3),
        logo_url: r.get(4),
        scopes: from_json_text(r.get(5))?,
        secret_version: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        webhook_url: r.get(9),
        webhook_events: from_json_text(r.get(10))?,
        entry_url: r.get(11),
    })
}

const DELIVERY_COLS: &str = "id, app_id, event_id, kind, status, attempts, next_attempt_at, \
     give_up_at, last_attempt_at, last_status, last_error, delivered_at, event_at, created_at";

fn delivery_from_row(r: &Row) -> StoreResult<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: DeliveryId(r.get(0)),
        app_id: AppId(r.get(1)),
        event_id: r.get(2),
        kind: r.get(3),
        status: enum_col(r, 4, DeliveryStatus::parse)?,
        attempts: r.get(5),
        next_attempt_at: r.get(6),
        give_up_at: r.get(7),
        last_attempt_at: r.get(8),
        last_status: r.get(9),
        last_error: r.get(10),
        delivered_at: r.get(11),
        event_at: r.get(12),
        created_at: r.get(13),
    })
}

const GROUP_COLS: &str = "id, name, grants, created_at, updated_at";

fn group_from_row(r: &Row) -> StoreResult<AdminGroup> {
    Ok(AdminGroup {
        id: AdminGroupId(r.get(0)),
        name: r.get(1),
        grants: from_json_text(r.get(2))?,
        created_at: r.get(3),
        updated_at: r.get(4),
    })
}

/// Every department and tag a group grants exists in the tenant.
async fn check_group_refs<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    grants: &Grants,
) -> StoreResult<()> {
    let (departments, tags) = granted_ids(grants);
    check_refs(c, "departments", tenant, &departments, "departments").await?;
    check_refs(c, "tags", tenant, &tags, "tags").await
}

/// Makes changes to the shape of one tenant's department tree take turns (until the
/// transaction ends): two crossing moves cannot make a cycle, and a department added
/// under one being moved deeper is judged against where it ends up.
async fn lock_departments<C: GenericClient>(c: &C, tenant: TenantId) -> StoreResult<()> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('departments:' || $1::uuid::text, 0))",
        &[&tenant.0],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The tenant's departments, by id.
async fn departments_of<C: GenericClient>(c: &C, tenant: TenantId) -> StoreResult<Vec<Department>> {
    let st = c
        .prepare_cached(
            "SELECT id, name, parent_id, created_at FROM departments WHERE tenant_id = $1 \
             ORDER BY id",
        )
        .await
        .map_err(pg)?;
    Ok(c.query(&st, &[&tenant.0])
        .await
        .map_err(pg)?
        .iter()
        .map(|r| Department {
            id: DepartmentId(r.get(0)),
            name: r.get(1),
            parent_id: r.get::<_, Option<Uuid>>(2).map(DepartmentId),
            created_at: r.get(3),
        })
        .collect())
}

pub(crate) async fn check_refs<C: GenericClient>(
    c: &C,
    table: &str,
    tenant: TenantId,
    ids: &[Uuid],
    field: &'static str,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1 AND id = ANY($2)");
    let st = c.prepare_cached(&sql).await.map_err(pg)?;
    let n: i64 = c
        .query_one(&st, &[&tenant.0, &ids])
        .await
        .map_err(pg)?
        .get(0);
    if n as usize != ids.len() {
        return Err(StoreError::InvalidReference {
            field,
            detail: format!("one or more {field} do not exist"),
        });
    }
    Ok(())
}

async fn check_user_refs<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    departments: &[DepartmentId],
    tags: &[TagId],
) -> StoreResult<()> {
    let d: Vec<Uuid> = dedup(departments).into_iter().map(|x| x.0).collect();
    let t: Vec<Uuid> = dedup(tags).into_iter().map(|x| x.0).collect();
    check_refs(c, "departments", tenant, &d, "department_ids").await?;
    check_refs(c, "tags", tenant, &t, "tag_ids").await
}

pub(crate) const TENANT_COLS: &str =
    "id, name, kind, edition, timezone, settings, created_at, group_id";

pub(crate) fn tenant_from_row(row: &Row) -> StoreResult<Tenant> {
    let settings: serde_json::Value = row.try_get(5).map_err(pg)?;
    Ok(Tenant {
        id: TenantId(row.try_get(0).map_err(pg)?),
        name: row.try_get(1).map_err(pg)?,
        kind: enum_col(row, 2, TenantKind::parse)?,
        edition: enum_col(row, 3, Edition::parse)?,
        timezone: row.try_get(4).map_err(pg)?,
        settings: serde_json::from_value(settings).map_err(StoreError::backend)?,
        created_at: row.try_get(6).map_err(pg)?,
        group_id: row
            .try_get::<_, Option<Uuid>>(7)
            .map_err(pg)?
            .map(TenantGroupId),
    })
}

pub(crate) async fn load_tenant<C: GenericClient>(c: &C, id: TenantId) -> StoreResult<Tenant> {
    let st = c
        .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
        .await
        .map_err(pg)?;
    let row = c
        .query_opt(&st, &[&id.0])
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    tenant_from_row(&row)
}

pub(crate) const USER_COLS: &str =
    "id, name, number, phone, id_last4, identity, status, created_at, updated_at";

pub(crate) fn user_from_row(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: UserId(row.try_get(0).map_err(pg)?),
        name: row.try_get(1).map_err(pg)?,
        number: row.try_get(2).map_err(pg)?,
        phone: row.try_get(3).map_err(pg)?,
        id_last4: row.try_get(4).map_err(pg)?,
        identity: row.try_get(5).map_err(pg)?,
        status: enum_col(row, 6, UserStatus::parse)?,
        department_ids: Vec::new(),
        tag_ids: Vec::new(),
        created_at: row.try_get(7).map_err(pg)?,
        updated_at: row.try_get(8).map_err(pg)?,
    })
}

async fn attach_memberships<C: GenericClient>(c: &C, users: &mut [User]) -> StoreResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = users.iter().map(|u| u.id.0).collect();
    let index: std::collections::HashMap<Uuid, usize> =
        users.iter().enumerate().map(|(i, u)| (u.id.0, i)).collect();
    let st = c
        .prepare_cached(
            "SELECT user_id, department_id FROM user_departments WHERE user_id = ANY($1) \
             ORDER BY user_id, department_id",
        )
        .await
        .map_err(pg)?;
    for row in c.query(&st, &[&ids]).await.map_err(pg)? {
        if let Some(&i) = index.get(&row.get::<_, Uuid>(0)) {
            users[i].department_ids.push(DepartmentId(row.get(1)));
        }
    }
    let st = c
        .prepare_cached(
            "SELECT user_id, tag_id FROM user_tags WHERE user_id = ANY($1) ORDER BY user_id, tag_id",
        )
        .await
        .map_err(pg)?;
    for row in c.query(&st, &[&ids]).await.map_err(pg)? {
        if let Some(&i) = index.get(&row.get::<_, Uuid>(0)) {
            users[i].tag_ids.push(TagId(row.get(1)));
        }
    }
    Ok(())
}

pub(crate) async fn load_user<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    id: UserId,
) -> StoreResult<User> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .await
        .map_err(pg)?;
    let row = c
        .query_opt(&st, &[&tenant.0, &id.0])
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    let mut users = vec![user_from_row(&row)?];
    attach_memberships(c, &mut users).await?;
    Ok(users.remove(0))
}

async fn set_departments<C: GenericClient>(
    c: &C,
    user: UserId,
    ids: &[DepartmentId],
) -> StoreResult<()> {
    let ids: Vec<Uuid> = dedup(ids).into_iter().map(|d| d.0).collect();
    c.execute(
        "DELETE FROM user_departments WHERE user_id = $1",
        &[&user.0],
    )
    .await
    .map_err(pg)?;
    c.execute(
        "INSERT INTO user_departments (user_id, department_id) SELECT $1, unnest($2::uuid[])",
        &[&user.0, &ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn set_tags<C: GenericClient>(c: &C, user: UserId, ids: &[TagId]) -> StoreResult<()> {
    let ids: Vec<Uuid> = dedup(ids).into_iter().map(|d| d.0).collect();
    c.execute("DELETE FROM user_tags WHERE user_id = $1", &[&user.0])
        .await
        .map_err(pg)?;
    c.execute(
        "INSERT INTO user_tags (user_id, tag_id) SELECT $1, unnest($2::uuid[])",
        &[&user.0, &ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(crate) async fn insert_user<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    u: &NewUser,
    now: Timestamp,
) -> StoreResult<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO users (id, tenant_id, name, number, phone, id_hash, id_last4, identity, \
             status, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'active',$9,$9)",
        )
        .await
        .map_err(pg)?;
    c.execute(
        &st,
        &[
            &u.id.0,
            &tenant.0,
            &u.name,
            &u.number,
            &u.phone,
            &u.id_number.as_ref().map(|i| i.hash.to_vec()),
            &u.id_number.as_ref().map(|i| i.last4.clone()),
            &u.identity,
            &now,
        ],
    )
    .await
    .map_err(pg)?;
    set_departments(c, u.id, &u.department_ids).await?;
    set_tags(c, u.id, &u.tag_ids).await
}

fn like_pattern(q: &str) -> String {
    q.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[async_trait]
impl Store for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn insert_root_token_if_none(&self, token: NewToken) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO tokens (hash, kind, tenant_id, subject_id, created_at) \
                 VALUES ($1, 'root', NULL, NULL, $2) ON CONFLICT (kind) WHERE kind = 'root' \
                 DO NOTHING",
                &[&&token.hash[..], &token.created_at],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn lookup_token(&self, hash: [u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT t.kind, t.tenant_id, t.subject_id, a.role, n.edition, g.grants, i.manages \
                 FROM tokens t \
                 LEFT JOIN admins a ON t.kind = 'admin' AND a.id = t.subject_id \
                 LEFT JOIN admin_groups g ON g.id = a.group_id \
                 LEFT JOIN users u ON t.kind = 'cardholder' AND u.id = t.subject_id \
                 AND u.status = 'active' \
                 LEFT JOIN identity_types i ON i.tenant_id = u.tenant_id AND i.name = u.identity \
                 LEFT JOIN tenants n ON n.id = t.tenant_id WHERE t.hash = $1",
            )
            .await
            .map_err(pg)?;
        let Some(row) = c.query_opt(&st, &[&&hash[..]]).await.map_err(pg)? else {
            return Ok(None);
        };
        let role: Option<&str> = row.get(3);
        let edition: Option<&str> = row.get(4);
        let grants: Option<&str> = row.get(5);
        let manages: Option<&str> = row.get(6);
        Ok(Some(TokenRecord {
            kind: enum_col(&row, 0, TokenKind::parse)?,
            tenant_id: row.get::<_, Option<Uuid>>(1).map(TenantId),
            subject_id: row.get(2),
            role: role.and_then(AdminRole::parse),
            grants: match grants {
                Some(g) => Some(from_json_text(g)?),
                None => crate::store::managed_grants(manages)?,
            },
            edition: edition.and_then(Edition::parse),
        }))
    }

    async fn insert_token(&self, token: NewToken, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        insert_token(&tx, &token).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_id: AdminId,
        admin_token: NewToken,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let settings = serde_json::to_value(&tenant.settings).map_err(StoreError::backend)?;
        tx.execute(
            &format!("INSERT INTO tenants ({TENANT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"),
            &[
                &tenant.id.0,
                &tenant.name,
                &tenant.kind.as_str(),
                &tenant.edition.as_str(),
                &tenant.timezone,
                &settings,
                &tenant.created_at,
                &tenant.group_id.map(|g| g.0),
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO admins (id, tenant_id, user_id, role, status, created_at, bound_at) \
             VALUES ($1, $2, NULL, 'super_admin', 'active', $3, $3)",
            &[&admin_id.0, &tenant.id.0, &tenant.created_at],
        )
        .await
        .map_err(pg)?;
        insert_token(&tx, &admin_token).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant> {
        let c = self.client().await?;
        load_tenant(&c, id).await
    }

    async fn update_tenant(
        &self,
        id: TenantId,
        timezone: Option<String>,
        settings: Option<TenantSettings>,
        audit: Audit,
    ) -> StoreResult<Tenant> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&id.0])
            .await
            .map_err(pg)?;
        let mut t = load_tenant(&tx, id).await?;
        if let Some(tz) = timezone {
            t.timezone = tz;
        }
        if let Some(s) = settings {
            t.settings = s;
        }
        let settings = serde_json::to_value(&t.settings).map_err(StoreError::backend)?;
        tx.execute(
            "UPDATE tenants SET timezone = $1, settings = $2 WHERE id = $3",
            &[&t.timezone, &settings, &id.0],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(t)
    }

    async fn create_admin(&self, admin: NewAdmin, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_refs(&tx, "users", admin.tenant_id, &[admin.user_id.0], "user_id").await?;
        if let Some(group) = admin.group_id {
            check_refs(&tx, "admin_groups", admin.tenant_id, &[group.0], "group_id").await?;
        }
        // Lock the user row so two concurrent grants for one user cannot both pass.
        tx.execute(
            "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
            &[&admin.user_id.0],
        )
        .await
        .map_err(pg)?;
        let already: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM admins WHERE user_id = $1)",
                &[&admin.user_id.0],
            )
            .await
            .map_err(pg)?
            .get(0);
        if already {
            return Err(StoreError::conflict(
                "already_admin",
                Some("user_id"),
                "this user already is (or is being bound as) an admin",
            ));
        }
        tx.execute(
            "INSERT INTO admins (id, tenant_id, user_id, role, group_id, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
            &[
                &admin.id.0,
                &admin.tenant_id.0,
                &admin.user_id.0,
                &admin.role.as_str(),
                &admin.group_id.map(|g| g.0),
                &admin.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO admin_bindings (hash, admin_id, expires_at) VALUES ($1, $2, $3)",
            &[&&admin.binding_hash[..], &admin.id.0, &admin.expires_at],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn bind_admin(
        &self,
        binding_hash: [u8; 32],
        mut token: NewToken,
        now: Timestamp,
        opener: Option<(TenantId, UserId)>,
        mut audit: Audit,
    ) -> StoreResult<(TenantId, AdminId)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT b.admin_id, b.expires_at, b.used_at, a.tenant_id, a.user_id \
                 FROM admin_bindings b JOIN admins a ON a.id = b.admin_id WHERE b.hash = $1 \
                 FOR UPDATE OF b",
                &[&&binding_hash[..]],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        let expires: Timestamp = row.get(1);
        let used: Option<Timestamp> = row.get(2);
        if used.is_some() || now >= expires {
            return Err(StoreError::Gone);
        }
        let (admin, tenant) = (AdminId(row.get(0)), TenantId(row.get(3)));
        if let Some((t, u)) = opener {
            if t != tenant || row.get::<_, Option<Uuid>>(4) != Some(u.0) {
                return Err(binding_not_yours());
            }
        }
        tx.execute(
            "UPDATE admin_bindings SET used_at = $1 WHERE hash = $2",
            &[&now, &&binding_hash[..]],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE admins SET status = 'active', bound_at = $1 WHERE id = $2",
            &[&now, &admin.0],
        )
        .await
        .map_err(pg)?;
        token.tenant_id = Some(tenant);
        token.subject_id = Some(admin.0);
        insert_token(&tx, &token).await?;
        audit.tenant_id = Some(tenant);
        audit.target_id = admin.to_string();
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok((tenant, admin))
    }

    async fn list_admins(
        &self,
        tenant: TenantId,
        page: PageReq<AdminId>,
    ) -> StoreResult<Page<Admin, AdminId>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, user_id, role, status, created_at, bound_at, group_id FROM admins \
                 WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
            )
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &tenant.0,
                    &page.after.map(|a| a.0),
                    &(page.limit as i64 + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let admins = rows
            .iter()
            .map(|r| {
                Ok(Admin {
                    id: AdminId(r.get(0)),
                    user_id: r.get::<_, Option<Uuid>>(1).map(UserId),
                    role: enum_col(r, 2, AdminRole::parse)?,
                    group_id: r.get::<_, Option<Uuid>>(6).map(AdminGroupId),
                    status: enum_col(r, 3, AdminStatus::parse)?,
                    created_at: r.get(4),
                    bound_at: r.get(5),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(admins, page.limit, |a| a.id))
    }

    async fn delete_admin(&self, tenant: TenantId, id: AdminId, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Lock every active super admin of the tenant: two concurrent removals of the
        // last two must not both pass the count below.
        let supers = tx
            .query(
                "SELECT id FROM admins WHERE tenant_id = $1 AND role = 'super_admin' \
                 AND status = 'active' ORDER BY id FOR UPDATE",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT role, status FROM admins WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        let (role, status): (&str, &str) = (row.get(0), row.get(1));
        if role == "super_admin" && status == "active" && supers.len() <= 1 {
            return Err(StoreError::conflict(
                "last_super_admin",
                None,
                "a tenant keeps at least one super admin",
            ));
        }
        tx.execute(
            "DELETE FROM tokens WHERE kind = 'admin' AND subject_id = $1",
            &[&id.0],
        )
        .await
        .map_err(pg)?;
        tx.execute("DELETE FROM admins WHERE id = $1", &[&id.0])
            .await
            .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn create_admin_group(
        &self,
        tenant: TenantId,
        group: AdminGroup,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_group_refs(&tx, tenant, &group.grants).await?;
        tx.execute(
            "INSERT INTO admin_groups (id, tenant_id, name, grants, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &group.id.0,
                &tenant.0,
                &group.name,
                &to_json_text(&group.grants)?,
                &group.created_at,
                &group.updated_at,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_admin_groups(&self, tenant: TenantId) -> StoreResult<Vec<AdminGroup>> {
        self.tenant_rows_by_name(GROUP_COLS, "admin_groups", tenant, group_from_row)
            .await
    }

    async fn get_admin_group(&self, tenant: TenantId, id: AdminGroupId) -> StoreResult<AdminGroup> {
        self.tenant_row(GROUP_COLS, "admin_groups", tenant, id.0, group_from_row)
            .await
    }

    async fn update_admin_group(
        &self,
        tenant: TenantId,
        group: AdminGroup,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_group_refs(&tx, tenant, &group.grants).await?;
        let n = tx
            .execute(
                "UPDATE admin_groups SET name = $3, grants = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2",
                &[
                    &tenant.0,
                    &group.id.0,
                    &group.name,
                    &to_json_text(&group.grants)?,
                    &group.updated_at,
                ],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn delete_admin_group(
        &self,
        tenant: TenantId,
        id: AdminGroupId,
        audit: Audit,
    ) -> StoreResult<()> {
        // The row lock makes an admin being added to the group wait for this to finish
        // (its foreign key check locks the group's key), then fail on the missing group.
        self.delete_unheld(
            "admin_groups",
            tenant,
            id.0,
            &[(
                "SELECT EXISTS (SELECT 1 FROM admins WHERE group_id = $1)",
                "",
            )],
            |_| group_in_use(),
            &audit,
        )
        .await
    }

    async fn create_app(&self, tenant: TenantId, app: App, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(
            "INSERT INTO apps (id, tenant_id, name, kind, description, logo_url, scopes, \
             secret_version, created_at, updated_at, webhook_url, webhook_events, entry_url) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
            &[
                &app.id.0,
                &tenant.0,
                &app.name,
                &app.kind.as_str(),
                &app.description,
                &app.logo_url,
                &to_json_text(&app.scopes)?,
                &app.secret_version,
                &app.created_at,
                &app.updated_at,
                &app.webhook_url,
                &to_json_text(&app.webhook_events)?,
                &app.entry_url,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_apps(&self, tenant: TenantId) -> StoreResult<Vec<App>> {
        self.tenant_rows_by_name(APP_COLS, "apps a", tenant, app_from_row)
            .await
    }

    async fn get_app(&self, tenant: TenantId, id: AppId) -> StoreResult<App> {
        self.tenant_row(APP_COLS, "apps a", tenant, id.0, app_from_row)
            .await
    }

    async fn update_app(&self, tenant: TenantId, app: App, audit: Audit) -> StoreResult<()> {
        self.change_one(
            "UPDATE apps SET name = $3, description = $4, logo_url = $5, scopes = $6, \
             secret_version = $7, updated_at = $8, webhook_url = $9, webhook_events = $10, \
             entry_url = $11 WHERE tenant_id = $1 AND id = $2",
            &[
                &tenant.0,
                &app.id.0,
                &app.name,
                &app.description,
                &app.logo_url,
                &to_json_text(&app.scopes)?,
                &app.secret_version,
                &app.updated_at,
                &app.webhook_url,
                &to_json_text(&app.webhook_events)?,
                &app.entry_url,
            ],
            &audit,
        )
        .await
    }

    async fn delete_app(&self, tenant: TenantId, id: AppId, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        for table in ["app_nonces", "webhook_deliveries"] {
            tx.execute(&format!("DELETE FROM {table} WHERE app_id = $1"), &[&id.0])
                .await
                .map_err(pg)?;
        }
        let n = tx
            .execute(
                "DELETE FROM apps WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn put_app_launch(
        &self,
        app: AppId,
        tenant: TenantId,
        user: UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO app_launches (hash, app_id, user_id, tenant_id, expires_at) \
             VALUES ($1,$2,$3,$4,$5) ON CONFLICT (app_id, user_id) DO UPDATE \
             SET hash = excluded.hash, expires_at = excluded.expires_at",
            &[&&hash[..], &app.0, &user.0, &tenant.0, &expires_at],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn redeem_app_launch(
        &self,
        app: AppId,
        hash: [u8; 32],
        now: Timestamp,
    ) -> StoreResult<(TenantId, UserId)> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM app_launches WHERE hash = $1 AND app_id = $2 AND expires_at > $3 \
                 RETURNING tenant_id, user_id",
                &[&&hash[..], &app.0, &now],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::Gone)?;
        Ok((TenantId(row.get(0)), UserId(row.get(1))))
    }

    async fn lookup_app(&self, id: AppId) -> StoreResult<Option<(TenantId, Edition, App)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {APP_COLS}, a.tenant_id, n.edition FROM apps a \
                 JOIN tenants n ON n.id = a.tenant_id WHERE a.id = $1"
            ))
            .await
            .map_err(pg)?;
        let Some(row) = c.query_opt(&st, &[&id.0]).await.map_err(pg)? else {
            return Ok(None);
        };
        let app = app_from_row(&row)?;
        let edition = enum_col(&row, APP_COLS_END + 1, Edition::parse)?;
        Ok(Some((TenantId(row.get(APP_COLS_END)), edition, app)))
    }

    async fn use_app_nonce(&self, app: AppId, nonce: String, at: Timestamp) -> StoreResult<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO app_nonces (app_id, nonce, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg)?;
        Ok(c.execute(&st, &[&app.0, &nonce, &at]).await.map_err(pg)? == 1)
    }

    async fn purge_app_nonces(&self, before: Timestamp) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM app_nonces WHERE seen_at < $1", &[&before])
            .await
            .map_err(pg)
    }

    async fn webhook_subscriptions(&self) -> StoreResult<Vec<WebhookSubscription>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT a.tenant_id, n.edition, a.id, a.webhook_events, a.scopes, a.webhook_url, \
                 a.secret_version FROM apps a \
                 JOIN tenants n ON n.id = a.tenant_id WHERE a.webhook_url IS NOT NULL",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(WebhookSubscription {
                    tenant: TenantId(r.get(0)),
                    edition: enum_col(r, 1, Edition::parse)?,
                    app: AppId(r.get(2)),
                    events: from_json_text(r.get(3))?,
                    scopes: from_json_text(r.get(4))?,
                    url: r.get(5),
                    secret_version: r.get(6),
                })
            })
            .collect()
    }

    async fn enqueue_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<Vec<DeliveryId>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut cols: (Vec<Uuid>, Vec<Uuid>, Vec<Uuid>, Vec<Uuid>) = Default::default();
        let mut text: (Vec<String>, Vec<String>) = Default::default();
        let mut at: (Vec<Timestamp>, Vec<Timestamp>, Vec<Timestamp>) = Default::default();
        let mut leases: Vec<Option<Timestamp>> = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            leases.push(d.lease_until);
            cols.0.push(d.id.0);
            cols.1.push(d.tenant.0);
            cols.2.push(d.app.0);
            cols.3.push(d.event_id);
            text.0.push(d.kind);
            text.1.push(d.payload);
            at.0.push(d.event_at);
            at.1.push(d.give_up_at);
            at.2.push(d.created_at);
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO webhook_deliveries (id, tenant_id, app_id, event_id, kind, payload, \
                 event_at, give_up_at, created_at, next_attempt_at, attempts, status) \
                 SELECT id, t, a, e, k, p, ea, g, ca, COALESCE(l, ca), \
                 CASE WHEN l IS NULL THEN 0 ELSE 1 END, 'pending' FROM \
                 unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
                 $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) \
                 AS d(id, t, a, e, k, p, ea, g, ca, l) \
                 ON CONFLICT (app_id, event_id) DO NOTHING RETURNING id",
            )
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &cols.0, &cols.1, &cols.2, &cols.3, &text.0, &text.1, &at.0, &at.1, &at.2,
                    &leases,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| DeliveryId(r.get(0))).collect())
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
        per_app: usize,
        skip: Vec<AppId>,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let skip: Vec<Uuid> = skip.into_iter().map(|a| a.0).collect();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH ranked AS (SELECT id, row_number() OVER \
                   (PARTITION BY app_id ORDER BY next_attempt_at) AS n \
                   FROM webhook_deliveries \
                   WHERE status = 'pending' AND next_attempt_at <= $1 \
                   AND NOT (app_id = ANY($4))), \
                 due AS (SELECT d.id FROM webhook_deliveries d JOIN ranked r ON r.id = d.id \
                   WHERE r.n <= $5 AND d.status = 'pending' AND d.next_attempt_at <= $1 \
                   ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED), \
                 taken AS (UPDATE webhook_deliveries d \
                   SET attempts = d.attempts + 1, next_attempt_at = $2 \
                   FROM due WHERE d.id = due.id \
                   RETURNING d.id, d.tenant_id, d.app_id, d.event_id, d.kind, d.payload, \
                   d.event_at, d.give_up_at, d.created_at, d.attempts) \
                 SELECT t.*, a.webhook_url, a.secret_version FROM taken t \
                 JOIN apps a ON a.id = t.app_id",
            )
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &now,
                    &lease_until,
                    &(limit as i64),
                    &skip,
                    &(per_app as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| ClaimedDelivery {
                delivery: NewDelivery {
                    id: DeliveryId(r.get(0)),
                    tenant: TenantId(r.get(1)),
                    app: AppId(r.get(2)),
                    event_id: r.get(3),
                    kind: r.get(4),
                    payload: r.get(5),
                    event_at: r.get(6),
                    give_up_at: r.get(7),
                    created_at: r.get(8),
                    lease_until: Some(lease_until),
                },
                attempt: r.get(9),
                // An app whose address was removed after the event: the attempt fails
                // and the retries wait for an address.
                url: r.get::<_, Option<String>>(10).unwrap_or_default(),
                secret_version: r.get(11),
            })
            .collect())
    }

    async fn finish_deliveries(&self, outcomes: Vec<DeliveryOutcome>) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut attempts = Vec::with_capacity(outcomes.len());
        let mut statuses = Vec::with_capacity(outcomes.len());
        let mut at = Vec::with_capacity(outcomes.len());
        let mut retry = Vec::with_capacity(outcomes.len());
        let mut http = Vec::with_capacity(outcomes.len());
        let mut errors = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            ids.push(o.id.0);
            attempts.push(o.attempt);
            statuses.push(o.status.as_str());
            at.push(o.at);
            retry.push(o.retry_at);
            http.push(o.http_status);
            errors.push(o.error);
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE webhook_deliveries d SET status = o.s, last_attempt_at = o.at, \
                 last_status = o.h, last_error = o.e, next_attempt_at = o.r, \
                 delivered_at = CASE WHEN o.s = 'delivered' THEN o.at END \
                 FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], \
                 $5::timestamptz[], $6::int4[], $7::text[]) AS o(id, n, s, at, r, h, e) \
                 WHERE d.id = o.id AND d.attempts = o.n AND d.status = 'pending'",
            )
            .await
            .map_err(pg)?;
        c.execute(
            &st,
            &[&ids, &attempts, &statuses, &at, &retry, &http, &errors],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        tenant: TenantId,
        app: AppId,
        status: Option<DeliveryStatus>,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> StoreResult<Page<WebhookDelivery, DeliveryId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries \
                     WHERE tenant_id = $1 AND app_id = $2 \
                     AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR id < $4) \
                     ORDER BY id DESC LIMIT $5"
                ),
                &[
                    &tenant.0,
                    &app.0,
                    &status.map(DeliveryStatus::as_str),
                    &after.map(|a| a.0),
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let items = rows
            .iter()
            .map(delivery_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |d| d.id))
    }

    async fn redeliver(
        &self,
        tenant: TenantId,
        app: AppId,
        id: DeliveryId,
        now: Timestamp,
        give_up_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<WebhookDelivery> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, \
                     give_up_at = $5, delivered_at = NULL \
                     WHERE tenant_id = $1 AND app_id = $2 AND id = $3 RETURNING {DELIVERY_COLS}"
                ),
                &[&tenant.0, &app.0, &id.0, &now, &give_up_at],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        delivery_from_row(&row)
    }

    async fn webhook_backlog(&self) -> StoreResult<(u64, Option<Timestamp>)> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT count(*), min(created_at) FROM webhook_deliveries \
                 WHERE status = 'pending'",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok((row.get::<_, i64>(0).unsigned_abs(), row.get(1)))
    }

    async fn purge_deliveries(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE created_at < $1 AND status <> 'pending' LIMIT $2)",
            &[&before, &(limit as i64)],
        )
        .await
        .map_err(pg)
    }

    async fn create_department(
        &self,
        tenant: TenantId,
        dept: Department,
        max_depth: usize,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        if dept.parent_id.is_some() {
            lock_departments(&tx, tenant).await?;
            let all = departments_of(&tx, tenant).await?;
            crate::store::department_fits(&all, dept.id, dept.parent_id, max_depth)?;
        }
        tx.execute(
            "INSERT INTO departments (id, tenant_id, parent_id, name, created_at) \
             VALUES ($1,$2,$3,$4,$5)",
            &[
                &dept.id.0,
                &tenant.0,
                &dept.parent_id.map(|p| p.0),
                &dept.name,
                &dept.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_departments(&self, tenant: TenantId) -> StoreResult<Vec<Department>> {
        let c = self.client().await?;
        departments_of(&c, tenant).await
    }

    async fn update_department(
        &self,
        tenant: TenantId,
        id: DepartmentId,
        name: String,
        parent: Option<DepartmentId>,
        max_depth: usize,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        lock_departments(&tx, tenant).await?;
        let all = departments_of(&tx, tenant).await?;
        crate::store::department_move_allowed(&all, id, parent, max_depth)?;
        if tx
            .execute(
                "UPDATE departments SET name = $3, parent_id = $4 WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &id.0, &name, &parent.map(|p| p.0)],
            )
            .await
            .map_err(pg)?
            == 0
        {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn delete_department(
        &self,
        tenant: TenantId,
        id: DepartmentId,
        audit: Audit,
    ) -> StoreResult<()> {
        let holders = [
            (
                "SELECT EXISTS (SELECT 1 FROM departments WHERE parent_id = $1)",
                "it has sub-departments",
            ),
            (
                "SELECT EXISTS (SELECT 1 FROM user_departments WHERE department_id = $1)",
                "people belong to it",
            ),
            (
                "SELECT EXISTS (SELECT 1 FROM admin_groups WHERE tenant_id = \
                 (SELECT tenant_id FROM departments WHERE id = $1) \
                 AND strpos(grants, $1::uuid::text) > 0)",
                "an admin group grants it",
            ),
            (
                "SELECT EXISTS (SELECT 1 FROM identity_types WHERE tenant_id = \
                 (SELECT tenant_id FROM departments WHERE id = $1) \
                 AND strpos(manages, $1::uuid::text) > 0)",
                "an identity type manages it",
            ),
        ];
        self.delete_unheld(
            "departments",
            tenant,
            id.0,
            &holders,
            crate::store::department_in_use,
            &audit,
        )
        .await
    }

    async fn create_tag(&self, tenant: TenantId, tag: Tag, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(
            "INSERT INTO tags (id, tenant_id, name, created_at) VALUES ($1,$2,$3,$4)",
            &[&tag.id.0, &tenant.0, &tag.name, &tag.created_at],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_tags(&self, tenant: TenantId) -> StoreResult<Vec<Tag>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, name, created_at FROM tags WHERE tenant_id = $1 ORDER BY name",
            )
            .await
            .map_err(pg)?;
        Ok(c.query(&st, &[&tenant.0])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Tag {
                id: TagId(r.get(0)),
                name: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    async fn rename_tag(
        &self,
        tenant: TenantId,
        id: TagId,
        name: String,
        audit: Audit,
    ) -> StoreResult<Tag> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "UPDATE tags SET name = $3 WHERE tenant_id = $1 AND id = $2 RETURNING created_at",
                &[&tenant.0, &id.0, &name],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Tag {
            id,
            name,
            created_at: row.get(0),
        })
    }

    async fn delete_tag(&self, tenant: TenantId, id: TagId, audit: Audit) -> StoreResult<()> {
        let holders = [
            (
                "SELECT EXISTS (SELECT 1 FROM user_tags WHERE tag_id = $1)",
                "people carry it",
            ),
            (
                "SELECT EXISTS (SELECT 1 FROM admin_groups WHERE tenant_id = \
                 (SELECT tenant_id FROM tags WHERE id = $1) AND strpos(grants, $1::uuid::text) > 0)",
                "an admin group grants it",
            ),
        ];
        self.delete_unheld(
            "tags",
            tenant,
            id.0,
            &holders,
            crate::store::tag_in_use,
            &audit,
        )
        .await
    }

    async fn create_user(
        &self,
        tenant: TenantId,
        user: NewUser,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<User> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_user_refs(&tx, tenant, &user.department_ids, &user.tag_ids).await?;
        insert_user(&tx, tenant, &user, now).await?;
        insert_audit(&tx, &audit).await?;
        let created = load_user(&tx, tenant, user.id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> StoreResult<User> {
        let c = self.client().await?;
        load_user(&c, tenant, id).await
    }

    async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<User> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        if let Some(was) = &patch.expect {
            let user = load_user(&tx, tenant, id).await?;
            check_unchanged(&[user], &[(id, was.clone())])?;
        }
        check_user_refs(
            &tx,
            tenant,
            patch.department_ids.as_deref().unwrap_or_default(),
            patch.tag_ids.as_deref().unwrap_or_default(),
        )
        .await?;
        let (set_phone, phone) = (patch.phone.is_some(), patch.phone.clone().flatten());
        let (set_idn, idn) = (patch.id_number.is_some(), patch.id_number.clone().flatten());
        let (set_identity, identity) = (patch.identity.is_some(), patch.identity.clone().flatten());
        let params: [&(dyn ToSql + Sync); 13] = [
            &id.0,
            &patch.name,
            &patch.number,
            &set_phone,
            &phone,
            &set_idn,
            &idn.as_ref().map(|i| i.hash.to_vec()),
            &idn.as_ref().map(|i| i.last4.clone()),
            &set_identity,
            &identity,
            &patch.status.map(|s| s.as_str()),
            &now,
            &tenant.0,
        ];
        tx.execute(
            "UPDATE users SET name = coalesce($2, name), number = coalesce($3, number), \
             phone = CASE WHEN $4 THEN $5 ELSE phone END, \
             id_hash = CASE WHEN $6 THEN $7 ELSE id_hash END, \
             id_last4 = CASE WHEN $6 THEN $8 ELSE id_last4 END, \
             identity = CASE WHEN $9 THEN $10 ELSE identity END, \
             status = coalesce($11, status), updated_at = $12 WHERE id = $1 AND tenant_id = $13",
            &params,
        )
        .await
        .map_err(pg)?;
        if let Some(d) = &patch.department_ids {
            set_departments(&tx, id, d).await?;
        }
        if let Some(t) = &patch.tag_ids {
            set_tags(&tx, id, t).await?;
        }
        insert_audit(&tx, &audit).await?;
        let user = load_user(&tx, tenant, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(user)
    }

    async fn delete_user(&self, tenant: TenantId, id: UserId, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locks the user row; one round trip answers both guards.
        let row = tx
            .query_opt(
                "SELECT EXISTS (SELECT 1 FROM admins WHERE user_id = u.id), \
                 EXISTS (SELECT 1 FROM wallets WHERE user_id = u.id) \
                 FROM users u WHERE u.tenant_id = $1 AND u.id = $2 FOR UPDATE",
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        check_deletable(row.get(0), row.get(1))?;
        tx.execute(
            "DELETE FROM tokens WHERE kind = 'cardholder' AND subject_id = $1",
            &[&id.0],
        )
        .await
        .map_err(pg)?;
        // The record leaves its person (a person left with one record is dissolved).
        let people: Vec<uuid::Uuid> = tx
            .query(
                "DELETE FROM person_links WHERE user_id = $1 RETURNING person_id",
                &[&id.0],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        crate::postgres_persons::dissolve_lonely(&tx, &people).await?;
        tx.execute("DELETE FROM users WHERE id = $1", &[&id.0])
            .await
            .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        filter: UserFilter,
        page: PageReq<UserId>,
    ) -> StoreResult<Page<User, UserId>> {
        let c = self.client().await?;
        let q = filter.q.as_deref().map(like_pattern);
        let within_departments: Option<Vec<Uuid>> = filter
            .within
            .as_ref()
            .map(|w| w.department_ids.iter().map(|d| d.0).collect());
        let within_tags: Option<Vec<Uuid>> = filter
            .within
            .as_ref()
            .map(|w| w.tag_ids.iter().map(|t| t.0).collect());
        let ids: Option<Vec<Uuid>> = filter
            .ids
            .as_ref()
            .map(|ids| ids.iter().map(|u| u.0).collect());
        let st = c
            .prepare_cached(&format!(
                "SELECT {USER_COLS} FROM users u WHERE tenant_id = $1 \
                 AND ($2::uuid IS NULL OR id > $2) \
                 AND ($3::text IS NULL OR status = $3) \
                 AND ($4::text IS NULL OR name LIKE '%' || $4 || '%' OR number LIKE $4 || '%') \
                 AND ($5::uuid IS NULL OR EXISTS (SELECT 1 FROM user_departments m \
                      WHERE m.user_id = u.id AND m.department_id = $5)) \
                 AND ($6::uuid IS NULL OR EXISTS (SELECT 1 FROM user_tags m \
                      WHERE m.user_id = u.id AND m.tag_id = $6)) \
                 AND ($8::uuid[] IS NULL \
                      OR EXISTS (SELECT 1 FROM user_departments m \
                          WHERE m.user_id = u.id AND m.department_id = ANY($8)) \
                      OR EXISTS (SELECT 1 FROM user_tags m \
                          WHERE m.user_id = u.id AND m.tag_id = ANY($9))) \
                 AND ($10::uuid[] IS NULL OR id = ANY($10)) \
                 ORDER BY id LIMIT $7"
            ))
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &tenant.0,
                    &page.after.map(|a| a.0),
                    &filter.status.map(|s| s.as_str()),
                    &q,
                    &filter.department_id.map(|d| d.0),
                    &filter.tag_id.map(|t| t.0),
                    &(page.limit as i64 + 1),
                    &within_departments,
                    &within_tags,
                    &ids,
                ],
            )
            .await
            .map_err(pg)?;
        let users = rows
            .iter()
            .map(user_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut page = paginate(users, page.limit, |u| u.id);
        attach_memberships(&c, &mut page.items).await?;
        Ok(page)
    }

    async fn batch_update_users(
        &self,
        tenant: TenantId,
        update: BatchUserUpdate,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let ids: Vec<Uuid> = dedup(&update.user_ids).into_iter().map(|u| u.0).collect();
        check_refs(&tx, "users", tenant, &ids, "user_ids").await?;
        if let Some(expect) = &update.expect {
            // Locked in id order, so that two batches over the same users cannot deadlock.
            let rows = tx
                .query(
                    &format!(
                        "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id = ANY($2) \
                         ORDER BY id FOR UPDATE"
                    ),
                    &[&tenant.0, &ids],
                )
                .await
                .map_err(pg)?;
            let mut users = rows
                .iter()
                .map(user_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            attach_memberships(&tx, &mut users).await?;
            check_unchanged(&users, expect)?;
        }
        let mut all_tags = update.add_tag_ids.clone();
        all_tags.extend(&update.remove_tag_ids);
        check_user_refs(
            &tx,
            tenant,
            update.department_ids.as_deref().unwrap_or_default(),
            &all_tags,
        )
        .await?;
        let (set_identity, identity) =
            (update.identity.is_some(), update.identity.clone().flatten());
        tx.execute(
            "UPDATE users SET status = coalesce($2, status), \
             identity = CASE WHEN $3 THEN $4 ELSE identity END, updated_at = $5 \
             WHERE id = ANY($1)",
            &[
                &ids,
                &update.status.map(|s| s.as_str()),
                &set_identity,
                &identity,
                &now,
            ],
        )
        .await
        .map_err(pg)?;
        if let Some(depts) = &update.department_ids {
            let depts: Vec<Uuid> = dedup(depts).into_iter().map(|d| d.0).collect();
            tx.execute(
                "DELETE FROM user_departments WHERE user_id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
            tx.execute(
                "INSERT INTO user_departments (user_id, department_id) \
                 SELECT u, d FROM unnest($1::uuid[]) u CROSS JOIN unnest($2::uuid[]) d",
                &[&ids, &depts],
            )
            .await
            .map_err(pg)?;
        }
        let add: Vec<Uuid> = dedup(&update.add_tag_ids)
            .into_iter()
            .map(|t| t.0)
            .collect();
        let remove: Vec<Uuid> = dedup(&update.remove_tag_ids)
            .into_iter()
            .map(|t| t.0)
            .collect();
        tx.execute(
            "INSERT INTO user_tags (user_id, tag_id) \
             SELECT u, t FROM unnest($1::uuid[]) u CROSS JOIN unnest($2::uuid[]) t \
             ON CONFLICT DO NOTHING",
            &[&ids, &add],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "DELETE FROM user_tags WHERE user_id = ANY($1) AND tag_id = ANY($2)",
            &[&ids, &remove],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(ids.len() as u64)
    }

    async fn import_users(
        &self,
        tenant: TenantId,
        rows: Vec<NewUser>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<ImportOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.batch_execute(
            "CREATE TEMP TABLE import_users (id uuid, name text, number text, phone text, \
               id_hash bytea, id_last4 text, identity text) ON COMMIT DROP; \
             CREATE TEMP TABLE import_links (number text, kind \"char\", other uuid) \
               ON COMMIT DROP;",
        )
        .await
        .map_err(pg)?;

        // Bulk-load the rows with binary COPY: one round trip for all of them.
        let sink = tx
            .copy_in("COPY import_users FROM STDIN (FORMAT binary)")
            .await
            .map_err(pg)?;
        let types = [
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BYTEA,
            Type::TEXT,
            Type::TEXT,
        ];
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
        for u in &rows {
            let hash = u.id_number.as_ref().map(|i| i.hash.to_vec());
            let last4 = u.id_number.as_ref().map(|i| i.last4.as_str());
            writer
                .as_mut()
                .write(&[
                    &u.id.0,
                    &u.name,
                    &u.number,
                    &u.phone,
                    &hash,
                    &last4,
                    &u.identity,
                ])
                .await
                .map_err(pg)?;
        }
        writer.finish().await.map_err(pg)?;

        let sink = tx
            .copy_in("COPY import_links FROM STDIN (FORMAT binary)")
            .await
            .map_err(pg)?;
        let mut writer = pin!(BinaryCopyInWriter::new(
            sink,
            &[Type::TEXT, Type::CHAR, Type::UUID]
        ));
        for u in &rows {
            for d in dedup(&u.department_ids) {
                writer
                    .as_mut()
                    .write(&[&u.number, &(b'd' as i8), &d.0])
                    .await
                    .map_err(pg)?;
            }
            for t in dedup(&u.tag_ids) {
                writer
                    .as_mut()
                    .write(&[&u.number, &(b't' as i8), &t.0])
                    .await
                    .map_err(pg)?;
            }
        }
        writer.finish().await.map_err(pg)?;

        // Upsert by number; an empty optional cell keeps what the user had.
        let counts = tx
            .query_one(
                "WITH up AS ( \
                   INSERT INTO users (id, tenant_id, name, number, phone, id_hash, id_last4, \
                     identity, status, created_at, updated_at) \
                   SELECT id, $1, name, number, phone, id_hash, id_last4, identity, 'active', $2, $2 \
                   FROM import_users \
                   ON CONFLICT (tenant_id, number) DO UPDATE SET name = EXCLUDED.name, \
                     phone = coalesce(EXCLUDED.phone, users.phone), \
                     id_hash = coalesce(EXCLUDED.id_hash, users.id_hash), \
                     id_last4 = coalesce(EXCLUDED.id_last4, users.id_last4), \
                     identity = coalesce(EXCLUDED.identity, users.identity), \
                     updated_at = EXCLUDED.updated_at \
                   RETURNING (xmax = 0) AS inserted) \
                 SELECT count(*) FILTER (WHERE inserted), count(*) FROM up",
                &[&tenant.0, &now],
            )
            .await
            .map_err(pg)?;
        let (created, imported): (i64, i64) = (counts.get(0), counts.get(1));

        // Replace memberships of the kinds a row named; leave the others alone.
        tx.execute(
            "DELETE FROM user_departments m USING users u WHERE m.user_id = u.id \
             AND u.tenant_id = $1 AND u.number IN \
             (SELECT number FROM import_links WHERE kind = 'd')",
            &[&tenant.0],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "DELETE FROM user_tags m USING users u WHERE m.user_id = u.id \
             AND u.tenant_id = $1 AND u.number IN \
             (SELECT number FROM import_links WHERE kind = 't')",
            &[&tenant.0],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO user_departments (user_id, department_id) \
             SELECT u.id, l.other FROM import_links l \
             JOIN users u ON u.tenant_id = $1 AND u.number = l.number WHERE l.kind = 'd'",
            &[&tenant.0],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO user_tags (user_id, tag_id) \
             SELECT u.id, l.other FROM import_links l \
             JOIN users u ON u.tenant_id = $1 AND u.number = l.number WHERE l.kind = 't'",
            &[&tenant.0],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(ImportOutcome {
            imported: imported as u64,
            created: created as u64,
            updated: (imported - created) as u64,
        })
    }

    async fn directory_stats(&self, tenant: TenantId) -> StoreResult<DirectoryStats> {
        let c = self.client().await?;
        let users: i64 = c
            .query_one(
                "SELECT count(*) FROM users WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?
            .get(0);
        let mut groups = Vec::new();
        for sql in [
            "SELECT status, count(*) FROM users WHERE tenant_id = $1 GROUP BY status ORDER BY status",
            "SELECT identity, count(*) FROM users WHERE tenant_id = $1 \
             GROUP BY identity ORDER BY identity NULLS FIRST",
            "SELECT m.department_id::text, count(*) FROM user_departments m \
             JOIN users u ON u.id = m.user_id WHERE u.tenant_id = $1 \
             GROUP BY m.department_id ORDER BY m.department_id::text",
        ] {
            let rows = c.query(sql, &[&tenant.0]).await.map_err(pg)?;
            groups.push(
                rows.iter()
                    .map(|r| CountBy { key: r.get(0), count: r.get::<_, i64>(1) as u64 })
                    .collect::<Vec<_>>(),
            );
        }
        let by_department = groups.pop().unwrap_or_default();
        let by_identity = groups.pop().unwrap_or_default();
        let by_status = groups.pop().unwrap_or_default();
        Ok(DirectoryStats {
            users: users as u64,
            by_status,
            by_identity,
            by_department,
        })
    }

    async fn write_audit(&self, audit: Audit) -> StoreResult<()> {
        let c = self.client().await?;
        insert_audit(&c, &audit).await
    }

    async fn list_audit(
        &self,
        tenant: Option<TenantId>,
        filter: AuditFilter,
        page: PageReq<AuditId>,
    ) -> StoreResult<Page<AuditEntry, AuditId>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, actor, action, target_type, target_id, request_id, at, detail \
                 FROM audit_log WHERE tenant_id IS NOT DISTINCT FROM $1 \
                 AND ($2::uuid IS NULL OR id < $2) \
                 AND ($3::text IS NULL OR action = $3) \
                 AND ($4::text IS NULL OR actor = $4) \
                 AND ($5::text IS NULL OR target_id = $5) \
                 AND ($6::timestamptz IS NULL OR at >= $6) \
                 AND ($7::timestamptz IS NULL OR at < $7) \
                 ORDER BY id DESC LIMIT $8",
            )
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &tenant.map(|t| t.0),
                    &page.after.map(|a| a.0),
                    &filter.action,
                    &filter.actor,
                    &filter.target_id,
                    &filter.from,
                    &filter.to,
                    &(page.limit as i64 + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let entries = rows
            .iter()
            .map(|r| AuditEntry {
                id: AuditId(r.get(0)),
                actor: r.get(1),
                action: r.get(2),
                target_type: r.get(3),
                target_id: r.get(4),
                request_id: r.get(5),
                at: r.get(6),
                detail: r.get(7),
            })
            .collect();
        Ok(paginate(entries, page.limit, |a| a.id))
    }

    async fn idem_begin(
        &self,
        scope: String,
        key: String,
        request_hash: [u8; 32],
        now: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<IdemBegin> {
        let c = self.client().await?;
        // Inserted, or taken over from a request that never finished (row locked, so two
        // retries cannot both take it).
        let inserted = c
            .execute(
                "INSERT INTO idempotency (scope, key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO UPDATE \
                 SET created_at = EXCLUDED.created_at \
                 WHERE idempotency.status IS NULL AND idempotency.created_at < $5 \
                   AND idempotency.request_hash = EXCLUDED.request_hash",
                &[&scope, &key, &&request_hash[..], &now, &stale_before],
            )
            .await
            .map_err(pg)?;
        if inserted == 1 {
            return Ok(IdemBegin::New);
        }
        let row = c
            .query_one(
                "SELECT request_hash, status, body FROM idempotency WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )
            .await
            .map_err(pg)?;
        let hash: &[u8] = row.get(0);
        let status: Option<i32> = row.get(1);
        Ok(if hash != request_hash {
            IdemBegin::Conflict
        } else if let Some(status) = status {
            IdemBegin::Replay {
                status: status as u16,
                body: row.get::<_, Option<Vec<u8>>>(2).unwrap_or_default(),
            }
        } else {
            IdemBegin::InProgress
        })
    }

    async fn idem_finish(
        &self,
        scope: String,
        key: String,
        status: u16,
        body: Vec<u8>,
    ) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE idempotency SET status = $1, body = $2 WHERE scope = $3 AND key = $4",
                &[&(status as i32), &body, &scope, &key],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn idem_abort(&self, scope: String, key: String) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM idempotency WHERE scope = $1 AND key = $2 AND status IS NULL",
                &[&scope, &key],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn purge_idempotency(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        purge_oldest(&*self.client().await?, "idempotency", before, limit).await
    }
}

/// Deletes up to `limit` rows of `table` (keyed by `(scope, key)`) created before
/// `before`, oldest first, found by the table's `created_at` index (migration V8).
pub(crate) async fn purge_oldest(
    c: &tokio_postgres::Client,
    table: &'static str,
    before: Timestamp,
    limit: usize,
) -> StoreResult<u64> {
    c.execute(
        &format!(
            "DELETE FROM {table} WHERE (scope, key) IN \
             (SELECT scope, key FROM {table} WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
        ),
        &[&before, &(limit as i64)],
    )
    .await
    .map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: &dyn ToSql) -> Vec<u8> {
        let mut w = bytes::BytesMut::new();
        v.to_sql_checked(&Type::TIMESTAMPTZ, &mut w).unwrap();
        w.to_vec()
    }

    #[test]
    fn a_pg_time_encodes_as_postgres_types_own_jiff_conversion() {
        let mut values: Vec<Timestamp> = vec![
            Timestamp::UNIX_EPOCH,
            Timestamp::MIN,
            Timestamp::MAX,
            Timestamp::new(946_684_800, 0).unwrap(),
            Timestamp::now(),
        ];
        // Around 2000-01-01 and the Unix epoch, at and beside the half microsecond.
        for base in [946_684_800_i64, 0, 1_790_000_000, -1_000_000_000] {
            for ns in [
                0,
                1,
                499,
                500,
                501,
                999,
                999_999_499,
                999_999_500,
                999_999_501,
            ] {
                values.push(Timestamp::new(base, ns).unwrap());
                values.push(Timestamp::new(base - 1, ns).unwrap());
            }
        }
        // And a spread of arbitrary instants.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 400_000_000_000) as i64 - 200_000_000_000;
            values.push(Timestamp::new(secs, (x % 1_000_000_000) as i32).unwrap());
        }
        for t in values {
            assert_eq!(encoded(&PgTime(t)), encoded(&t), "{t}");
        }
    }
}
