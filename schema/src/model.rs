//! The records the store reads and writes. They are plain data: the rules that decide
//! what may be written live in `onecard-actors`, the wire shapes in `onecard`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{
    AdminGroupId, AdminId, AppId, AuditId, BookingId, BusId, CardClaimId, CardId, CheckInId,
    CheckinEventId, DeliveryId, DepartmentId, DeviceId, DeviceTypeId, IdentityTypeId,
    MaintenanceId, MerchantId, RideId, RoomId, ShuttleRouteId, TagId, TenantGroupId, TenantId,
    TerminalId, UserId, VisitId, VisitorRequestId,
};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$va:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$va])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What kind of organisation a tenant is.
    TenantKind { K12 => "k12", University => "university", Enterprise => "enterprise" }
);

string_enum!(
    /// The product edition; it decides which capabilities are switched on.
    Edition {
        BasicEdu => "basic_edu",
        Standard => "standard",
        Advanced => "advanced",
        Professional => "professional",
        Flagship => "flagship",
    }
);

string_enum!(
    /// What a bearer token stands for.
    TokenKind {
        Root => "root",
        Admin => "admin",
        Terminal => "terminal",
        Cardholder => "cardholder",
        /// A shuttle bus's verifying phone (its subject is the bus).
        Verifier => "verifier",
        /// An app's signed request (no bearer token; never stored in `tokens`).
        App => "app",
    }
);

string_enum!(
    /// An administrator's role.
    AdminRole { SuperAdmin => "super_admin", SubAdmin => "sub_admin" }
);

string_enum!(
    /// How far a grant reaches: `view` reads, `manage` reads and changes. Ordered, so
    /// `manage` satisfies a need for `view`.
    GrantLevel { View => "view", Manage => "manage" }
);

string_enum!(
    /// A basic feature a sub-admin group may be granted (SPEC §11).
    Feature {
        Notifications => "notifications",
        Cards => "cards",
        Payments => "payments",
        Identity => "identity",
        ApiConfig => "api_config",
        /// A tenant group's head tenant: `view` sees the group, its members and its people,
        /// and acts in the members with the sub-admin's other grants; `manage` also
        /// changes the group's people (unlinks a record).
        Group => "group",
    }
);

string_enum!(
    /// A scenario app a group may be granted (SPEC §13); app admins are such groups.
    ScenarioApp {
        Visitors => "visitors",
        Maintenance => "maintenance",
        Checkin => "checkin",
        Booking => "booking",
        Canteen => "canteen",
        Shuttle => "shuttle",
    }
);

string_enum!(
    /// What kind of app (SPEC §12): an H5 page, a mini-program, or headless (credentials
    /// only, to call the API). Each calls the API the same way; the H5 link and the
    /// mini-program code arrive with the card's launcher.
    AppKind { H5 => "h5", MiniProgram => "mini_program", Headless => "headless" }
);

string_enum!(
    /// What an app's signed requests may do.
    AppScope {
        /// Departments, tags and users: read.
        DirectoryRead => "directory_read",
        /// Departments and users: create and change.
        DirectoryWrite => "directory_write",
        /// Merchants, wallets, payments, arrears, the ledger check: read.
        PaymentsRead => "payments_read",
        /// Top-ups, coupons, refunds, freezes, merchants and terminals.
        PaymentsWrite => "payments_write",
        /// The financial reports (with an analytics edition).
        ReportsRead => "reports_read",
        /// Check-in events, their attendees and check-ins: read.
        CheckinRead => "checkin_read",
        /// Check-in events and attendees: create and change; check people in (a gate).
        CheckinWrite => "checkin_write",
        /// Visitors' requests and their figures: read.
        VisitorsRead => "visitors_read",
        /// Let visitors in (a gate or turnstile that reads their passes).
        VisitorsGate => "visitors_gate",
        /// Shuttle rides: read.
        ShuttleRead => "shuttle_read",
        /// Maintenance records: read.
        MaintenanceRead => "maintenance_read",
        /// Claim tickets: vouch that an account of the tenant's channel (its official
        /// account) may claim cards, and whether it follows.
        ClaimTickets => "claim_tickets",
        /// Redeem the launch tickets with which the card's launcher opens the app's page:
        /// who opened it (name, number, identity).
        Launch => "launch",
    }
);

string_enum!(
    /// Whether an admin has opened their binding link yet.
    AdminStatus { Pending => "pending", Active => "active" }
);

string_enum!(
    /// A cardholder's status in the directory.
    UserStatus { Active => "active", Suspended => "suspended", Left => "left" }
);

string_enum!(
    /// What the tenant's month-end cut-off does with arrears still owed (SPEC §7): carry
    /// them into the next month, or write them off so that the month closes.
    #[derive(Default)]
    ArrearsPolicy { #[default] CarryOver => "carry_over", WriteOff => "write_off" }
);

/// Per-tenant switches (SPEC §5, §6, §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// A deferred-debit agreement is required before a payment code is issued.
    pub require_agreement: bool,
    /// Refunds of an expired coupon's or subsidy's share go to the cash balance.
    pub refund_expired_to_cash: bool,
    /// At the first local midnight of a month, arrears that became owed before it are
    /// carried over (default) or written off.
    #[serde(default)]
    pub arrears_at_month_end: ArrearsPolicy,
    /// Since when `write_off` is in force (set by the server when it is switched on): the
    /// first cut-off after it is the first that writes off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrears_write_off_since: Option<Timestamp>,
    /// How long the scenario apps' personal records are kept (absent: all kept). Only
    /// written once a tenant sets it, so that nodes of earlier releases read the others.
    #[serde(
        default,
        skip_serializing_if = "crate::retention::Retention::keeps_all"
    )]
    pub retention: crate::retention::Retention,
    /// Cardholders topping up their own wallet through the payment provider (off unless
    /// the tenant turns it on). Only written once a tenant changes it, so that nodes of
    /// earlier releases read the others.
    #[serde(default, skip_serializing_if = "OnlineTopUps::is_default")]
    pub online_topups: OnlineTopUps,
}

/// A tenant's online top-ups: whether cardholders may pay the provider to top up their own
/// wallet, and how much one payment may be (fen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OnlineTopUps {
    pub enabled: bool,
    #[schema(minimum = 1)]
    pub min: i64,
    #[schema(minimum = 1)]
    pub max: i64,
}

impl OnlineTopUps {
    /// Off, 1 to 500 yuan a payment.
    pub const DEFAULT: OnlineTopUps = OnlineTopUps {
        enabled: false,
        min: 100,
        max: 50_000,
    };

    pub fn is_default(&self) -> bool {
        *self == Self::DEFAULT
    }
}

impl Default for OnlineTopUps {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            require_agreement: true,
            refund_expired_to_cash: false,
            arrears_at_month_end: ArrearsPolicy::CarryOver,
            arrears_write_off_since: None,
            retention: Default::default(),
            online_topups: OnlineTopUps::DEFAULT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub kind: TenantKind,
    pub edition: Edition,
    pub timezone: String,
    pub settings: TenantSettings,
    pub created_at: Timestamp,
    /// The tenant group it belongs to, if any.
    pub group_id: Option<TenantGroupId>,
}

/// What the store knows of a presented token (looked up by its SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub kind: TokenKind,
    pub tenant_id: Option<TenantId>,
    /// The admin, terminal or user the token belongs to.
    pub subject_id: Option<uuid::Uuid>,
    /// For admin tokens: the admin's role.
    pub role: Option<AdminRole>,
    /// For a sub-admin's token: what its group grants; for a cardholder's, the departments
    /// their identity type manages (its management scope), if any.
    pub grants: Option<Grants>,
    /// The tenant's edition, joined in so one lookup answers the capability check.
    pub edition: Option<Edition>,
}

/// A token to be stored: only its hash ever reaches the store.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub hash: [u8; 32],
    pub kind: TokenKind,
    pub tenant_id: Option<TenantId>,
    pub subject_id: Option<uuid::Uuid>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Admin {
    pub id: AdminId,
    /// The user this admin is; null only for the tenant's first super admin.
    pub user_id: Option<UserId>,
    pub role: AdminRole,
    /// A sub-admin's permission group; null for a super admin.
    pub group_id: Option<AdminGroupId>,
    pub status: AdminStatus,
    pub created_at: Timestamp,
    pub bound_at: Option<Timestamp>,
}

/// A department a group may see (`view`) or change (`manage`), with everything under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepartmentGrant {
    pub id: DepartmentId,
    pub access: GrantLevel,
}

/// A tag whose users a group may see (`view`) or change (`manage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagGrant {
    pub id: TagId,
    pub access: GrantLevel,
}

/// What a sub-admin group grants (SPEC §11). Stored as one JSON document with the group.
/// (Requests are checked by their own shapes; this one is also flattened into
/// `AdminGroup`, so it allows the fields beside it.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Grants {
    /// Departments, each with its whole subtree.
    #[serde(default)]
    pub departments: Vec<DepartmentGrant>,
    /// Tags: their users, wherever those users sit in the tree.
    #[serde(default)]
    pub tags: Vec<TagGrant>,
    /// Basic features and how far each reaches, e.g. `{"payments":"view"}`.
    #[serde(default)]
    pub features: std::collections::BTreeMap<Feature, GrantLevel>,
    /// Scenario apps the group administers.
    #[serde(default)]
    pub apps: Vec<ScenarioApp>,
}

impl Grants {
    /// Whether the grants reach `feature` at `level` or beyond.
    pub fn allows(&self, feature: Feature, level: GrantLevel) -> bool {
        self.features.get(&feature).is_some_and(|l| *l >= level)
    }
}

/// A sub-admin permission group, e.g. "Finance".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AdminGroup {
    pub id: AdminGroupId,
    pub name: String,
    #[serde(flatten)]
    pub grants: Grants,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct NewAdmin {
    pub id: AdminId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: AdminRole,
    /// A sub-admin's permission group; `None` for a super admin.
    pub group_id: Option<AdminGroupId>,
    pub binding_hash: [u8; 32],
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Department {
    pub id: DepartmentId,
    pub name: String,
    pub parent_id: Option<DepartmentId>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tag {
    pub id: TagId,
    pub name: String,
    pub created_at: Timestamp,
}

/// An ID-document number as kept: a keyed hash to verify against, and the last four
/// characters to show. The full number is never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdNumber {
    pub hash: [u8; 32],
    pub last4: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub number: String,
    pub phone: Option<String>,
    /// Last four characters of the ID number, if one is on file.
    pub id_last4: Option<String>,
    pub identity: Option<String>,
    pub status: UserStatus,
    pub department_ids: Vec<DepartmentId>,
    pub tag_ids: Vec<TagId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user to create, or (in imports) to create or update by `number`.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: UserId,
    pub name: String,
    pub number: String,
    pub phone: Option<String>,
    pub id_number: Option<IdNumber>,
    pub identity: Option<String>,
    pub department_ids: Vec<DepartmentId>,
    pub tag_ids: Vec<TagId>,
}

/// A partial update; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct UserPatch {
    pub name: Option<String>,
    pub number: Option<String>,
    pub phone: Option<Option<String>>,
    pub id_number: Option<Option<IdNumber>>,
    pub identity: Option<Option<String>>,
    pub status: Option<UserStatus>,
    /// Replaces every department membership (this is how a user is moved).
    pub department_ids: Option<Vec<DepartmentId>>,
    /// Replaces every tag.
    pub tag_ids: Option<Vec<TagId>>,
    /// The user's memberships as a sub-admin's scope check saw them: the change applies
    /// only if they are still those (409 `user_changed` otherwise), so that a concurrent
    /// move cannot slip between the check and the write.
    pub expect: Option<Memberships>,
}

/// A user's departments and tags, as sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memberships {
    department_ids: Vec<DepartmentId>,
    tag_ids: Vec<TagId>,
}

impl Memberships {
    pub fn of(user: &User) -> Self {
        let mut m = Memberships {
            department_ids: user.department_ids.clone(),
            tag_ids: user.tag_ids.clone(),
        };
        m.department_ids.sort();
        m.department_ids.dedup();
        m.tag_ids.sort();
        m.tag_ids.dedup();
        m
    }
}

/// One change applied to many users at once, atomically.
#[derive(Clone, Debug, Default)]
pub struct BatchUserUpdate {
    pub user_ids: Vec<UserId>,
    pub status: Option<UserStatus>,
    pub identity: Option<Option<String>>,
    pub department_ids: Option<Vec<DepartmentId>>,
    pub add_tag_ids: Vec<TagId>,
    pub remove_tag_ids: Vec<TagId>,
    /// As `UserPatch::expect`, for each user a sub-admin's check saw.
    pub expect: Option<Vec<(UserId, Memberships)>>,
}

#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    pub department_id: Option<DepartmentId>,
    pub tag_id: Option<TagId>,
    /// Substring of the name, or prefix of the number.
    pub q: Option<String>,
    pub status: Option<UserStatus>,
    /// Only users in one of these departments or with one of these tags (a sub-admin's
    /// scope); `None` for everyone.
    pub within: Option<UserScope>,
    /// Only these users (a batch read in one query); `None` for any.
    pub ids: Option<Vec<UserId>>,
}

/// The departments (already expanded to their subtrees) and tags a list is limited to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserScope {
    pub department_ids: Vec<DepartmentId>,
    pub tag_ids: Vec<TagId>,
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportOutcome {
    /// Rows applied (created + updated).
    pub imported: u64,
    pub created: u64,
    pub updated: u64,
}

/// Counts for the directory dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct DirectoryStats {
    pub users: u64,
    pub by_status: Vec<CountBy>,
    pub by_identity: Vec<CountBy>,
    pub by_department: Vec<CountBy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CountBy {
    /// The status, identity or department id counted; `null` for "none".
    pub key: Option<String>,
    pub count: u64,
}

/// An app of the open platform. Its secret is never stored: it is derived from the
/// master key, the id and `secret_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct App {
    /// Also the app's `app_key`.
    pub id: AppId,
    pub name: String,
    pub kind: AppKind,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub scopes: Vec<AppScope>,
    /// Where the app's events go (`POST`, signed); none, none go.
    pub webhook_url: Option<String>,
    /// The event types it wants there; each needs a scope that reads it.
    pub webhook_events: Vec<WebhookEvent>,
    /// An H5 app's or mini-program's page, which the card's launcher opens with a
    /// one-time `onecard_ticket` (the app's server redeems it for who opened it).
    pub entry_url: Option<String>,
    /// Bumped by each secret rotation; the older secret stops working at once.
    pub secret_version: i32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

string_enum!(
    /// An event type an app may have delivered to its webhook: the tenant-wide events,
    /// named as on the websocket.
    WebhookEvent {
        #[serde(rename = "payment.succeeded")]
        PaymentSucceeded => "payment.succeeded",
        #[serde(rename = "payment.accepted")]
        PaymentAccepted => "payment.accepted",
        #[serde(rename = "payment.declined")]
        PaymentDeclined => "payment.declined",
        #[serde(rename = "payment.unsettled")]
        PaymentUnsettled => "payment.unsettled",
        #[serde(rename = "payment.refunded")]
        PaymentRefunded => "payment.refunded",
        #[serde(rename = "payment.written_off")]
        PaymentWrittenOff => "payment.written_off",
        #[serde(rename = "wallet.frozen")]
        WalletFrozen => "wallet.frozen",
        #[serde(rename = "wallet.unfrozen")]
        WalletUnfrozen => "wallet.unfrozen",
        #[serde(rename = "arrears.written_off")]
        ArrearsWrittenOff => "arrears.written_off",
        #[serde(rename = "checkin.confirmed")]
        CheckinConfirmed => "checkin.confirmed",
        #[serde(rename = "checkin.failed")]
        CheckinFailed => "checkin.failed",
        #[serde(rename = "collection.visit")]
        CollectionVisit => "collection.visit",
        #[serde(rename = "visitor.requested")]
        VisitorRequested => "visitor.requested",
        #[serde(rename = "visitor.entered")]
        VisitorEntered => "visitor.entered",
        #[serde(rename = "shuttle.ride")]
        ShuttleRide => "shuttle.ride",
        #[serde(rename = "maintenance.recorded")]
        MaintenanceRecorded => "maintenance.recorded",
        #[serde(rename = "card.activated")]
        CardActivated => "card.activated",
    }
);

impl WebhookEvent {
    /// The scope an app needs to have this event delivered: the one that reads it.
    pub fn scope(self) -> AppScope {
        match self {
            WebhookEvent::CheckinConfirmed | WebhookEvent::CheckinFailed => AppScope::CheckinRead,
            WebhookEvent::VisitorRequested | WebhookEvent::VisitorEntered => AppScope::VisitorsRead,
            WebhookEvent::ShuttleRide => AppScope::ShuttleRead,
            WebhookEvent::MaintenanceRecorded => AppScope::MaintenanceRead,
            // The official account's backend that vouched for the claim hears it done.
            WebhookEvent::CardActivated => AppScope::ClaimTickets,
            _ => AppScope::PaymentsRead,
        }
    }
}

string_enum!(
    /// Where a webhook delivery stands: waiting for its next attempt, acknowledged by the
    /// app, or given up after its retries.
    DeliveryStatus { Pending => "pending", Delivered => "delivered", Failed => "failed" }
);

/// An app that wants events: what the relay needs to pick them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSubscription {
    pub tenant: TenantId,
    pub edition: Edition,
    pub app: AppId,
    pub events: Vec<WebhookEvent>,
    pub scopes: Vec<AppScope>,
    pub url: String,
    pub secret_version: i32,
}

/// A delivery to make: one event for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub tenant: TenantId,
    pub app: AppId,
    pub event_id: uuid::Uuid,
    pub kind: String,
    /// The event's data, JSON.
    pub payload: String,
    pub event_at: Timestamp,
    /// Retries stop after this (the delivery is `failed`, and an admin may redeliver it).
    pub give_up_at: Timestamp,
    pub created_at: Timestamp,
    /// Stored as claimed already, its first attempt leased until then to the node that
    /// stores it (and sends it at once); `None` leaves it to the next claim.
    pub lease_until: Option<Timestamp>,
}

/// A delivery a node has taken to send now: its lease runs until `next_attempt_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub delivery: NewDelivery,
    /// This attempt's number, 1 for the first.
    pub attempt: i32,
    pub url: String,
    pub secret_version: i32,
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub id: DeliveryId,
    /// The attempt's number, as claimed.
    pub attempt: i32,
    pub at: Timestamp,
    /// The answer's HTTP status, if one came.
    pub http_status: Option<i32>,
    /// Why it failed (a timeout, a refused connection, a non-2xx status), if it did.
    pub error: Option<String>,
    /// `Delivered`, `Failed` (given up) or `Pending` (retried at `retry_at`).
    pub status: DeliveryStatus,
    pub retry_at: Option<Timestamp>,
}

/// A delivery as admins see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct WebhookDelivery {
    pub id: DeliveryId,
    pub app_id: AppId,
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<Timestamp>,
    pub give_up_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last answer, if one came.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    pub event_at: Timestamp,
    pub created_at: Timestamp,
}

/// Who did an audited action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Root,
    Admin(AdminId),
    /// An app's signed request.
    App(AppId),
    /// Someone acting through a one-time link (e.g. binding themselves as admin).
    Link,
    /// A member acting with their card's token (a holder of a managing identity).
    Member(UserId),
    /// A tenant group's admin (a super admin of the group's head tenant) acting in a
    /// member tenant.
    GroupAdmin {
        tenant: TenantId,
        admin: AdminId,
    },
    /// The server itself (a purge past the tenant's retention).
    System,
}

impl Actor {
    pub fn as_string(&self) -> String {
        match self {
            Actor::Root => "root".into(),
            Actor::Admin(id) => format!("admin:{id}"),
            Actor::App(id) => format!("app:{id}"),
            Actor::Link => "link".into(),
            Actor::Member(id) => format!("user:{id}"),
            Actor::GroupAdmin { tenant, admin } => format!("group_admin:{tenant}/{admin}"),
            Actor::System => "system".into(),
        }
    }
}

/// 409 `binding_not_yours`: an admin binding opened with another person's card.
pub fn binding_not_yours() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "binding_not_yours",
        None,
        "this binding link names someone else: the person named opens it themselves",
    )
}

/// An audit-log entry to write in the same transaction as the change it records.
#[derive(Clone, Debug)]
pub struct Audit {
    pub id: AuditId,
    pub tenant_id: Option<TenantId>,
    pub actor: Actor,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub request_id: String,
    pub at: Timestamp,
    /// Extra facts; never personal data.
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: AuditId,
    /// `root`, `admin:<id>`, `app:<id>`, `user:<id>` (a department head), `link`, or
    /// `group_admin:<tenant id>/<admin id>` (a tenant group's admin from its head tenant), or
    /// `system` (the server's own work, such as a retention purge).
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub request_id: String,
    pub at: Timestamp,
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target_id: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// A page request: at most `limit` items after `after` (exclusive), in id order.
#[derive(Clone, Copy, Debug)]
pub struct PageReq<Id> {
    pub limit: u32,
    pub after: Option<Id>,
}

#[derive(Clone, Debug)]
pub struct Page<T, Id> {
    pub items: Vec<T>,
    /// Present when more items follow.
    pub next: Option<Id>,
}

/// What an `Idempotency-Key` lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemBegin {
    /// First use: the key is now reserved for this request.
    New,
    /// The same request was answered before.
    Replay { status: u16, body: Vec<u8> },
    /// The key was used for a different request.
    Conflict,
    /// The first request with this key has not finished yet.
    InProgress,
}

// --- event check-in (SPEC §13) ----------------------------------------------------------

/// Where a check-in must be made: within `radius_m` metres of a point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Geofence {
    /// Degrees, WGS 84, −90 to 90.
    #[schema(minimum = -90.0, maximum = 90.0, example = 31.2304)]
    pub latitude: f64,
    /// Degrees, WGS 84, −180 to 180.
    #[schema(minimum = -180.0, maximum = 180.0, example = 121.4737)]
    pub longitude: f64,
    /// 10 to 10,000 metres.
    #[schema(minimum = 10, maximum = 10000, example = 150)]
    pub radius_m: u32,
}

/// An event people check in to: a lecture, a meeting, an exam, a sports day.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct CheckinEvent {
    pub id: CheckinEventId,
    pub name: String,
    /// What the event's QR code carries and what a person may type instead: 8 characters
    /// of `23456789ABCDEFGHJKMNPQRSTUVWXYZ`, unique across all tenants. Rotating it stops
    /// the old one at once.
    pub code: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// Check-in opens this many minutes before `starts_at`; it closes at `ends_at`.
    pub early_minutes: u32,
    /// When set, a person checking in must send a location inside it.
    pub geofence: Option<Geofence>,
    /// When true, only the designated attendees may check in.
    pub designated: bool,
    /// How many designated attendees it has.
    pub attendees: u64,
    /// How many people have checked in.
    pub checked_in: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl CheckinEvent {
    /// When check-in opens.
    pub fn opens_at(&self) -> Timestamp {
        self.starts_at
            .checked_sub(jiff::SignedDuration::from_mins(i64::from(
                self.early_minutes,
            )))
            .unwrap_or(Timestamp::MIN)
    }
}

string_enum!(
    /// Who made a check-in: the person, with the event's code (`self`), or an admin or a
    /// gate for them (`staff`).
    CheckinMethod {
        #[serde(rename = "self")]
        Person => "self",
        Staff => "staff",
    }
);

/// One person's check-in to one event (at most one each).
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct CheckIn {
    pub id: CheckInId,
    pub event_id: CheckinEventId,
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    pub at: Timestamp,
    pub method: CheckinMethod,
    /// How far from the geofence's centre the person said they were, in metres.
    pub distance_m: Option<u32>,
}

/// A designated attendee and whether they have checked in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Attendee {
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    /// When they checked in; null while they have not.
    pub checked_in_at: Option<Timestamp>,
}

/// What a check-in write found.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckInWrite {
    /// Stored now, with its `checkin.confirmed` event.
    Created(CheckIn),
    /// The person had checked in already: their first check-in, unchanged.
    Existing(CheckIn),
    /// The event has designated attendees and the person is not one of them (checked in
    /// the write's transaction, so a removal just before it holds).
    NotDesignated,
}

// --- venue and meeting-room booking (SPEC §13) -------------------------------------------

/// A room or venue people book by the slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Room {
    pub id: RoomId,
    pub name: String,
    /// Where it is ("Library, 3rd floor").
    pub location: Option<String>,
    /// How many people it holds; a booking's `attendees` may not exceed it.
    pub capacity: u32,
    /// Opening time, local to the tenant's time zone, `HH:MM`.
    #[schema(example = "08:00")]
    pub opens: String,
    /// Closing time, local, `HH:MM`, after `opens` (`24:00` for midnight).
    #[schema(example = "22:00")]
    pub closes: String,
    /// The days it opens, ISO weekdays: 1 is Monday, 7 Sunday.
    pub days: Vec<u8>,
    /// A slot's length in minutes; bookings start and end on slots counted from `opens`.
    pub slot_minutes: u32,
    /// The most slots one booking may take.
    pub max_slots: u32,
    /// How many days ahead it may be booked.
    pub book_ahead_days: u32,
    /// How many bookings still to come one member may hold in it (admins may book for
    /// someone past it).
    pub max_per_person: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

string_enum!(
    /// Whether a booking holds its slots.
    BookingStatus { Confirmed => "confirmed", Cancelled => "cancelled" }
);

/// One booking of one room, for one person (who booked it, or for whom an admin did).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Booking {
    pub id: BookingId,
    pub room_id: RoomId,
    pub user_id: UserId,
    pub title: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub attendees: u32,
    pub status: BookingStatus,
    pub created_at: Timestamp,
    pub cancelled_at: Option<Timestamp>,
}

// --- canteen collection codes (SPEC §13) -------------------------------------------------

string_enum!(
    /// What a collection code does when a cardholder scans it: take a payment of the
    /// amount they enter (`pay`), or count a visit without moving money (`count`).
    CollectionMode { Pay => "pay", Count => "count" }
);

/// A merchant's static collection code: the terminal it is, its code (unique across
/// tenants, since a phone scanning it does not say whose it is) and its mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Collection {
    pub code: String,
    pub mode: CollectionMode,
}

/// One visit counted at a count-only collection code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Visit {
    pub id: VisitId,
    pub terminal_id: TerminalId,
    pub merchant_id: MerchantId,
    pub user_id: UserId,
    /// The person's name and number as they are now; null once the user is deleted.
    pub name: Option<String>,
    pub number: Option<String>,
    pub at: Timestamp,
}

/// A shuttle-bus route (SPEC §13).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ShuttleRoute {
    pub id: ShuttleRouteId,
    pub name: String,
    /// Who may ride: people whose identity is one of these; empty, every active member.
    pub identities: Vec<String>,
    /// One ride per trip: a rider who boarded the route less than this many minutes ago
    /// is answered with that ride (already boarded), whichever bus. 0: no limit.
    pub reboard_minutes: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A shuttle bus on a route: the shuttle code one verifying phone is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Bus {
    pub id: BusId,
    pub route_id: ShuttleRouteId,
    /// The bus as its riders know it ("Bus 3, 沪A·12345").
    pub name: String,
    /// When a phone last bound itself to the bus; null while none is.
    pub bound_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One ride verified on a shuttle bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Ride {
    pub id: RideId,
    pub route_id: ShuttleRouteId,
    pub bus_id: BusId,
    pub user_id: UserId,
    /// The route's, the bus's and the rider's names (and the rider's number) as they are
    /// now; null once gone.
    pub route_name: Option<String>,
    pub bus_name: Option<String>,
    pub name: Option<String>,
    pub number: Option<String>,
    pub at: Timestamp,
}

/// When a device type's codes are valid: on `days` (1 Monday to 7 Sunday), from `from` to
/// `to` (HH:MM in the tenant's time zone). A `to` at or before `from` runs past midnight:
/// `{"days":[5],"from":"22:00","to":"06:00"}` is Friday night into Saturday morning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub days: Vec<u8>,
    #[schema(example = "22:00")]
    pub from: String,
    #[schema(example = "06:00")]
    pub to: String,
}

/// A kind of equipment (SPEC §13: computers, lifts…), named by the tenant, with the rules
/// its devices' codes follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeviceType {
    pub id: DeviceTypeId,
    pub name: String,
    /// When its devices' codes are valid; empty, at any time.
    pub windows: Vec<Window>,
    /// Who may be recorded maintaining it: people whose identity is one of these; empty,
    /// every active member.
    pub identities: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One piece of equipment, with its printed maintenance code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Device {
    pub id: DeviceId,
    pub type_id: DeviceTypeId,
    pub name: String,
    /// Where it is ("Library, 3rd floor, lift B").
    pub location: String,
    /// The 8-character code printed on it (its QR code carries `onecard:device:<code>`).
    pub code: String,
    /// When a fixed scanner was last bound to it; null while none is.
    pub bound_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

string_enum!(
    /// How a maintenance visit was verified (SPEC §13's three modes).
    MaintenanceMethod {
        /// The technician scanned the device's code with their phone.
        DeviceCode => "device_code",
        /// An admin of the maintenance app scanned the technician's personal code.
        StaffScan => "staff_scan",
        /// The device's fixed scanner read the technician's personal code.
        FixedScanner => "fixed_scanner",
    }
);

/// One maintenance visit recorded at a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct MaintenanceRecord {
    pub id: MaintenanceId,
    pub device_id: DeviceId,
    pub type_id: DeviceTypeId,
    /// The technician.
    pub user_id: UserId,
    pub method: MaintenanceMethod,
    /// The admin who scanned, for `staff_scan`.
    pub verified_by: Option<AdminId>,
    pub note: Option<String>,
    /// The device's name and location, its type's name and the technician's name and
    /// number, as they are now; null once gone.
    pub device_name: Option<String>,
    pub location: Option<String>,
    pub type_name: Option<String>,
    pub name: Option<String>,
    pub number: Option<String>,
    pub at: Timestamp,
}

string_enum!(
    /// Whether a visitor form asks for a field, and whether it must be filled.
    FieldRule { Off => "off", Optional => "optional", Required => "required" }
);

/// What a tenant's visitor form asks (SPEC §13). The name, the host and the time are
/// always asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitorForm {
    pub phone: FieldRule,
    pub company: FieldRule,
    pub purpose: FieldRule,
    /// A licence plate, bound to the visit for the car gate.
    pub plate: FieldRule,
    /// Real-name check: the visitor gives a resident ID number, which must be a valid one
    /// (its check digit and birth date); only its last four characters are kept.
    pub real_name: bool,
}

impl Default for VisitorForm {
    fn default() -> Self {
        VisitorForm {
            phone: FieldRule::Required,
            company: FieldRule::Optional,
            purpose: FieldRule::Optional,
            plate: FieldRule::Optional,
            real_name: false,
        }
    }
}

string_enum!(
    /// Where a visitor's request stands.
    VisitStatus {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
        Cancelled => "cancelled",
    }
);

/// A visitor's request to visit a member (the host), and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct VisitorRequest {
    pub id: VisitorRequestId,
    pub host_id: UserId,
    /// The host's name as it is now; null once gone.
    pub host_name: Option<String>,
    pub name: String,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub purpose: Option<String>,
    pub plate: Option<String>,
    /// The last four characters of the ID number, under a real-name check.
    pub id_last4: Option<String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub status: VisitStatus,
    /// Why the host rejected it.
    pub reason: Option<String>,
    pub decided_at: Option<Timestamp>,
    /// When the visitor was first let in at a gate.
    pub entered_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_stored_before_the_month_end_policy_existed_carry_arrears_over() {
        let old: TenantSettings =
            serde_json::from_str(r#"{"require_agreement":true,"refund_expired_to_cash":true}"#)
                .unwrap();
        assert_eq!(old.arrears_at_month_end, ArrearsPolicy::CarryOver);
        assert!(old.refund_expired_to_cash);
        let bad = serde_json::from_str::<TenantSettings>(
            r#"{"require_agreement":true,"refund_expired_to_cash":true,"arrears_at_month_end":"forgive"}"#,
        );
        assert!(bad.is_err());
    }
}

string_enum!(
    /// What kind of person an identity type describes (SPEC §3).
    IdentityCategory {
        Student => "student",
        Teacher => "teacher",
        Staff => "staff",
        Alumni => "alumni",
        Visitor => "visitor",
        Other => "other",
    }
);

string_enum!(
    /// How a person of an identity type proves who they are when they claim a card.
    Verification {
        /// A one-time code texted to a phone the tenant imported for them.
        Phone => "phone",
        /// Their name and ID number match a record the tenant imported.
        NameId => "name_id",
        /// Open: they register themselves; nothing is imported.
        Registration => "registration",
        /// The tenant's own identity endpoint is asked, signed.
        External => "external",
    }
);

/// A kind of person the tenant defines (SPEC §3). A user's `identity` is its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct IdentityType {
    pub id: IdentityTypeId,
    /// What users carry as their `identity` (it cannot change once users hold it).
    pub name: String,
    pub category: IdentityCategory,
    pub verification: Verification,
    /// The tenant's identity endpoint, for `external`.
    pub external_url: Option<String>,
    /// The management scope: departments (each with its subtree) whose people the holders
    /// of this identity may see (`view`) or change (`manage`) with their own card's token.
    pub manages: Vec<DepartmentGrant>,
    #[serde(skip)]
    pub secret_version: i32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

string_enum!(
    /// A card product's subtitle, from the fixed list (SPEC §4).
    CardSubtitle {
        CampusCard => "campus_card",
        AlumniCard => "alumni_card",
        StudentCard => "student_card",
        TeacherCard => "teacher_card",
        StaffCard => "staff_card",
        TemporaryCard => "temporary_card",
        VisitorCard => "visitor_card",
        EmployeeCard => "employee_card",
    }
);

string_enum!(
    /// Whether a card is for one identity type or shared by several.
    CardTargeting { OneIdentity => "one_identity", SeveralIdentities => "several_identities" }
);

string_enum!(
    /// Who may open a card's claim link (SPEC §4).
    ClaimMode {
        /// Only accounts that follow the tenant's official account, vouched for by a claim
        /// ticket from its channel.
        FollowRequired => "follow_required",
        /// Any account the tenant's channel vouches for with a claim ticket.
        NoFollow => "no_follow",
        /// Anyone with the link; it may be shared.
        OpenLink => "open_link",
    }
);

string_enum!(
    /// Where a card stands with the platform operator's review.
    CardStatus { PendingReview => "pending_review", Approved => "approved", Rejected => "rejected" }
);

/// A card's cover image, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cover {
    pub bytes: Vec<u8>,
    /// `image/jpeg` or `image/png`, from the bytes.
    pub content_type: String,
    pub sha256: [u8; 32],
}

/// A card product (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Card {
    pub id: CardId,
    pub tenant_id: TenantId,
    pub title: String,
    pub subtitle: CardSubtitle,
    /// Who may claim it.
    pub identity_type_ids: Vec<IdentityTypeId>,
    pub targeting: CardTargeting,
    pub claim_mode: ClaimMode,
    pub status: CardStatus,
    /// Counts the card's changes (1 when created): the operator approves a revision.
    pub revision: i64,
    /// The operator's reason, for a rejection (and a note, for an approval).
    pub review_reason: Option<String>,
    pub reviewed_at: Option<Timestamp>,
    /// The cover's SHA-256 (hex): it is served at `/api/v1/covers/{cover_sha256}`.
    pub cover_sha256: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One person's activated card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CardClaim {
    pub id: CardClaimId,
    pub card_id: CardId,
    pub user_id: UserId,
    pub identity_type_id: IdentityTypeId,
    /// How they proved who they are.
    pub method: Verification,
    /// The account the claim came from, when a claim ticket named one.
    pub account: Option<String>,
    pub claimed_at: Timestamp,
}

/// A card's holder, as the card office lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CardHolder {
    #[serde(flatten)]
    pub claim: CardClaim,
    pub name: String,
    pub number: String,
}

string_enum!(
    /// A channel notices go out on (SPEC §10).
    NoticeChannel {
        OfficialAccount => "official_account",
        Messenger => "messenger",
        Sms => "sms",
    }
);

string_enum!(
    /// Where a notice stands: `scheduled` waits for its time (or a send), `sending` has
    /// deliveries queued, `sent` has none left, `recalled` was taken back (it may be edited
    /// and sent again).
    NoticeStatus {
        Scheduled => "scheduled",
        Sending => "sending",
        Sent => "sent",
        Recalled => "recalled",
    }
);

string_enum!(
    /// Where one person's delivery stands. `sent`: a channel took it; `delivered`: the
    /// channel says it reached the person; `failed`: no channel could.
    NoticeDeliveryStatus {
        Queued => "queued",
        Sent => "sent",
        Delivered => "delivered",
        Failed => "failed",
        Recalled => "recalled",
    }
);
