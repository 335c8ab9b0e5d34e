//! The event check-in half of the store (SPEC §13): events, their designated attendees
//! and check-ins. `Store` requires it, so `Arc<dyn Store>` reaches it. Every admin change
//! carries its `Audit`, written in the same transaction; a check-in carries its outbox
//! event, written in the same transaction too.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{CheckInId, CheckinEventId, TenantId, UserId};
use crate::model::{Attendee, Audit, CheckIn, CheckInWrite, CheckinEvent, Page, PageReq};
use crate::wallet::{OutboxEvent, PendingEvent};

#[async_trait]
pub trait CheckinStore: Send + Sync + 'static {
    /// Refused with 409 `code_taken` when another event (of any tenant) has its code.
    async fn create_event(
        &self,
        tenant: TenantId,
        event: CheckinEvent,
        audit: Audit,
    ) -> StoreResult<()>;
    /// With its attendee and check-in counts.
    async fn get_event(&self, tenant: TenantId, id: CheckinEventId) -> StoreResult<CheckinEvent>;
    /// Oldest first, by id, with their counts.
    async fn list_events(
        &self,
        tenant: TenantId,
        page: PageReq<CheckinEventId>,
    ) -> StoreResult<Page<CheckinEvent, CheckinEventId>>;
    /// Writes the event's own fields (not its counts); `code_taken` as on create.
    async fn update_event(
        &self,
        tenant: TenantId,
        event: CheckinEvent,
        audit: Audit,
    ) -> StoreResult<()>;
    /// The event with its attendees and check-ins.
    async fn delete_event(
        &self,
        tenant: TenantId,
        id: CheckinEventId,
        audit: Audit,
    ) -> StoreResult<()>;
    /// The event a code opens, of whichever tenant (without its counts).
    async fn event_by_code(&self, code: String) -> StoreResult<Option<(TenantId, CheckinEvent)>>;

    /// Designates users of the tenant (each checked to be the tenant's: 422 otherwise);
    /// those designated already stay as they are. Answers how many were added.
    async fn add_attendees(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        users: Vec<UserId>,
        audit: Audit,
    ) -> StoreResult<u64>;
    /// 404 when the user is not designated.
    async fn remove_attendee(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        user: UserId,
        audit: Audit,
    ) -> StoreResult<()>;
    /// By user id; `checked_in` keeps only those who have (true) or have not (false).
    async fn list_attendees(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        checked_in: Option<bool>,
        page: PageReq<UserId>,
    ) -> StoreResult<Page<Attendee, UserId>>;
    /// The active users of the tenant with these numbers, as (number, id); numbers no
    /// active user has are left out.
    async fn users_by_number(
        &self,
        tenant: TenantId,
        numbers: Vec<String>,
    ) -> StoreResult<Vec<(String, UserId)>>;

    /// Stores a check-in with its `checkin.confirmed` event, unless the person has one for
    /// this event already (then that one is answered and nothing is written), or
    /// `designated_only` and they are not designated. `audit` records who checked them in
    /// for them (staff), written with it.
    async fn check_in(
        &self,
        tenant: TenantId,
        check_in: CheckIn,
        designated_only: bool,
        event: OutboxEvent,
        audit: Option<Audit>,
    ) -> StoreResult<CheckInWrite>;
    /// The person's check-in to the event, if they made one (a read: no write, no lock).
    async fn find_check_in(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        user: UserId,
    ) -> StoreResult<Option<CheckIn>>;
    /// Oldest first, by id.
    async fn list_check_ins(
        &self,
        tenant: TenantId,
        event: CheckinEventId,
        page: PageReq<CheckInId>,
    ) -> StoreResult<Page<CheckIn, CheckInId>>;
    /// Writes events that record no change of their own (a refused check-in, for the
    /// event's screen) to the outbox; answers them for the relay.
    async fn insert_events(
        &self,
        tenant: TenantId,
        events: Vec<OutboxEvent>,
        at: Timestamp,
    ) -> StoreResult<Vec<PendingEvent>>;
}
