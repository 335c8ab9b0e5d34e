//! The room booking half of the PostgreSQL engine. A booking's granules go in with
//! `ON CONFLICT DO NOTHING`: fewer rows than granules means another booking holds some,
//! and the transaction is rolled back. Two bookings racing for one moment meet at the
//! primary key: the second waits for the first to commit, then finds its rows.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::booking_store::{BookingFilter, BookingStore, GRANULE_MINUTES};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::postgres::{check_refs, insert_audit, pg, PgStore};
use crate::sqlite::paginate;
use crate::store::{from_json_text, room_booked, slot_taken, to_json_text, too_many_bookings};

const ROOM_COLS: &str = "id, name, location, capacity, opens, closes, days, slot_minutes, \
     max_slots, book_ahead_days, created_at, updated_at, max_per_person";

fn room_from_row(r: &Row) -> StoreResult<Room> {
    let int = |i: usize| r.get::<_, i32>(i).max(0) as u32;
    Ok(Room {
        id: RoomId(r.get(0)),
        name: r.get(1),
        location: r.get(2),
        capacity: int(3),
        opens: r.get(4),
        closes: r.get(5),
        days: from_json_text(&r.get::<_, String>(6))?,
        slot_minutes: int(7),
        max_slots: int(8),
        book_ahead_days: int(9),
        created_at: r.get(10),
        updated_at: r.get(11),
        max_per_person: int(12),
    })
}

/// A room's columns bound as PostgreSQL types: `params` are $1 the tenant, $2 the id,
/// then name to `max_per_person` ($3–$13), as `update_room` writes them; `create_room`
/// adds `created_at` as $14.
struct RoomBinds {
    capacity: i32,
    days: String,
    slot_minutes: i32,
    max_slots: i32,
    book_ahead_days: i32,
    max_per_person: i32,
}

impl RoomBinds {
    fn of(r: &Room) -> StoreResult<Self> {
        Ok(RoomBinds {
            capacity: r.capacity as i32,
            days: to_json_text(&r.days)?,
            slot_minutes: r.slot_minutes as i32,
            max_slots: r.max_slots as i32,
            book_ahead_days: r.book_ahead_days as i32,
            max_per_person: r.max_per_person as i32,
        })
    }

    fn params<'a>(&'a self, tenant: &'a TenantId, r: &'a Room) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            &tenant.0,
            &r.id.0,
            &r.name,
            &r.location,
            &self.capacity,
            &r.opens,
            &r.closes,
            &self.days,
            &self.slot_minutes,
            &self.max_slots,
            &self.book_ahead_days,
            &r.updated_at,
            &self.max_per_person,
        ]
    }
}

const BOOKING_COLS: &str = "id, room_id, user_id, title, starts_at, ends_at, attendees, status, \
     created_at, cancelled_at";

fn booking_from_row(r: &Row) -> StoreResult<Booking> {
    let status: String = r.get(7);
    Ok(Booking {
        id: BookingId(r.get(0)),
        room_id: RoomId(r.get(1)),
        user_id: UserId(r.get(2)),
        title: r.get(3),
        starts_at: r.get(4),
        ends_at: r.get(5),
        attendees: r.get::<_, i32>(6).max(0) as u32,
        status: BookingStatus::parse(&status)
            .ok_or_else(|| StoreError::Unavailable(format!("unknown booking status {status}")))?,
        created_at: r.get(8),
        cancelled_at: r.get(9),
    })
}

/// The granules a booking holds.
fn granules(b: &Booking) -> Vec<Timestamp> {
    let step = SignedDuration::from_mins(GRANULE_MINUTES);
    let mut out = Vec::new();
    let mut at = b.starts_at;
    while at < b.ends_at {
        out.push(at);
        at = match at.checked_add(step) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    out
}

#[async_trait]
impl BookingStore for PgStore {
    async fn create_room(&self, tenant: TenantId, room: Room, audit: Audit) -> StoreResult<()> {
        let binds = RoomBinds::of(&room)?;
        let mut params = binds.params(&tenant, &room);
        params.push(&room.created_at);
        self.change_one(
            "INSERT INTO rooms (tenant_id, id, name, location, capacity, opens, closes, days, \
             slot_minutes, max_slots, book_ahead_days, updated_at, max_per_person, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
            &params,
            &audit,
        )
        .await
    }

    async fn get_room(&self, tenant: TenantId, id: RoomId) -> StoreResult<Room> {
        self.tenant_row(ROOM_COLS, "rooms", tenant, id.0, room_from_row)
            .await
    }

    async fn list_rooms(&self, tenant: TenantId) -> StoreResult<Vec<Room>> {
        self.tenant_rows_by_name(ROOM_COLS, "rooms", tenant, room_from_row)
            .await
    }

    async fn update_room(&self, tenant: TenantId, room: Room, audit: Audit) -> StoreResult<()> {
        let binds = RoomBinds::of(&room)?;
        self.change_one(
            "UPDATE rooms SET name = $3, location = $4, capacity = $5, opens = $6, \
             closes = $7, days = $8, slot_minutes = $9, max_slots = $10, \
             book_ahead_days = $11, updated_at = $12, max_per_person = $13 \
             WHERE tenant_id = $1 AND id = $2",
            &binds.params(&tenant, &room),
            &audit,
        )
        .await
    }

    async fn delete_room(
        &self,
        tenant: TenantId,
        id: RoomId,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked, so a booking cannot slip in between the check and the delete (it reads
        // the room `FOR KEY SHARE` through its foreign key).
        tx.query_opt(
            "SELECT 1 FROM rooms WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
        let booked: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM bookings WHERE room_id = $1 \
                 AND status = 'confirmed' AND ends_at > $2)",
                &[&id.0, &now],
            )
            .await
            .map_err(pg)?
            .get(0);
        if booked {
            return Err(room_booked());
        }
        tx.execute("DELETE FROM rooms WHERE id = $1", &[&id.0])
            .await
            .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn create_booking(
        &self,
        tenant: TenantId,
        booking: Booking,
        cap: Option<u32>,
        audit: Option<Audit>,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_refs(&tx, "rooms", tenant, &[booking.room_id.0], "room_id").await?;
        check_refs(&tx, "users", tenant, &[booking.user_id.0], "user_id").await?;
        if let Some(cap) = cap {
            // The person's row, locked: their bookings are counted one at a time.
            tx.execute(
                "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
                &[&booking.user_id.0],
            )
            .await
            .map_err(pg)?;
            let held: i64 = tx
                .query_one(
                    "SELECT count(*) FROM bookings WHERE user_id = $1 AND room_id = $2 \
                     AND status = 'confirmed' AND ends_at > $3",
                    &[&booking.user_id.0, &booking.room_id.0, &booking.created_at],
                )
                .await
                .map_err(pg)?
                .get(0);
            if held >= i64::from(cap) {
                return Err(too_many_bookings(cap));
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO bookings (tenant_id, {BOOKING_COLS}) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
            ),
            &[
                &tenant.0,
                &booking.id.0,
                &booking.room_id.0,
                &booking.user_id.0,
                &booking.title,
                &booking.starts_at,
                &booking.ends_at,
                &(booking.attendees as i32),
                &booking.status.as_str(),
                &booking.created_at,
                &booking.cancelled_at,
            ],
        )
        .await
        .map_err(pg)?;
        let slots = granules(&booking);
        let held = tx
            .execute(
                "INSERT INTO booking_slots (room_id, slot_start, booking_id) \
                 SELECT $1, s, $3 FROM unnest($2::timestamptz[]) AS s ON CONFLICT DO NOTHING",
                &[&booking.room_id.0, &slots, &booking.id.0],
            )
            .await
            .map_err(pg)?;
        if held as usize != slots.len() {
            // Dropping the transaction rolls it back: the booking and the granules it got.
            return Err(slot_taken());
        }
        if let Some(audit) = &audit {
            insert_audit(&tx, audit).await?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn get_booking(&self, tenant: TenantId, id: BookingId) -> StoreResult<Booking> {
        self.tenant_row(BOOKING_COLS, "bookings", tenant, id.0, booking_from_row)
            .await
    }

    async fn cancel_booking(
        &self,
        tenant: TenantId,
        id: BookingId,
        at: Timestamp,
        audit: Option<Audit>,
    ) -> StoreResult<Booking> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {BOOKING_COLS} FROM bookings WHERE tenant_id = $1 AND id = $2 \
                     FOR UPDATE"
                ),
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        let mut booking = booking_from_row(&row)?;
        if booking.status == BookingStatus::Cancelled {
            return Ok(booking);
        }
        tx.execute(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = $2 WHERE id = $1",
            &[&id.0, &at],
        )
        .await
        .map_err(pg)?;
        tx.execute("DELETE FROM booking_slots WHERE booking_id = $1", &[&id.0])
            .await
            .map_err(pg)?;
        if let Some(audit) = &audit {
            insert_audit(&tx, audit).await?;
        }
        tx.commit().await.map_err(pg)?;
        booking.status = BookingStatus::Cancelled;
        booking.cancelled_at = Some(at);
        Ok(booking)
    }

    async fn list_bookings(
        &self,
        tenant: TenantId,
        filter: BookingFilter,
        page: PageReq<BookingId>,
    ) -> StoreResult<Page<Booking, BookingId>> {
        let c = self.client().await?;
        let after = page.after.map(|a| a.0).unwrap_or(uuid::Uuid::nil());
        let rows = c
            .query(
                &format!(
                    "SELECT {BOOKING_COLS} FROM bookings WHERE tenant_id = $1 AND id > $2 \
                     AND ($3::uuid IS NULL OR room_id = $3) \
                     AND ($4::uuid IS NULL OR user_id = $4) \
                     AND ($5::text IS NULL OR status = $5) \
                     AND ($6::timestamptz IS NULL OR ends_at > $6) \
                     AND ($7::timestamptz IS NULL OR starts_at < $7) \
                     ORDER BY id LIMIT $8"
                ),
                &[
                    &tenant.0,
                    &after,
                    &filter.room.map(|r| r.0),
                    &filter.user.map(|u| u.0),
                    &filter.status.map(|s| s.as_str()),
                    &filter.ends_after,
                    &filter.starts_before,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let bookings = rows
            .iter()
            .map(booking_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(bookings, page.limit, |b| b.id))
    }
}
