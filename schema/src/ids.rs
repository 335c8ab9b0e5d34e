//! Typed ids: one newtype per entity, so a `UserId` can never be passed where a
//! `TenantId` is expected. On the wire every id is an opaque string (a UUIDv7, which
//! sorts by creation time and so doubles as a stable cursor key).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid, example = "0193a1b2-0c3d-7e4f-8a9b-0c1d2e3f4a5b")]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// An organisation using OneCard.
    TenantId
);
id_type!(
    /// A group of tenants (a school district, a corporate group).
    TenantGroupId
);
id_type!(
    /// One person across the member tenants of a tenant group (global identity): their
    /// records (users) in several members, linked by the person.
    PersonId
);
id_type!(
    /// An administrator of a tenant (bound or still pending binding).
    AdminId
);
id_type!(
    /// A sub-admin permission group (what its admins may see and change).
    AdminGroupId
);
id_type!(
    /// An app of the open platform; its id is also its `app_key`.
    AppId
);
id_type!(
    /// One event's delivery to one app's webhook (the same across its retries).
    DeliveryId
);
id_type!(
    /// A cardholder.
    UserId
);
id_type!(
    /// A node of a tenant's department tree.
    DepartmentId
);
id_type!(
    /// A label attached to users.
    TagId
);
id_type!(
    /// One audit-log entry.
    AuditId
);
id_type!(
    /// A merchant node (root, site or stall).
    MerchantId
);
id_type!(
    /// A till, POS or collection code belonging to a merchant.
    TerminalId
);
id_type!(
    /// A payment attempt (declined attempts are recorded too).
    PaymentId
);
id_type!(
    /// One subsidy account of one cardholder.
    SubsidyId
);
id_type!(
    /// One coupon of one cardholder.
    CouponId
);
id_type!(
    /// A subsidy issuing rule (maker–checker).
    SubsidyRuleId
);
id_type!(
    /// An outbox event.
    EventId
);
id_type!(
    /// An event people check in to (SPEC §13), not to be confused with an outbox `EventId`.
    CheckinEventId
);
id_type!(
    /// One person's check-in to one event.
    CheckInId
);
id_type!(
    /// A room or venue that can be booked.
    RoomId
);
id_type!(
    /// One booking of a room.
    BookingId
);
id_type!(
    /// One visit counted at a count-only collection code.
    VisitId
);
id_type!(
    /// A shuttle-bus route.
    ShuttleRouteId
);
id_type!(
    /// A shuttle bus: the shuttle code its verifying phone is bound to.
    BusId
);
id_type!(
    /// One ride verified on a shuttle bus.
    RideId
);
id_type!(
    /// A kind of equipment with its own name (computers, lifts…) and code rules.
    DeviceTypeId
);
id_type!(
    /// One piece of equipment with a maintenance code.
    DeviceId
);
id_type!(
    /// One maintenance visit recorded at a device.
    MaintenanceId
);
id_type!(
    /// A visitor's request to visit a member of the organisation.
    VisitorRequestId
);
id_type!(
    /// A kind of person the tenant defines (teacher, student…), with how they prove it.
    IdentityTypeId
);
id_type!(
    /// A card product (campus card, staff card…) people claim.
    CardId
);
id_type!(
    /// One person's activated card.
    CardClaimId
);
id_type!(
    /// A notice: a message to people of the tenant (SPEC §10).
    NoticeId
);
id_type!(
    /// One person's delivery of one round of a notice.
    NoticeDeliveryId
);
id_type!(
    /// A body a tenant's merchants settle to: the tenant itself by default, or a catering
    /// contractor or other legal entity (multi-merchant-entity settlement).
    SettlementEntityId
);
id_type!(
    /// A cardholder's payment to the provider to top up their own wallet (an online
    /// top-up), from the order to the credit.
    ChargeId
);
