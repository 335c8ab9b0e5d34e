//! The event check-in half of the SQLite engine.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::checkin_store::CheckinStore;
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::sqlite::{
    change_one, check_refs, db, insert_audit, ms, paginate, parse_enum, placeholders, ts, uuid_col,
    SqliteStore,
};
use crate::sqlite_money::insert_outbox;
use crate::wallet::{OutboxEvent, OutboxPage, PendingEvent};

const EVENT_COLS: &str = "e.id, e.name, e.code, e.starts_at, e.ends_at, e.early_minutes, \
     e.fence_lat, e.fence_lng, e.fence_radius_m, e.designated, e.created_at, e.updated_at";
/// The counts after `EVENT_COLS`.
const EVENT_COUNTS: &str = "(SELECT count(*) FROM checkin_attendees a WHERE a.event_id = e.id), \
     (SELECT count(*) FROM check_ins k WHERE k.event_id = e.id)";

/// An event from `EVENT_COLS`, then the counts when `counted`.
fn event_row(r: &Row, counted: bool) -> rusqlite::Result<CheckinEvent> {
    let fence = match (
        r.get::<_, Option<f64>>(6)?,
        r.get::<_, Option<f64>>(7)?,
        r.get::<_, Option<u32>>(8)?,
    ) {
        (Some(latitude), Some(longitude), Some(radius_m)) => Some(Geofence {
            latitude,
            longitude,
            radius_m,
        }),
        _ => None,
    };
    let count = |i: usize| -> rusqlite::Result<u64> {
        Ok(if counted {
            r.get::<_, i64>(i)? as u64
        } else {
            0
        })
    };
    Ok(CheckinEvent {
        id: CheckinEventId(uuid_col(r, 0)?),
        name: r.get(1)?,
        code: r.get(2)?,
        starts_at: ts(r.get(3)?),
        ends_at: ts(r.get(4)?),
        early_minutes: r.get(5)?,
        geofence: fence,
        designated: r.get(9)?,
        created_at: ts(r.get(10)?),
        updated_at: ts(r.get(11)?),
        attendees: count(12)?,
        checked_in: count(13)?,
    })
}

/// `code_taken` unless no other event has the code.
fn check_code_free(c: &Connection, event: &CheckinEvent) -> StoreResult<()> {
    let taken: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM checkin_events WHERE code = ? AND id <> ?)",
            params![event.code, event.id.to_string()],
            |r| r.get(0),
        )
        .map_err(db)?;
    if taken {
        return Err(crate::store::code_taken());
    }
    Ok(())
}

/// `NotFound` unless the event is the tenant's.
fn check_event(c: &Connection, tenant: TenantId, event: CheckinEventId) -> StoreResult<()> {
    let found: bool = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM checkin_events WHERE tenant_id = ? AND id = ?)",
        )
        .and_then(|mut st| st.query_row([tenant.to_string(), event.to_string()], |r| r.get(0)))
        .map_err(db)?;
    if !found {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

const CHECK_IN_COLS: &str =
    "k.id, k.event_id, k.user_id, u.name, u.number, k.at, k.method, k.distance_m";

fn check_in_row(r: &Row) -> rusqlite::Result<CheckIn> {
    Ok(CheckIn {
        id: CheckInId(uuid_col(r, 0)?),
        event_id: CheckinEventId(uuid_col(r, 1)?),
        user_id: UserId(uuid_col(r, 2)?),
        name: r.get(3)?,
        number: r.get(4)?,
        at: ts(r.get(5)?),
        method: parse_enum(r, 6, CheckinMethod::parse)?,
        distance_m: r.get(7)?,
    })
}

fn event_params(tenant: TenantId, e: &CheckinEvent) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    let fence = e.geofence;
    vec![
        V::Text(e.name.clone()),
        V::Text(e.code.clone()),
        V::Integer(ms(e.starts_at)),
        V::Integer(ms(e.ends_at)),
        V::Integer(i64::from(e.early_minutes)),
        fence.map_or(V::Null, |f| V::Real(f.latitude)),
        fence.map_or(V::Null, |f| V::Real(f.longitude)),
        fence.map_or(V::Null, |f| V::Integer(i64::from(f.radius_m))),
        V::Integer(i64::from(e.designated)),
        V::Integer(ms(e.updated_at)),
        V::Text(tenant.to_string()),
        V::Text(e.id.to_string()),
    ]
}

#[async_trait]
impl CheckinStore for SqliteStore {
    async fn create_event(
        &self,
        tenant: TenantId,
        event: CheckinEvent,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_code_free(c, &event)?;
            let mut values = event_params(tenant, &event);
            values.push(rusqlite::types::Value::Integer(ms(event.created_at)));
            c.execute(
                "INSERT INTO checkin_events (name, code, starts_at, ends_at, early_minutes, \
                 fence_lat, fence_lng, fence_radius_m, designated, updated_at, tenant_id, id, \
                 created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                params_from_iter(values),
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn get_event(&self, tenant: TenantId, id: CheckinEventId) -> StoreResult<CheckinEvent> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS}, {EVENT_COUNTS} FROM checkin_events e \
                 WHERE e.tenant_id = ? AND e.id = ?"
            ))
            .and_then(|mut st| {
                st.query_row([tenant.to_string(), id.to_string()], |r| event_row(r, true))
                    .optional()
            })
            .map_err(db)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn list_events(
        &self,
        tenant: TenantId,
        page: PageReq<CheckinEventId>,
    ) -> StoreResult<Page<CheckinEvent, CheckinEventId>> {
        self.read(move |c| {
            let after = page.after.map(|a| a.to_string()).unwrap_or_default();
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLS}, {EVENT_COUNTS} FROM checkin_events e \
                     WHERE e.tenant_id = ? AND e.id > ? ORDER BY e.id LIMIT ?"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![tenant.to_string(), after, i64::from(page.limit) + 1],
                        |r| event_row(r, true),
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |e| e.id))
        })
        .await
    }

    async fn update_event(
        &self,
        tenant: TenantId,
        event: CheckinEvent,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_code_free(c, &event)?;
            change_one(
                c,
                "UPDATE checkin_events SET name = ?, code = ?, starts_at = ?, ends_at = ?, \
                 early_minutes = ?, fence_lat = ?, fence_lng = ?, fence_radius_m = ?, \
                 designated = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                params_from_iter(event_params(tenant, &event)),
                &audit,
            )
        })
        .await
    }

    async fn delete_event(
        &self,
        tenant: TenantId,
        id: CheckinEventId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            change_one(
                c,
                "DELETE FROM checkin_events WHERE tenant_id = ? AND id = ?",
                [tenant.to_string(), id.to_string()],
                &audit,
            )
        })
        .await
    }

    async fn event_by_code(&self, code: String) -> StoreResult<Option<(TenantId, CheckinEvent)>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS}, e.tenant_id FROM checkin_events e WHERE e.code = ?"
            ))
            .and_then(|mut st| {
                st.query_row([code], |r| {
                    Ok((TenantId(uuid_col(r, 12)?), event_row(r, false)?))
                })
                .optional()
            })
            .map_err(db)
        })
        .await
    }

    async fn add_attendees(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        users: Vec<UserId>,
        audit: Audit,
    ) -> StoreResult<u64> {
        self.write(move |c| {
            check_event(c, tenant, event)?;
            let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.0).collect();
            for chunk in ids.chunks(1000) {
                check_refs(c, "users", tenant, chunk, "user_ids")?;
            }
            let mut st = c
                .prepare_cached(
                    "INSERT INTO checkin_attendees (event_id, user_id) VALUES (?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .map_err(db)?;
            let mut added = 0;
            for u in &users {
                added += st.execute([event.to_string(), u.to_string()]).map_err(db)? as u64;
            }
            insert_audit(c, &audit)?;
            Ok(added)
        })
        .await
    }

    async fn remove_attendee(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        user: UserId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            change_one(
                c,
                "DELETE FROM checkin_attendees WHERE event_id = ? AND user_id = ? \
                 AND event_id IN (SELECT id FROM checkin_events WHERE tenant_id = ?)",
                [event.to_string(), user.to_string(), tenant.to_string()],
                &audit,
            )
        })
        .await
    }

    async fn list_attendees(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        checked_in: Option<bool>,
        page: PageReq<UserId>,
    ) -> StoreResult<Page<Attendee, UserId>> {
        self.read(move |c| {
            check_event(c, tenant, event)?;
            let filter = match checked_in {
                Some(true) => " AND k.at IS NOT NULL",
                Some(false) => " AND k.at IS NULL",
                None => "",
            };
            let after = page.after.map(|a| a.to_string()).unwrap_or_default();
            let rows = c
                .prepare_cached(&format!(
                    "SELECT a.user_id, u.name, u.number, k.at FROM checkin_attendees a \
                     JOIN users u ON u.id = a.user_id \
                     LEFT JOIN check_ins k ON k.event_id = a.event_id AND k.user_id = a.user_id \
                     WHERE a.event_id = ? AND a.user_id > ?{filter} ORDER BY a.user_id LIMIT ?"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![event.to_string(), after, i64::from(page.limit) + 1],
                        |r| {
                            Ok(Attendee {
                                user_id: UserId(uuid_col(r, 0)?),
                                name: r.get(1)?,
                                number: r.get(2)?,
                                checked_in_at: r.get::<_, Option<i64>>(3)?.map(ts),
                            })
                        },
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |a| a.user_id))
        })
        .await
    }

    async fn users_by_number(
        &self,
        tenant: TenantId,
        numbers: Vec<String>,
    ) -> StoreResult<Vec<(String, UserId)>> {
        self.read(move |c| {
            let mut out = Vec::with_capacity(numbers.len());
            for chunk in numbers.chunks(1000) {
                let sql = format!(
                    "SELECT number, id FROM users WHERE tenant_id = ? AND status = 'active' \
                     AND number IN ({})",
                    placeholders(chunk.len())
                );
                let mut values = vec![tenant.to_string()];
                values.extend(chunk.iter().cloned());
                let mut st = c.prepare(&sql).map_err(db)?;
                let rows = st
                    .query_map(params_from_iter(values), |r| {
                        Ok((r.get::<_, String>(0)?, UserId(uuid_col(r, 1)?)))
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(db)?;
                out.extend(rows);
            }
            Ok(out)
        })
        .await
    }

    async fn check_in(
        &self,
        tenant: TenantId,
        check_in: CheckIn,
        designated_only: bool,
        event: OutboxEvent,
        audit: Option<Audit>,
    ) -> StoreResult<CheckInWrite> {
        self.write(move |c| {
            check_event(c, tenant, check_in.event_id)?;
            if let Some(existing) = find_check_in(c, check_in.event_id, check_in.user_id)? {
                return Ok(CheckInWrite::Existing(existing));
            }
            if designated_only && !is_attendee(c, check_in.event_id, check_in.user_id)? {
                return Ok(CheckInWrite::NotDesignated);
            }
            c.prepare_cached(
                "INSERT INTO check_ins (event_id, user_id, id, at, method, distance_m) \
                 VALUES (?,?,?,?,?,?)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    check_in.event_id.to_string(),
                    check_in.user_id.to_string(),
                    check_in.id.to_string(),
                    ms(check_in.at),
                    check_in.method.as_str(),
                    check_in.distance_m,
                ])
            })
            .map_err(db)?;
            let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), check_in.at);
            insert_outbox(c, page.as_ref()).map_err(db)?;
            if let Some(audit) = &audit {
                insert_audit(c, audit)?;
            }
            Ok(CheckInWrite::Created(check_in))
        })
        .await
    }

    async fn find_check_in(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        user: UserId,
    ) -> StoreResult<Option<CheckIn>> {
        self.read(move |c| {
            check_event(c, tenant, event)?;
            find_check_in(c, event, user)
        })
        .await
    }

    async fn list_check_ins(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        page: PageReq<CheckInId>,
    ) -> StoreResult<Page<CheckIn, CheckInId>> {
        self.read(move |c| {
            check_event(c, tenant, event)?;
            let after = page.after.map(|a| a.to_string()).unwrap_or_default();
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {CHECK_IN_COLS} FROM check_ins k JOIN users u ON u.id = k.user_id \
                     WHERE k.event_id = ? AND k.id > ? ORDER BY k.id LIMIT ?"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![event.to_string(), after, i64::from(page.limit) + 1],
                        check_in_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |k| k.id))
        })
        .await
    }

    async fn insert_events(
        &self,
        tenant: TenantId,
        events: Vec<OutboxEvent>,
        at: Timestamp,
    ) -> StoreResult<Vec<PendingEvent>> {
        self.write(move |c| {
            let page = OutboxPage::of_one(tenant, &events, at);
            insert_outbox(c, page.as_ref()).map_err(db)?;
            Ok(PendingEvent::of_page(tenant, events, at))
        })
        .await
    }
}

fn is_attendee(c: &Connection, event: CheckinEventId, user: UserId) -> StoreResult<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM checkin_attendees WHERE event_id = ? AND user_id = ?)",
    )
    .and_then(|mut st| st.query_row([event.to_string(), user.to_string()], |r| r.get(0)))
    .map_err(db)
}

fn find_check_in(
    c: &Connection,
    event: CheckinEventId,
    user: UserId,
) -> StoreResult<Option<CheckIn>> {
    c.prepare_cached(&format!(
        "SELECT {CHECK_IN_COLS} FROM check_ins k JOIN users u ON u.id = k.user_id \
         WHERE k.event_id = ? AND k.user_id = ?"
    ))
    .and_then(|mut st| {
        st.query_row([event.to_string(), user.to_string()], check_in_row)
            .optional()
    })
    .map_err(db)
}
