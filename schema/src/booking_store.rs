//! The room booking half of the store (SPEC §13). Bookings never overlap: each holds one
//! row per 5-minute granule of its time in `booking_slots`, whose primary key is (room,
//! granule), so two bookings of one moment cannot both commit, however they race.
//! Granules, not the room's slots, so a room whose slot length changes keeps its old
//! bookings' times guarded.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{BookingId, RoomId, TenantId, UserId};
use crate::model::{Audit, Booking, Page, PageReq, Room};

/// The granule bookings are held by, in minutes: rooms' slots are multiples of it.
pub const GRANULE_MINUTES: i64 = 5;

/// Which bookings a list returns.
#[derive(Clone, Debug, Default)]
pub struct BookingFilter {
    pub room: Option<RoomId>,
    pub user: Option<UserId>,
    pub status: Option<crate::model::BookingStatus>,
    /// Only those ending after this.
    pub ends_after: Option<Timestamp>,
    /// Only those starting before this.
    pub starts_before: Option<Timestamp>,
}

#[async_trait]
pub trait BookingStore: Send + Sync + 'static {
    async fn create_room(&self, tenant: TenantId, room: Room, audit: Audit) -> StoreResult<()>;
    async fn get_room(&self, tenant: TenantId, id: RoomId) -> StoreResult<Room>;
    /// By name.
    async fn list_rooms(&self, tenant: TenantId) -> StoreResult<Vec<Room>>;
    async fn update_room(&self, tenant: TenantId, room: Room, audit: Audit) -> StoreResult<()>;
    /// Refused with 409 `room_booked` while a confirmed booking of it ends after `now`;
    /// otherwise the room goes with its past bookings.
    async fn delete_room(
        &self,
        tenant: TenantId,
        id: RoomId,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;

    /// Stores a confirmed booking with its granules; 409 `slot_taken` (and nothing
    /// written) when another confirmed booking holds any of them, and 409
    /// `too_many_bookings` when `cap` is given and the person already holds that many
    /// confirmed bookings of the room ending after the new one's creation (counted with
    /// their other bookings held off, so two at once cannot both slip under it). `audit`
    /// when an admin books.
    async fn create_booking(
        &self,
        tenant: TenantId,
        booking: Booking,
        cap: Option<u32>,
        audit: Option<Audit>,
    ) -> StoreResult<()>;
    async fn get_booking(&self, tenant: TenantId, id: BookingId) -> StoreResult<Booking>;
    /// Marks it cancelled at `at` and frees its granules; a cancelled one is answered as
    /// it is.
    async fn cancel_booking(
        &self,
        tenant: TenantId,
        id: BookingId,
        at: Timestamp,
        audit: Option<Audit>,
    ) -> StoreResult<Booking>;
    /// By id (creation order).
    async fn list_bookings(
        &self,
        tenant: TenantId,
        filter: BookingFilter,
        page: PageReq<BookingId>,
    ) -> StoreResult<Page<Booking, BookingId>>;
}
