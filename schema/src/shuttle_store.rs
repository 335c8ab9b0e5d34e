//! The shuttle-bus half of the store (SPEC §13): routes, the buses on them, binding a
//! bus's verifying phone, and the rides it verifies. A ride carries its outbox event,
//! written in the same transaction.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{BusId, RideId, ShuttleRouteId, TenantId, UserId};
use crate::model::{Audit, Bus, NewToken, Page, PageReq, Ride, ShuttleRoute};
use crate::wallet::OutboxEvent;

/// What recording a scan that counts once (a ride, a maintenance visit) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnceWrite<T> {
    /// Recorded now, with its event.
    Created,
    /// This code was recorded here already (scanned twice): that record.
    Repeat(T),
    /// This personal code was recorded elsewhere already (a screenshot passed on): that
    /// record.
    Used(T),
}

/// What recording a ride did: `Repeat` on the same bus, `Used` on another.
pub type RideWrite = OnceWrite<Ride>;

/// Which rides a list returns.
#[derive(Clone, Debug, Default)]
pub struct RideFilter {
    pub route: Option<ShuttleRouteId>,
    pub bus: Option<BusId>,
    pub user: Option<UserId>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
}

#[async_trait]
pub trait ShuttleStore: Send + Sync + 'static {
    /// `shuttle_route_name_taken` when another route of the tenant has the name.
    async fn create_route(
        &self,
        tenant: TenantId,
        route: ShuttleRoute,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_route(&self, tenant: TenantId, id: ShuttleRouteId) -> StoreResult<ShuttleRoute>;
    /// By name.
    async fn list_routes(&self, tenant: TenantId) -> StoreResult<Vec<ShuttleRoute>>;
    async fn update_route(
        &self,
        tenant: TenantId,
        route: ShuttleRoute,
        audit: Audit,
    ) -> StoreResult<()>;
    /// `bus_name_taken` when another bus of the tenant has the name; the route must be the
    /// tenant's (`InvalidReference` on `route_id`).
    async fn create_bus(&self, tenant: TenantId, bus: Bus, audit: Audit) -> StoreResult<()>;
    async fn get_bus(&self, tenant: TenantId, id: BusId) -> StoreResult<Bus>;
    /// By name; only the route's when given.
    async fn list_buses(
        &self,
        tenant: TenantId,
        route: Option<ShuttleRouteId>,
    ) -> StoreResult<Vec<Bus>>;
    /// A new name or route (the same rules as `create_bus`).
    async fn update_bus(&self, tenant: TenantId, bus: Bus, audit: Audit) -> StoreResult<()>;
    /// Gives the bus a one-time binding link (its SHA-256), replacing any earlier one.
    async fn set_bus_binding(
        &self,
        tenant: TenantId,
        id: BusId,
        binding_hash: [u8; 32],
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Opens a binding link: the bus whose unexpired link this is gets `token` (of kind
    /// `verifier`; its tenant and subject are filled in here) as its one verifying phone,
    /// and loses any earlier phone's; the link is used up. `Gone` when no bus has such a
    /// link, or it expired. The audit entry's tenant and target are filled in here too.
    async fn bind_verifier(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(TenantId, Bus)>;
    /// Revokes the bus's verifying phone and any binding link not yet used.
    async fn unbind_bus(&self, tenant: TenantId, id: BusId, audit: Audit) -> StoreResult<Bus>;
    /// Stores a ride with its outbox event, unless the personal code (its `nonce`) boarded
    /// already: then that ride, unchanged.
    /// With `reboard_since`, a rider who boarded the route at or after it with another code
    /// is answered with that ride (`Repeat`), and nothing is stored: one ride per trip.
    /// Rides of one rider are checked one at a time.
    async fn record_ride(
        &self,
        tenant: TenantId,
        ride: Ride,
        nonce: Vec<u8>,
        event: OutboxEvent,
        reboard_since: Option<Timestamp>,
    ) -> StoreResult<RideWrite>;
    /// Oldest first, by id, with the names as they are now.
    async fn list_rides(
        &self,
        tenant: TenantId,
        filter: RideFilter,
        page: PageReq<RideId>,
    ) -> StoreResult<Page<Ride, RideId>>;
}
