//! The room booking half of the SQLite engine. The single writer makes the check for
//! taken granules and their insert one step; the primary key would refuse an overlap even
//! without the check.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::booking_store::{BookingFilter, BookingStore, GRANULE_MINUTES};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::sqlite::{
    change_one, check_name_free, check_refs, db, insert_audit, ms, paginate, parse_enum, ts,
    uuid_col, SqliteStore,
};
use crate::store::{
    from_json_text, room_booked, room_name_taken, slot_taken, to_json_text, too_many_bookings,
};

const ROOM_COLS: &str = "id, name, location, capacity, opens, closes, days, slot_minutes, \
     max_slots, book_ahead_days, created_at, updated_at, max_per_person";

fn room_row(r: &Row) -> rusqlite::Result<(Room, String)> {
    Ok((
        Room {
            id: RoomId(uuid_col(r, 0)?),
            name: r.get(1)?,
            location: r.get(2)?,
            capacity: r.get(3)?,
            opens: r.get(4)?,
            closes: r.get(5)?,
            days: Vec::new(),
            slot_minutes: r.get(7)?,
            max_slots: r.get(8)?,
            book_ahead_days: r.get(9)?,
            created_at: ts(r.get(10)?),
            updated_at: ts(r.get(11)?),
            max_per_person: r.get(12)?,
        },
        r.get(6)?,
    ))
}

fn room_from_row((mut room, days): (Room, String)) -> StoreResult<Room> {
    room.days = from_json_text(&days)?;
    Ok(room)
}

const BOOKING_COLS: &str = "id, room_id, user_id, title, starts_at, ends_at, attendees, status, \
     created_at, cancelled_at";

fn booking_row(r: &Row) -> rusqlite::Result<Booking> {
    Ok(Booking {
        id: BookingId(uuid_col(r, 0)?),
        room_id: RoomId(uuid_col(r, 1)?),
        user_id: UserId(uuid_col(r, 2)?),
        title: r.get(3)?,
        starts_at: ts(r.get(4)?),
        ends_at: ts(r.get(5)?),
        attendees: r.get(6)?,
        status: parse_enum(r, 7, BookingStatus::parse)?,
        created_at: ts(r.get(8)?),
        cancelled_at: r.get::<_, Option<i64>>(9)?.map(ts),
    })
}

fn find_booking(c: &Connection, tenant: TenantId, id: BookingId) -> StoreResult<Booking> {
    c.prepare_cached(&format!(
        "SELECT {BOOKING_COLS} FROM bookings WHERE tenant_id = ? AND id = ?"
    ))
    .and_then(|mut st| {
        st.query_row([tenant.to_string(), id.to_string()], booking_row)
            .optional()
    })
    .map_err(db)?
    .ok_or(StoreError::NotFound)
}

/// The granules a booking holds, as stored (milliseconds).
fn granules(b: &Booking) -> impl Iterator<Item = i64> {
    let step = GRANULE_MINUTES * 60_000;
    (ms(b.starts_at)..ms(b.ends_at)).step_by(step as usize)
}

fn room_params(tenant: TenantId, room: &Room) -> StoreResult<Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value as V;
    Ok(vec![
        V::Text(room.name.clone()),
        room.location.clone().map_or(V::Null, V::Text),
        V::Integer(room.capacity.into()),
        V::Text(room.opens.clone()),
        V::Text(room.closes.clone()),
        V::Text(to_json_text(&room.days)?),
        V::Integer(room.slot_minutes.into()),
        V::Integer(room.max_slots.into()),
        V::Integer(room.book_ahead_days.into()),
        V::Integer(room.max_per_person.into()),
        V::Integer(ms(room.updated_at)),
        V::Text(tenant.to_string()),
        V::Text(room.id.to_string()),
    ])
}

#[async_trait]
impl BookingStore for SqliteStore {
    async fn create_room(&self, tenant: TenantId, room: Room, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(c, "rooms", tenant, room.id.0, &room.name, room_name_taken)?;
            let mut values = room_params(tenant, &room)?;
            values.push(rusqlite::types::Value::Integer(ms(room.created_at)));
            c.execute(
                "INSERT INTO rooms (name, location, capacity, opens, closes, days, \
                 slot_minutes, max_slots, book_ahead_days, max_per_person, updated_at, \
                 tenant_id, id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                params_from_iter(values),
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn get_room(&self, tenant: TenantId, id: RoomId) -> StoreResult<Room> {
        self.tenant_row(ROOM_COLS, "rooms", tenant, id.0, room_row, room_from_row)
            .await
    }

    async fn list_rooms(&self, tenant: TenantId) -> StoreResult<Vec<Room>> {
        self.tenant_rows_by_name(ROOM_COLS, "rooms", tenant, room_row, room_from_row)
            .await
    }

    async fn update_room(&self, tenant: TenantId, room: Room, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(c, "rooms", tenant, room.id.0, &room.name, room_name_taken)?;
            change_one(
                c,
                "UPDATE rooms SET name = ?, location = ?, capacity = ?, opens = ?, \
                 closes = ?, days = ?, slot_minutes = ?, max_slots = ?, \
                 book_ahead_days = ?, max_per_person = ?, updated_at = ? \
                 WHERE tenant_id = ? AND id = ?",
                params_from_iter(room_params(tenant, &room)?),
                &audit,
            )
        })
        .await
    }

    async fn delete_room(
        &self,
        tenant: TenantId,
        id: RoomId,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let booked: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM bookings WHERE room_id = ? \
                     AND status = 'confirmed' AND ends_at > ?)",
                    params![id.to_string(), ms(now)],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let found: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM rooms WHERE tenant_id = ? AND id = ?)",
                    [tenant.to_string(), id.to_string()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !found {
                return Err(StoreError::NotFound);
            }
            if booked {
                return Err(room_booked());
            }
            c.execute("DELETE FROM rooms WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn create_booking(
        &self,
        tenant: TenantId,
        booking: Booking,
        cap: Option<u32>,
        audit: Option<Audit>,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_refs(c, "rooms", tenant, &[booking.room_id.0], "room_id")?;
            check_refs(c, "users", tenant, &[booking.user_id.0], "user_id")?;
            if let Some(cap) = cap {
                let held: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM bookings WHERE user_id = ? AND room_id = ? \
                         AND status = 'confirmed' AND ends_at > ?",
                    )
                    .and_then(|mut st| {
                        st.query_row(
                            params![
                                booking.user_id.to_string(),
                                booking.room_id.to_string(),
                                ms(booking.created_at)
                            ],
                            |r| r.get(0),
                        )
                    })
                    .map_err(db)?;
                if held >= i64::from(cap) {
                    return Err(too_many_bookings(cap));
                }
            }
            let taken: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM booking_slots WHERE room_id = ? \
                     AND slot_start >= ? AND slot_start < ?)",
                )
                .and_then(|mut st| {
                    st.query_row(
                        params![
                            booking.room_id.to_string(),
                            ms(booking.starts_at),
                            ms(booking.ends_at)
                        ],
                        |r| r.get(0),
                    )
                })
                .map_err(db)?;
            if taken {
                return Err(slot_taken());
            }
            c.prepare_cached(&format!(
                "INSERT INTO bookings (tenant_id, {BOOKING_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            ))
            .and_then(|mut st| {
                st.execute(params![
                    tenant.to_string(),
                    booking.id.to_string(),
                    booking.room_id.to_string(),
                    booking.user_id.to_string(),
                    booking.title,
                    ms(booking.starts_at),
                    ms(booking.ends_at),
                    booking.attendees,
                    booking.status.as_str(),
                    ms(booking.created_at),
                    booking.cancelled_at.map(ms),
                ])
            })
            .map_err(db)?;
            let mut st = c
                .prepare_cached(
                    "INSERT INTO booking_slots (room_id, slot_start, booking_id) VALUES (?,?,?)",
                )
                .map_err(db)?;
            let (room, id) = (booking.room_id.to_string(), booking.id.to_string());
            for g in granules(&booking) {
                st.execute(params![room, g, id]).map_err(db)?;
            }
            if let Some(audit) = &audit {
                insert_audit(c, audit)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_booking(&self, tenant: TenantId, id: BookingId) -> StoreResult<Booking> {
        self.read(move |c| find_booking(c, tenant, id)).await
    }

    async fn cancel_booking(
        &self,
        tenant: TenantId,
        id: BookingId,
        at: Timestamp,
        audit: Option<Audit>,
    ) -> StoreResult<Booking> {
        self.write(move |c| {
            let mut booking = find_booking(c, tenant, id)?;
            if booking.status == BookingStatus::Cancelled {
                return Ok(booking);
            }
            c.execute(
                "UPDATE bookings SET status = 'cancelled', cancelled_at = ? WHERE id = ?",
                params![ms(at), id.to_string()],
            )
            .map_err(db)?;
            c.execute(
                "DELETE FROM booking_slots WHERE booking_id = ?",
                [id.to_string()],
            )
            .map_err(db)?;
            if let Some(audit) = &audit {
                insert_audit(c, audit)?;
            }
            booking.status = BookingStatus::Cancelled;
            booking.cancelled_at = Some(at);
            Ok(booking)
        })
        .await
    }

    async fn list_bookings(
        &self,
        tenant: TenantId,
        filter: BookingFilter,
        page: PageReq<BookingId>,
    ) -> StoreResult<Page<Booking, BookingId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {BOOKING_COLS} FROM bookings WHERE tenant_id = ?");
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            if let Some(after) = page.after {
                sql.push_str(" AND id > ?");
                values.push(after.to_string().into());
            }
            if let Some(room) = filter.room {
                sql.push_str(" AND room_id = ?");
                values.push(room.to_string().into());
            }
            if let Some(user) = filter.user {
                sql.push_str(" AND user_id = ?");
                values.push(user.to_string().into());
            }
            if let Some(status) = filter.status {
                sql.push_str(" AND status = ?");
                values.push(status.as_str().to_string().into());
            }
            if let Some(t) = filter.ends_after {
                sql.push_str(" AND ends_at > ?");
                values.push(ms(t).into());
            }
            if let Some(t) = filter.starts_before {
                sql.push_str(" AND starts_at < ?");
                values.push(ms(t).into());
            }
            sql.push_str(" ORDER BY id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), booking_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |b| b.id))
        })
        .await
    }
}
