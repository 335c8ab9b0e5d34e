//! Venue and meeting-room booking (SPEC §13). Admins of the booking app keep rooms with a
//! capacity, opening hours (in the tenant's time zone) and a slot length; members of the
//! organisation book slots for themselves, see which are free, share a booking's page
//! with other members (and nobody else), and cancel. Bookings never overlap: the store's
//! primary key on (room, 5-minute granule) refuses the second of two at one moment,
//! however they race (409 `slot_taken`).

use actix_web::{delete, get, patch, post, web, HttpResponse};
use jiff::civil::Date;
use jiff::Timestamp;
use onecard_actors::domain::booking::{check_booking, check_room, slots_on};
use onecard_actors::domain::validate::Checks;
use onecard_schema::booking_store::BookingFilter;
use onecard_schema::ids::{BookingId, RoomId, UserId};
use onecard_schema::model::{Booking, BookingStatus, PageReq, Room, TokenKind, User, UserStatus};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{checked, nullable, ListParams, Paged};
use crate::auth::{Auth, BookingManager, BookingMember, Caller, Cardholder};
use crate::extract::{path_id, Json, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const NAME_CHARS_MAX: usize = 64;
const LOCATION_CHARS_MAX: usize = 128;
const TITLE_CHARS_MAX: usize = 64;
/// Bookings read to draw one day's slots, at most (a day of 5-minute slots has 288).
const DAY_BOOKINGS_MAX: u32 = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    #[schema(min_length = 1, max_length = 64, example = "Seminar room 3")]
    pub name: String,
    #[schema(max_length = 128, example = "Library, 3rd floor")]
    pub location: Option<String>,
    #[schema(minimum = 1, maximum = 100000)]
    pub capacity: u32,
    /// Local `HH:MM` (default 08:00).
    #[schema(example = "08:00")]
    pub opens: Option<String>,
    /// Local `HH:MM`, after `opens` (default 22:00; `24:00` is midnight).
    #[schema(example = "22:00")]
    pub closes: Option<String>,
    /// ISO weekdays it opens, 1 (Monday) to 7 (default Monday to Friday).
    pub days: Option<Vec<u8>>,
    /// A multiple of 5, 5 to 240 (default 30); the opening hours are whole slots.
    pub slot_minutes: Option<u32>,
    /// 1 to 96 (default 8).
    pub max_slots: Option<u32>,
    /// 1 to 365 (default 30).
    pub book_ahead_days: Option<u32>,
    /// Bookings still to come one member may hold in the room, 1 to 100 (default 3);
    /// admins may book for someone past it.
    pub max_per_person: Option<u32>,
}

/// Absent fields stay as they are; `location: null` clears it. Bookings made stay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRoom {
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub location: Option<Option<String>>,
    pub capacity: Option<u32>,
    pub opens: Option<String>,
    pub closes: Option<String>,
    pub days: Option<Vec<u8>>,
    pub slot_minutes: Option<u32>,
    pub max_slots: Option<u32>,
    pub book_ahead_days: Option<u32>,
    pub max_per_person: Option<u32>,
}

fn check(room: &Room) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &room.name, 1, NAME_CHARS_MAX);
    if let Some(l) = &room.location {
        c.text("location", l, 1, LOCATION_CHARS_MAX);
    }
    for (field, rule, message) in check_room(room) {
        c.fail(field, rule, message);
    }
    checked(c)
}

fn room_detail(r: &Room) -> serde_json::Value {
    serde_json::json!({
        "name": r.name, "capacity": r.capacity, "opens": r.opens, "closes": r.closes,
        "days": r.days, "slot_minutes": r.slot_minutes, "max_slots": r.max_slots,
        "book_ahead_days": r.book_ahead_days, "max_per_person": r.max_per_person,
    })
}

/// Create a room (super admins and the booking app's admins).
#[utoipa::path(tag = "booking", request_body = CreateRoom, security(("bearer" = [])),
    responses((status = 201, body = Room), Problems))]
#[post("/rooms")]
pub async fn create_room(
    state: web::Data<AppState>,
    caller: Auth<BookingManager>,
    Json(body): Json<CreateRoom>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let room = Room {
        id: RoomId::new(),
        name: body.name,
        location: body.location,
        capacity: body.capacity,
        opens: body.opens.unwrap_or_else(|| "08:00".into()),
        closes: body.closes.unwrap_or_else(|| "22:00".into()),
        days: body.days.unwrap_or_else(|| vec![1, 2, 3, 4, 5]),
        slot_minutes: body.slot_minutes.unwrap_or(30),
        max_slots: body.max_slots.unwrap_or(8),
        book_ahead_days: body.book_ahead_days.unwrap_or(30),
        max_per_person: body.max_per_person.unwrap_or(3),
        created_at: now,
        updated_at: now,
    };
    check(&room)?;
    let audit = caller.audit(&state, "room.create", "room", room.id, room_detail(&room));
    state
        .store
        .create_room(caller.tenant()?, room.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(room))
}

/// The tenant's rooms, by name (members and the booking app's admins).
#[utoipa::path(tag = "booking", security(("bearer" = [])),
    responses((status = 200, body = Paged<Room>), Problems))]
#[get("/rooms")]
pub async fn list_rooms(
    state: web::Data<AppState>,
    caller: Auth<BookingMember>,
) -> Result<web::Json<Paged<Room>>, ApiError> {
    let rooms = state.store.list_rooms(caller.tenant()?).await?;
    Ok(web::Json(Paged::new(rooms, None)))
}

/// One room.
#[utoipa::path(tag = "booking", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Room), Problems))]
#[get("/rooms/{id}")]
pub async fn get_room(
    state: web::Data<AppState>,
    caller: Auth<BookingMember>,
    id: web::Path<String>,
) -> Result<web::Json<Room>, ApiError> {
    Ok(web::Json(
        state
            .store
            .get_room(caller.tenant()?, path_id(&id)?)
            .await?,
    ))
}

/// Change a room. Bookings made stay as they are.
#[utoipa::path(tag = "booking", params(("id" = String, Path)), request_body = PatchRoom,
    security(("bearer" = [])), responses((status = 200, body = Room), Problems))]
#[patch("/rooms/{id}")]
pub async fn patch_room(
    state: web::Data<AppState>,
    caller: Auth<BookingManager>,
    id: web::Path<String>,
    Json(body): Json<PatchRoom>,
) -> Result<web::Json<Room>, ApiError> {
    let tenant = caller.tenant()?;
    let mut room = state.store.get_room(tenant, path_id(&id)?).await?;
    let PatchRoom {
        name,
        location,
        capacity,
        opens,
        closes,
        days,
        slot_minutes,
        max_slots,
        book_ahead_days,
        max_per_person,
    } = body;
    room.name = name.unwrap_or(room.name);
    room.location = location.unwrap_or(room.location);
    room.capacity = capacity.unwrap_or(room.capacity);
    room.opens = opens.unwrap_or(room.opens);
    room.closes = closes.unwrap_or(room.closes);
    room.days = days.unwrap_or(room.days);
    room.slot_minutes = slot_minutes.unwrap_or(room.slot_minutes);
    room.max_slots = max_slots.unwrap_or(room.max_slots);
    room.book_ahead_days = book_ahead_days.unwrap_or(room.book_ahead_days);
    room.max_per_person = max_per_person.unwrap_or(room.max_per_person);
    check(&room)?;
    room.updated_at = state.clock.now();
    let audit = caller.audit(&state, "room.update", "room", room.id, room_detail(&room));
    state.store.update_room(tenant, room.clone(), audit).await?;
    Ok(web::Json(room))
}

/// Delete a room with no bookings still to come (409 `room_booked`).
#[utoipa::path(tag = "booking", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/rooms/{id}")]
pub async fn delete_room(
    state: web::Data<AppState>,
    caller: Auth<BookingManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: RoomId = path_id(&id)?;
    let audit = caller.audit(&state, "room.delete", "room", id, serde_json::json!({}));
    state
        .store
        .delete_room(caller.tenant()?, id, state.clock.now(), audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DayParams {
    /// A local date, `YYYY-MM-DD` (default today).
    pub date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Slot {
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub free: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    pub room_id: RoomId,
    #[schema(value_type = String, example = "2026-12-07")]
    pub date: Date,
    /// Empty when the room is closed that day.
    pub slots: Vec<Slot>,
}

/// The room's slots on a day, each free or taken (who took it is not shown).
#[utoipa::path(tag = "booking", params(("id" = String, Path), DayParams),
    security(("bearer" = [])), responses((status = 200, body = Availability), Problems))]
#[get("/rooms/{id}/availability")]
pub async fn get_availability(
    state: web::Data<AppState>,
    caller: Auth<BookingMember>,
    id: web::Path<String>,
    Query(params): Query<DayParams>,
) -> Result<web::Json<Availability>, ApiError> {
    let tenant = caller.tenant()?;
    let room = state.store.get_room(tenant, path_id(&id)?).await?;
    let policy = state.policy(tenant).await?;
    let date: Date = match &params.date {
        Some(d) => d
            .parse()
            .map_err(|_| ApiError::invalid_field("date", "date", "a date as YYYY-MM-DD"))?,
        None => state.clock.now().to_zoned(policy.tz.clone()).date(),
    };
    let slots = slots_on(&room, &policy.tz, date);
    let taken = match (slots.first(), slots.last()) {
        (Some(first), Some(last)) => {
            let filter = BookingFilter {
                room: Some(room.id),
                status: Some(BookingStatus::Confirmed),
                ends_after: Some(first.0),
                starts_before: Some(last.1),
                ..BookingFilter::default()
            };
            let page = PageReq {
                limit: DAY_BOOKINGS_MAX,
                after: None,
            };
            state.store.list_bookings(tenant, filter, page).await?.items
        }
        _ => Vec::new(),
    };
    let slots = slots
        .into_iter()
        .map(|(starts_at, ends_at)| Slot {
            starts_at,
            ends_at,
            free: !taken
                .iter()
                .any(|b| b.starts_at < ends_at && starts_at < b.ends_at),
        })
        .collect();
    Ok(web::Json(Availability {
        room_id: room.id,
        date,
        slots,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBooking {
    pub room_id: RoomId,
    /// On one of the room's slots.
    pub starts_at: Timestamp,
    /// On a later slot of the same day, at most `max_slots` on.
    pub ends_at: Timestamp,
    #[schema(min_length = 1, max_length = 64, example = "Thesis committee")]
    pub title: String,
    /// How many people come, 1 to the room's capacity (default 1).
    pub attendees: Option<u32>,
    /// Whom an admin books for; a cardholder books for themselves and may not name one.
    pub user_id: Option<UserId>,
}

/// A booking with the room's name and the booker's, as its page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookingView {
    #[serde(flatten)]
    pub booking: Booking,
    pub room_name: String,
    pub user_name: String,
}

/// The member (a cardholder acting for themselves, or the user an admin names).
async fn member(
    state: &AppState,
    caller: &Caller,
    named: Option<UserId>,
) -> Result<User, ApiError> {
    let tenant = caller.tenant()?;
    let id = match (caller.kind, named) {
        (TokenKind::Cardholder, None) => UserId(caller.subject()?),
        (TokenKind::Cardholder, Some(_)) => {
            return Err(ApiError::invalid_field(
                "user_id",
                "not_allowed",
                "a cardholder books for themselves",
            ))
        }
        (_, Some(id)) => id,
        (_, None) => {
            return Err(ApiError::invalid_field(
                "user_id",
                "required",
                "an admin names whom the booking is for",
            ))
        }
    };
    let user = match state.store.get_user(tenant, id).await {
        Ok(user) => user,
        Err(StoreError::NotFound) if caller.kind == TokenKind::Cardholder => {
            return Err(not_a_member())
        }
        Err(StoreError::NotFound) => {
            return Err(ApiError::invalid_field("user_id", "exists", "no such user"))
        }
        Err(e) => return Err(e.into()),
    };
    if user.status != UserStatus::Active {
        return Err(not_a_member());
    }
    Ok(user)
}

fn not_a_member() -> ApiError {
    ApiError::forbidden(
        "not_a_member",
        "only active members of the organisation may book its rooms",
    )
}

/// Book a room: a cardholder for themselves, an admin of the booking app for someone.
/// 409 `slot_taken` when another booking holds any of the time; 409 `too_many_bookings`
/// when a member already holds the room's `max_per_person` bookings still to come.
#[utoipa::path(tag = "booking", request_body = CreateBooking, security(("bearer" = [])),
    responses((status = 201, body = BookingView), Problems))]
#[post("/bookings")]
pub async fn create_booking(
    state: web::Data<AppState>,
    caller: Auth<BookingMember>,
    Json(body): Json<CreateBooking>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    c.text("title", &body.title, 1, TITLE_CHARS_MAX);
    checked(c)?;
    let room = match state.store.get_room(tenant, body.room_id).await {
        Ok(room) => room,
        Err(StoreError::NotFound) => {
            return Err(ApiError::invalid_field("room_id", "exists", "no such room"))
        }
        Err(e) => return Err(e.into()),
    };
    let attendees = body.attendees.unwrap_or(1);
    if !(1..=room.capacity).contains(&attendees) {
        return Err(ApiError::invalid_field(
            "attendees",
            "range",
            format!("1 to the room's capacity, {}", room.capacity),
        ));
    }
    let user = member(&state, &caller, body.user_id).await?;
    let now = state.clock.now();
    let policy = state.policy(tenant).await?;
    check_booking(&room, &policy.tz, body.starts_at, body.ends_at, now)
        .map_err(|(field, rule, message)| ApiError::invalid_field(field, rule, message))?;
    let booking = Booking {
        id: BookingId::new(),
        room_id: room.id,
        user_id: user.id,
        title: body.title,
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        attendees,
        status: BookingStatus::Confirmed,
        created_at: now,
        cancelled_at: None,
    };
    let audit = (caller.kind == TokenKind::Admin).then(|| {
        caller.audit(
            &state,
            "booking.create",
            "booking",
            booking.id,
            serde_json::json!({ "room_id": room.id, "user_id": user.id }),
        )
    });
    // A member holds at most the room's `max_per_person`; an admin may book past it.
    let cap = (caller.kind == TokenKind::Cardholder).then_some(room.max_per_person);
    state
        .store
        .create_booking(tenant, booking.clone(), cap, audit)
        .await?;
    Ok(HttpResponse::Created().json(BookingView {
        booking,
        room_name: room.name,
        user_name: user.name,
    }))
}

/// A booking's page: for every member of the organisation (share its link with
/// colleagues) and the booking app's admins; nobody else.
#[utoipa::path(tag = "booking", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = BookingView), Problems))]
#[get("/bookings/{id}")]
pub async fn get_booking(
    state: web::Data<AppState>,
    caller: Auth<BookingMember>,
    id: web::Path<String>,
) -> Result<web::Json<BookingView>, ApiError> {
    let tenant = caller.tenant()?;
    if caller.kind == TokenKind::Cardholder {
        // Members only: someone who left sees nothing.
        match state
            .store
            .get_user(tenant, UserId(caller.subject()?))
            .await
        {
            Ok(u) if u.status == UserStatus::Active => {}
            Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::NotFound),
            Err(e) => return Err(e.into()),
        }
    }
    let booking = state.store.get_booking(tenant, path_id(&id)?).await?;
    Ok(web::Json(view(&state, tenant, booking).await?))
}

async fn view(
    state: &AppState,
    tenant: onecard_schema::ids::TenantId,
    booking: Booking,
) -> Result<BookingView, ApiError> {
    let room = state.store.get_room(tenant, booking.room_id).await?;
    let user = state.store.get_user(tenant, booking.user_id).await?;
    Ok(BookingView {
        booking,
        room_name: room.name,
        user_name: user.name,
    })
}

/// Cancel a booking (whom it is for, or an admin of the booking app): its time is free
/// at once. Cancelling again answers it as it is; one that has ended is 409
/// `booking_over`.
#[utoipa::path(tag = "booking", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = BookingView), Problems))]
#[post("/bookings/{id}/cancel")]
pub async fn cancel_booking(
    state: web::Data<AppState>,
    caller: Auth<BookingMember>,
    id: web::Path<String>,
) -> Result<web::Json<BookingView>, ApiError> {
    let tenant = caller.tenant()?;
    let booking = state.store.get_booking(tenant, path_id(&id)?).await?;
    let admin = caller.kind == TokenKind::Admin;
    if !admin && caller.subject()? != booking.user_id.0 {
        return Err(ApiError::forbidden(
            "forbidden",
            "only whom the booking is for, or an admin, may cancel it",
        ));
    }
    let now = state.clock.now();
    if booking.status == BookingStatus::Confirmed && booking.ends_at <= now {
        return Err(ApiError::conflict(
            "booking_over",
            "this booking has ended; it stays on record",
        ));
    }
    let audit = admin.then(|| {
        caller.audit(
            &state,
            "booking.cancel",
            "booking",
            booking.id,
            serde_json::json!({ "user_id": booking.user_id }),
        )
    });
    let cancelled = state
        .store
        .cancel_booking(tenant, booking.id, now, audit)
        .await?;
    Ok(web::Json(view(&state, tenant, cancelled).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BookingParams {
    pub room_id: Option<RoomId>,
    pub user_id: Option<UserId>,
    /// Only those ending after this.
    pub from: Option<Timestamp>,
    /// Only those starting before this.
    pub to: Option<Timestamp>,
    /// `confirmed` (those that hold their time) or `cancelled`.
    pub status: Option<BookingStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Bookings, oldest first, by room, person, time and status (the booking app's admins).
#[utoipa::path(tag = "booking", params(BookingParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Booking>), Problems))]
#[get("/bookings")]
pub async fn list_bookings(
    state: web::Data<AppState>,
    caller: Auth<BookingManager>,
    Query(params): Query<BookingParams>,
) -> Result<web::Json<Paged<Booking>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(BookingId)?;
    let filter = BookingFilter {
        room: params.room_id,
        user: params.user_id,
        status: params.status,
        ends_after: params.from,
        starts_before: params.to,
    };
    let found = state
        .store
        .list_bookings(caller.tenant()?, filter, page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

/// My bookings still to come (a cardholder), oldest first.
#[utoipa::path(tag = "me", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Booking>), Problems))]
#[get("/me/bookings")]
pub async fn list_my_bookings(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<Booking>>, ApiError> {
    let filter = BookingFilter {
        user: Some(UserId(caller.subject()?)),
        status: Some(BookingStatus::Confirmed),
        ends_after: Some(state.clock.now()),
        ..BookingFilter::default()
    };
    let found = state
        .store
        .list_bookings(caller.tenant()?, filter, params.page(BookingId)?)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}
