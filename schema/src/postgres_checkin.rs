//! The event check-in half of the PostgreSQL engine. One check-in per person and event
//! is the primary key's to hold (`ON CONFLICT DO NOTHING`, then the one that won is read);
//! a designation is read `FOR SHARE`, so a removal either lands before the check-in reads
//! it or waits for the check-in to commit.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::checkin_store::CheckinStore;
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::postgres::{check_refs, insert_audit, pg, PgStore};
use crate::postgres_money::insert_outbox;
use crate::sqlite::paginate;
use crate::wallet::{OutboxEvent, OutboxPage, PendingEvent};

const EVENT_COLS: &str = "e.id, e.name, e.code, e.starts_at, e.ends_at, e.early_minutes, \
     e.fence_lat, e.fence_lng, e.fence_radius_m, e.designated, e.created_at, e.updated_at";
/// The counts after `EVENT_COLS`.
const EVENT_COUNTS: &str = "(SELECT count(*) FROM checkin_attendees a WHERE a.event_id = e.id), \
     (SELECT count(*) FROM check_ins k WHERE k.event_id = e.id)";

fn event_row(r: &Row, counted: bool) -> CheckinEvent {
    let fence = match (
        r.get::<_, Option<f64>>(6),
        r.get::<_, Option<f64>>(7),
        r.get::<_, Option<i32>>(8),
    ) {
        (Some(latitude), Some(longitude), Some(radius_m)) => Some(Geofence {
            latitude,
            longitude,
            radius_m: radius_m.max(0) as u32,
        }),
        _ => None,
    };
    let count = |i: usize| {
        if counted {
            r.get::<_, i64>(i) as u64
        } else {
            0
        }
    };
    CheckinEvent {
        id: CheckinEventId(r.get(0)),
        name: r.get(1),
        code: r.get(2),
        starts_at: r.get(3),
        ends_at: r.get(4),
        early_minutes: r.get::<_, i32>(5).max(0) as u32,
        geofence: fence,
        designated: r.get(9),
        created_at: r.get(10),
        updated_at: r.get(11),
        attendees: count(12),
        checked_in: count(13),
    }
}

/// An event's columns bound as PostgreSQL types: `params` are $1 the tenant, $2 the id,
/// then name to `updated_at` ($3–$12), as `update_event` writes them; `create_event`
/// adds `created_at` as $13.
struct EventBinds {
    early_minutes: i32,
    latitude: Option<f64>,
    longitude: Option<f64>,
    radius_m: Option<i32>,
}

impl EventBinds {
    fn of(e: &CheckinEvent) -> Self {
        EventBinds {
            early_minutes: e.early_minutes as i32,
            latitude: e.geofence.map(|f| f.latitude),
            longitude: e.geofence.map(|f| f.longitude),
            radius_m: e.geofence.map(|f| f.radius_m as i32),
        }
    }

    fn params<'a>(
        &'a self,
        tenant: &'a TenantId,
        e: &'a CheckinEvent,
    ) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            &tenant.0,
            &e.id.0,
            &e.name,
            &e.code,
            &e.starts_at,
            &e.ends_at,
            &self.early_minutes,
            &self.latitude,
            &self.longitude,
            &self.radius_m,
            &e.designated,
            &e.updated_at,
        ]
    }
}

const CHECK_IN_COLS: &str =
    "k.id, k.event_id, k.user_id, u.name, u.number, k.at, k.method, k.distance_m";

fn check_in_row(r: &Row) -> StoreResult<CheckIn> {
    let method: String = r.get(6);
    Ok(CheckIn {
        id: CheckInId(r.get(0)),
        event_id: CheckinEventId(r.get(1)),
        user_id: UserId(r.get(2)),
        name: r.get(3),
        number: r.get(4),
        at: r.get(5),
        method: CheckinMethod::parse(&method)
            .ok_or_else(|| StoreError::Unavailable(format!("unknown check-in method {method}")))?,
        distance_m: r.get::<_, Option<i32>>(7).map(|d| d.max(0) as u32),
    })
}

/// `NotFound` unless the event is the tenant's; `lock` keeps it from being deleted until
/// the transaction ends.
async fn check_event<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    event: CheckinEventId,
    lock: bool,
) -> StoreResult<()> {
    let sql = if lock {
        "SELECT 1 FROM checkin_events WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE"
    } else {
        "SELECT 1 FROM checkin_events WHERE tenant_id = $1 AND id = $2"
    };
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_opt(&st, &[&tenant.0, &event.0])
        .await
        .map_err(pg)?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

async fn find_check_in<C: GenericClient>(
    c: &C,
    event: CheckinEventId,
    user: UserId,
) -> StoreResult<Option<CheckIn>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {CHECK_IN_COLS} FROM check_ins k JOIN users u ON u.id = k.user_id \
             WHERE k.event_id = $1 AND k.user_id = $2"
        ))
        .await
        .map_err(pg)?;
    c.query_opt(&st, &[&event.0, &user.0])
        .await
        .map_err(pg)?
        .as_ref()
        .map(check_in_row)
        .transpose()
}

#[async_trait]
impl CheckinStore for PgStore {
    async fn create_event(
        &self,
        tenant: TenantId,
        event: CheckinEvent,
        audit: Audit,
    ) -> StoreResult<()> {
        let binds = EventBinds::of(&event);
        let mut params = binds.params(&tenant, &event);
        params.push(&event.created_at);
        self.change_one(
            "INSERT INTO checkin_events (tenant_id, id, name, code, starts_at, ends_at, \
             early_minutes, fence_lat, fence_lng, fence_radius_m, designated, updated_at, \
             created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
            &params,
            &audit,
        )
        .await
    }

    async fn get_event(&self, tenant: TenantId, id: CheckinEventId) -> StoreResult<CheckinEvent> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS}, {EVENT_COUNTS} FROM checkin_events e \
                 WHERE e.tenant_id = $1 AND e.id = $2"
            ))
            .await
            .map_err(pg)?;
        c.query_opt(&st, &[&tenant.0, &id.0])
            .await
            .map_err(pg)?
            .map(|r| event_row(&r, true))
            .ok_or(StoreError::NotFound)
    }

    async fn list_events(
        &self,
        tenant: TenantId,
        page: PageReq<CheckinEventId>,
    ) -> StoreResult<Page<CheckinEvent, CheckinEventId>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS}, {EVENT_COUNTS} FROM checkin_events e \
                 WHERE e.tenant_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3"
            ))
            .await
            .map_err(pg)?;
        let after = page.after.map(|a| a.0).unwrap_or(uuid::Uuid::nil());
        let rows = c
            .query(&st, &[&tenant.0, &after, &(i64::from(page.limit) + 1)])
            .await
            .map_err(pg)?;
        let events = rows.iter().map(|r| event_row(r, true)).collect();
        Ok(paginate(events, page.limit, |e| e.id))
    }

    async fn update_event(
        &self,
        tenant: TenantId,
        event: CheckinEvent,
        audit: Audit,
    ) -> StoreResult<()> {
        let binds = EventBinds::of(&event);
        self.change_one(
            "UPDATE checkin_events SET name = $3, code = $4, starts_at = $5, ends_at = $6, \
             early_minutes = $7, fence_lat = $8, fence_lng = $9, fence_radius_m = $10, \
             designated = $11, updated_at = $12 WHERE tenant_id = $1 AND id = $2",
            &binds.params(&tenant, &event),
            &audit,
        )
        .await
    }

    async fn delete_event(
        &self,
        tenant: TenantId,
        id: CheckinEventId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM checkin_events WHERE tenant_id = $1 AND id = $2",
            &[&tenant.0, &id.0],
            &audit,
        )
        .await
    }

    async fn event_by_code(&self, code: String) -> StoreResult<Option<(TenantId, CheckinEvent)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS}, e.tenant_id FROM checkin_events e WHERE e.code = $1"
            ))
            .await
            .map_err(pg)?;
        Ok(c.query_opt(&st, &[&code])
            .await
            .map_err(pg)?
            .map(|r| (TenantId(r.get(12)), event_row(&r, false))))
    }

    async fn add_attendees(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        users: Vec<UserId>,
        audit: Audit,
    ) -> StoreResult<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_event(&tx, tenant, event, true).await?;
        let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.0).collect();
        check_refs(&tx, "users", tenant, &ids, "user_ids").await?;
        let added = tx
            .execute(
                "INSERT INTO checkin_attendees (event_id, user_id) \
                 SELECT $1, u FROM unnest($2::uuid[]) AS u ON CONFLICT DO NOTHING",
                &[&event.0, &ids],
            )
            .await
            .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(added)
    }

    async fn remove_attendee(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        user: UserId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM checkin_attendees WHERE event_id = $1 AND user_id = $2 \
             AND event_id IN (SELECT id FROM checkin_events WHERE tenant_id = $3)",
            &[&event.0, &user.0, &tenant.0],
            &audit,
        )
        .await
    }

    async fn list_attendees(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        checked_in: Option<bool>,
        page: PageReq<UserId>,
    ) -> StoreResult<Page<Attendee, UserId>> {
        let c = self.client().await?;
        check_event(&c, tenant, event, false).await?;
        let filter = match checked_in {
            Some(true) => " AND k.at IS NOT NULL",
            Some(false) => " AND k.at IS NULL",
            None => "",
        };
        let st = c
            .prepare_cached(&format!(
                "SELECT a.user_id, u.name, u.number, k.at FROM checkin_attendees a \
                 JOIN users u ON u.id = a.user_id \
                 LEFT JOIN check_ins k ON k.event_id = a.event_id AND k.user_id = a.user_id \
                 WHERE a.event_id = $1 AND a.user_id > $2{filter} ORDER BY a.user_id LIMIT $3"
            ))
            .await
            .map_err(pg)?;
        let after = page.after.map(|a| a.0).unwrap_or(uuid::Uuid::nil());
        let rows = c
            .query(&st, &[&event.0, &after, &(i64::from(page.limit) + 1)])
            .await
            .map_err(pg)?;
        let attendees = rows
            .iter()
            .map(|r| Attendee {
                user_id: UserId(r.get(0)),
                name: r.get(1),
                number: r.get(2),
                checked_in_at: r.get(3),
            })
            .collect();
        Ok(paginate(attendees, page.limit, |a| a.user_id))
    }

    async fn users_by_number(
        &self,
        tenant: TenantId,
        numbers: Vec<String>,
    ) -> StoreResult<Vec<(String, UserId)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT number, id FROM users WHERE tenant_id = $1 AND status = 'active' \
                 AND number = ANY($2)",
            )
            .await
            .map_err(pg)?;
        let rows = c.query(&st, &[&tenant.0, &numbers]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), UserId(r.get(1)))).collect())
    }

    async fn check_in(
        &self,
        tenant: TenantId,
        check_in: CheckIn,
        designated_only: bool,
        event: OutboxEvent,
        audit: Option<Audit>,
    ) -> StoreResult<CheckInWrite> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let (event_id, user) = (check_in.event_id, check_in.user_id);
        check_event(&tx, tenant, event_id, true).await?;
        if designated_only {
            let st = tx
                .prepare_cached(
                    "SELECT 1 FROM checkin_attendees WHERE event_id = $1 AND user_id = $2 \
                     FOR SHARE",
                )
                .await
                .map_err(pg)?;
            if tx
                .query_opt(&st, &[&event_id.0, &user.0])
                .await
                .map_err(pg)?
                .is_none()
            {
                // Someone who checked in before being taken off the list keeps their
                // check-in; it is answered as it is.
                return Ok(match find_check_in(&tx, event_id, user).await? {
                    Some(existing) => CheckInWrite::Existing(existing),
                    None => CheckInWrite::NotDesignated,
                });
            }
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO check_ins (event_id, user_id, id, at, method, distance_m) \
                 VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (event_id, user_id) DO NOTHING",
            )
            .await
            .map_err(pg)?;
        let n = tx
            .execute(
                &st,
                &[
                    &event_id.0,
                    &user.0,
                    &check_in.id.0,
                    &check_in.at,
                    &check_in.method.as_str(),
                    &check_in.distance_m.map(|d| d.min(i32::MAX as u32) as i32),
                ],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            // Checked in already, or a moment ago by a request that raced this one.
            let existing = find_check_in(&tx, event_id, user)
                .await?
                .ok_or(StoreError::NotFound)?;
            return Ok(CheckInWrite::Existing(existing));
        }
        let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), check_in.at);
        insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
        if let Some(audit) = &audit {
            insert_audit(&tx, audit).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(CheckInWrite::Created(check_in))
    }

    async fn find_check_in(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        user: UserId,
    ) -> StoreResult<Option<CheckIn>> {
        let c = self.client().await?;
        check_event(&c, tenant, event, false).await?;
        find_check_in(&c, event, user).await
    }

    async fn list_check_ins(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        page: PageReq<CheckInId>,
    ) -> StoreResult<Page<CheckIn, CheckInId>> {
        let c = self.client().await?;
        check_event(&c, tenant, event, false).await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {CHECK_IN_COLS} FROM check_ins k JOIN users u ON u.id = k.user_id \
                 WHERE k.event_id = $1 AND k.id > $2 ORDER BY k.id LIMIT $3"
            ))
            .await
            .map_err(pg)?;
        let after = page.after.map(|a| a.0).unwrap_or(uuid::Uuid::nil());
        let rows = c
            .query(&st, &[&event.0, &after, &(i64::from(page.limit) + 1)])
            .await
            .map_err(pg)?;
        let check_ins = rows.iter().map(check_in_row).collect::<StoreResult<_>>()?;
        Ok(paginate(check_ins, page.limit, |k| k.id))
    }

    async fn insert_events(
        &self,
        tenant: TenantId,
        events: Vec<OutboxEvent>,
        at: Timestamp,
    ) -> StoreResult<Vec<PendingEvent>> {
        let c = self.client().await?;
        let page = OutboxPage::of_one(tenant, &events, at);
        insert_outbox(&c, page.as_ref()).await.map_err(pg)?;
        Ok(PendingEvent::of_page(tenant, events, at))
    }
}
