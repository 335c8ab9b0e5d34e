//! The one interface both engines implement. Every write that an admin makes carries its
//! `Audit` entry, which the engine writes in the same transaction: a change and its audit
//! record exist together or not at all.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{
    AdminGroupId, AdminId, AppId, AuditId, DeliveryId, DepartmentId, TagId, TenantId, UserId,
};
use crate::model::*;

#[async_trait]
pub trait Store:
    crate::money_store::MoneyStore
    + crate::checkin_store::CheckinStore
    + crate::booking_store::BookingStore
    + crate::collection_store::CollectionStore
    + crate::shuttle_store::ShuttleStore
    + crate::maintenance_store::MaintenanceStore
    + crate::visitor_store::VisitorStore
    + crate::card_store::CardStore
    + crate::charge_store::ChargeStore
    + crate::notice_store::NoticeStore
    + crate::group_store::TenantGroupStore
    + crate::person_store::PersonStore
    + crate::settlement_store::SettlementStore
    + crate::front_end_store::FrontEndStore
    + crate::retention::RetentionStore
    + Send
    + Sync
    + 'static
{
    /// Which engine this is: `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;

    /// A cheap round trip, for readiness probes.
    async fn ping(&self) -> StoreResult<()>;

    // --- tokens -------------------------------------------------------------------
    /// Stores the root token's hash unless a root token exists. True if it was stored.
    async fn insert_root_token_if_none(&self, token: NewToken) -> StoreResult<bool>;
    async fn lookup_token(&self, hash: [u8; 32]) -> StoreResult<Option<TokenRecord>>;
    async fn insert_token(&self, token: NewToken, audit: Audit) -> StoreResult<()>;

    // --- tenants ------------------------------------------------------------------
    /// Creates the tenant, its first (active, user-less) super admin and that admin's token.
    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_id: AdminId,
        admin_token: NewToken,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant>;
    async fn update_tenant(
        &self,
        id: TenantId,
        timezone: Option<String>,
        settings: Option<TenantSettings>,
        audit: Audit,
    ) -> StoreResult<Tenant>;

    // --- admins -------------------------------------------------------------------
    /// A pending admin with a one-time binding. The user must exist in the tenant.
    async fn create_admin(&self, admin: NewAdmin, audit: Audit) -> StoreResult<()>;
    /// Uses a binding: 404 unknown, `Gone` if used or expired; otherwise activates the
    /// admin, stores its token and returns it. `opener`, the member whose card opened the
    /// link (when one did), must be the user named: anyone else gets 409
    /// `binding_not_yours` and the binding stays unused.
    async fn bind_admin(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: Timestamp,
        opener: Option<(TenantId, UserId)>,
        audit: Audit,
    ) -> StoreResult<(TenantId, AdminId)>;
    async fn list_admins(
        &self,
        tenant: TenantId,
        page: PageReq<AdminId>,
    ) -> StoreResult<Page<Admin, AdminId>>;
    /// Removes an admin and revokes its tokens; never the last active super admin.
    async fn delete_admin(&self, tenant: TenantId, id: AdminId, audit: Audit) -> StoreResult<()>;

    // --- admin groups -------------------------------------------------------------
    /// Stores a new group. Its name is unique in the tenant (409 `group_name_taken`);
    /// every department and tag it grants must exist in the tenant (422).
    async fn create_admin_group(
        &self,
        tenant: TenantId,
        group: AdminGroup,
        audit: Audit,
    ) -> StoreResult<()>;
    /// The tenant's groups by name (a tenant has a handful).
    async fn list_admin_groups(&self, tenant: TenantId) -> StoreResult<Vec<AdminGroup>>;
    async fn get_admin_group(&self, tenant: TenantId, id: AdminGroupId) -> StoreResult<AdminGroup>;
    /// Replaces a group's name and grants, with the checks of `create_admin_group`.
    async fn update_admin_group(
        &self,
        tenant: TenantId,
        group: AdminGroup,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Deletes a group that no admin belongs to (409 `group_in_use` otherwise).
    async fn delete_admin_group(
        &self,
        tenant: TenantId,
        id: AdminGroupId,
        audit: Audit,
    ) -> StoreResult<()>;

    // --- apps (open platform) -----------------------------------------------------
    /// Stores a new app; its name is unique in the tenant (409 `app_name_taken`).
    async fn create_app(&self, tenant: TenantId, app: App, audit: Audit) -> StoreResult<()>;
    /// The tenant's apps by name.
    async fn list_apps(&self, tenant: TenantId) -> StoreResult<Vec<App>>;
    async fn get_app(&self, tenant: TenantId, id: AppId) -> StoreResult<App>;
    /// Replaces an app's fields, `secret_version` included (a rotation).
    async fn update_app(&self, tenant: TenantId, app: App, audit: Audit) -> StoreResult<()>;
    async fn delete_app(&self, tenant: TenantId, id: AppId, audit: Audit) -> StoreResult<()>;
    /// Stores a launch ticket (its SHA-256) with which the app learns that `user` opened
    /// it from their card; it replaces the cardholder's earlier ticket for the app.
    async fn put_app_launch(
        &self,
        app: AppId,
        tenant: TenantId,
        user: UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
    ) -> StoreResult<()>;
    /// Spends the app's launch ticket: who opened the app. `Gone` unless the app has an
    /// unexpired ticket with this hash.
    async fn redeem_app_launch(
        &self,
        app: AppId,
        hash: [u8; 32],
        now: Timestamp,
    ) -> StoreResult<(TenantId, UserId)>;
    /// An app by its key, with its tenant and the tenant's edition, for a signed request.
    async fn lookup_app(&self, id: AppId) -> StoreResult<Option<(TenantId, Edition, App)>>;
    /// Records a signed request's nonce; false if the app used it before (a replay).
    async fn use_app_nonce(&self, app: AppId, nonce: String, at: Timestamp) -> StoreResult<bool>;
    /// Forgets nonces seen before `before`; answers how many went.
    async fn purge_app_nonces(&self, before: Timestamp) -> StoreResult<u64>;

    // --- webhooks (open platform) -------------------------------------------------
    /// Every app with a webhook address, with its tenant's edition.
    async fn webhook_subscriptions(&self) -> StoreResult<Vec<WebhookSubscription>>;
    /// Stores deliveries to make. One the store has already (the same app and event: the
    /// relay may hand an event over twice) is left as it is. Answers the new ones' ids:
    /// those with a `lease_until` are the caller's to send now.
    async fn enqueue_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<Vec<DeliveryId>>;
    /// Takes up to `limit` pending deliveries due at `now`, the longest due first, counts
    /// an attempt on each and leases them to the caller until `lease_until`: no other
    /// claim takes them before that (a node that stops while sending leaves them to the
    /// next claim after it). With the app's address and secret version as they are now.
    /// At most `per_app` go to one app, and none to the apps in `skip` (those this node
    /// is busy sending to), so that one app's backlog never fills a claim.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
        per_app: usize,
        skip: Vec<AppId>,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records what attempts came to. An outcome whose delivery has moved on since its
    /// claim (its `attempt` is no longer the last: the lease ran out and another claim
    /// took it, or an admin redelivered it) is dropped.
    async fn finish_deliveries(&self, outcomes: Vec<DeliveryOutcome>) -> StoreResult<()>;
    /// One app's deliveries, newest first, of one status or all; `after` is the last id
    /// of the previous page.
    async fn list_deliveries(
        &self,
        tenant: TenantId,
        app: AppId,
        status: Option<DeliveryStatus>,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> StoreResult<Page<WebhookDelivery, DeliveryId>>;
    /// Sends a delivery again: pending, due at `now`, retried until `give_up_at`. Its
    /// attempts count on. 404 for another app's or tenant's delivery.
    async fn redeliver(
        &self,
        tenant: TenantId,
        app: AppId,
        id: DeliveryId,
        now: Timestamp,
        give_up_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<WebhookDelivery>;
    /// How many deliveries are pending (waiting for an attempt, or being sent), and when
    /// the oldest of them was made.
    async fn webhook_backlog(&self) -> StoreResult<(u64, Option<Timestamp>)>;
    /// Forgets up to `limit` finished (delivered or failed) deliveries made before
    /// `before`; answers how many went.
    async fn purge_deliveries(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;

    // --- directory ----------------------------------------------------------------
    /// Adds a department under its parent, at most `max_depth` levels down, judged
    /// against the tree as it stands in the write (`department_fits`).
    async fn create_department(
        &self,
        tenant: TenantId,
        dept: Department,
        max_depth: usize,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Every department of the tenant (trees are small: a few thousand nodes at most).
    async fn list_departments(&self, tenant: TenantId) -> StoreResult<Vec<Department>>;
    /// Renames a department and puts it under `parent` (`None`: at the top), judged
    /// against the tree as it stands in the write (`department_move_allowed`); 409
    /// `department_name_taken` for a sibling's name.
    async fn update_department(
        &self,
        tenant: TenantId,
        id: DepartmentId,
        name: String,
        parent: Option<DepartmentId>,
        max_depth: usize,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Deletes a department nothing holds: 409 `department_in_use` while it has
    /// sub-departments or members, or an admin group or identity type names it.
    async fn delete_department(
        &self,
        tenant: TenantId,
        id: DepartmentId,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn create_tag(&self, tenant: TenantId, tag: Tag, audit: Audit) -> StoreResult<()>;
    async fn list_tags(&self, tenant: TenantId) -> StoreResult<Vec<Tag>>;
    /// The tag renamed; 409 `tag_name_taken` for another tag's name.
    async fn rename_tag(
        &self,
        tenant: TenantId,
        id: TagId,
        name: String,
        audit: Audit,
    ) -> StoreResult<Tag>;
    /// Deletes a tag nobody carries: 409 `tag_in_use` while someone does or an admin
    /// group grants it.
    async fn delete_tag(&self, tenant: TenantId, id: TagId, audit: Audit) -> StoreResult<()>;

    async fn create_user(
        &self,
        tenant: TenantId,
        user: NewUser,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<User>;
    async fn get_user(&self, tenant: TenantId, id: UserId) -> StoreResult<User>;
    async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<User>;
    /// Refused with a conflict while the user is an admin.
    async fn delete_user(&self, tenant: TenantId, id: UserId, audit: Audit) -> StoreResult<()>;
    async fn list_users(
        &self,
        tenant: TenantId,
        filter: UserFilter,
        page: PageReq<UserId>,
    ) -> StoreResult<Page<User, UserId>>;
    /// Applies one change to every listed user, or to none. Returns how many changed.
    async fn batch_update_users(
        &self,
        tenant: TenantId,
        update: BatchUserUpdate,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<u64>;
    /// Creates or updates (by `number`) every row, or none. Department and tag ids were
    /// resolved by the caller against this tenant.
    async fn import_users(
        &self,
        tenant: TenantId,
        rows: Vec<NewUser>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<ImportOutcome>;
    async fn directory_stats(&self, tenant: TenantId) -> StoreResult<DirectoryStats>;

    // --- audit --------------------------------------------------------------------
    /// An audit entry for a change committed elsewhere (by a wallet actor).
    async fn write_audit(&self, audit: Audit) -> StoreResult<()>;
    /// Newest first.
    async fn list_audit(
        &self,
        tenant: Option<TenantId>,
        filter: AuditFilter,
        page: PageReq<AuditId>,
    ) -> StoreResult<Page<AuditEntry, AuditId>>;

    // --- idempotency ----------------------------------------------------------------
    /// Takes `key` for a request, or says what became of it. A record still in progress
    /// since before `stale_before` (its node stopped while it ran) is taken over by a
    /// request with the same body: that one is `New`.
    async fn idem_begin(
        &self,
        scope: String,
        key: String,
        request_hash: [u8; 32],
        now: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<IdemBegin>;
    async fn idem_finish(
        &self,
        scope: String,
        key: String,
        status: u16,
        body: Vec<u8>,
    ) -> StoreResult<()>;
    /// Forgets an unfinished key (the request failed on our side), so a retry may run.
    async fn idem_abort(&self, scope: String, key: String) -> StoreResult<()>;
    /// Forgets up to `limit` idempotency records created before `before`, oldest first,
    /// and answers how many went. A retry with a forgotten key is a new request.
    async fn purge_idempotency(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
}

/// Whether a user may be deleted: not while they are an admin, and never once they have
/// a wallet (money history is kept; set their status to `left` instead).
pub(crate) fn check_deletable(is_admin: bool, has_wallet: bool) -> crate::error::StoreResult<()> {
    use crate::error::StoreError;
    if is_admin {
        return Err(StoreError::conflict(
            "user_is_admin",
            None,
            "remove this user's admin role first",
        ));
    }
    if has_wallet {
        return Err(StoreError::conflict(
            "user_has_wallet",
            None,
            "this user has a wallet and money history; set their status to left instead",
        ));
    }
    Ok(())
}

/// A value kept as one JSON text column (a group's grants, an app's scopes and webhook
/// event types).
pub(crate) fn to_json_text<T: serde::Serialize + ?Sized>(
    value: &T,
) -> crate::error::StoreResult<String> {
    serde_json::to_string(value).map_err(crate::error::StoreError::backend)
}

/// A JSON text column read back.
pub(crate) fn from_json_text<T: serde::de::DeserializeOwned>(
    text: &str,
) -> crate::error::StoreResult<T> {
    serde_json::from_str(text).map_err(crate::error::StoreError::backend)
}

/// Whether department `id` may sit under `parent` among `all` (the tenant's departments):
/// the parent is the tenant's (422 `exists`), neither `id` nor below it (422 `cycle`), and
/// the deepest department of `id`'s subtree ends at most `max_depth` levels down (422
/// `max_depth`). `NotFound` when `id` is not the tenant's.
pub fn department_move_allowed(
    all: &[Department],
    id: DepartmentId,
    parent: Option<DepartmentId>,
    max_depth: usize,
) -> crate::error::StoreResult<()> {
    if !all.iter().any(|d| d.id == id) {
        return Err(crate::error::StoreError::NotFound);
    }
    department_fits(all, id, parent, max_depth)
}

/// Whether department `id`, new (not among `all`) or moved, may sit under `parent`: the
/// rules of `department_move_allowed` but for the existence of `id`.
pub fn department_fits(
    all: &[Department],
    id: DepartmentId,
    parent: Option<DepartmentId>,
    max_depth: usize,
) -> crate::error::StoreResult<()> {
    use crate::error::StoreError;
    use std::collections::HashMap;
    let parent_of: HashMap<DepartmentId, Option<DepartmentId>> =
        all.iter().map(|d| (d.id, d.parent_id)).collect();
    // The new parent's depth, walking up from it; meeting `id` on the way is a cycle.
    let mut depth = 0;
    let mut at = parent;
    while let Some(p) = at {
        if p == id {
            return Err(StoreError::Invalid {
                field: "parent_id",
                rule: "cycle",
                detail: "a department cannot go under itself or one of its own".into(),
            });
        }
        let Some(up) = parent_of.get(&p) else {
            return Err(StoreError::InvalidReference {
                field: "parent_id",
                detail: "no such department".into(),
            });
        };
        depth += 1;
        if depth > all.len() {
            return Err(StoreError::backend(std::io::Error::other(
                "the department tree has a cycle",
            )));
        }
        at = *up;
    }
    // How many levels `id`'s subtree spans (1: no sub-departments).
    let mut children: HashMap<DepartmentId, Vec<DepartmentId>> = HashMap::new();
    for d in all {
        if let Some(p) = d.parent_id {
            children.entry(p).or_default().push(d.id);
        }
    }
    let (mut height, mut level) = (0, vec![id]);
    while !level.is_empty() && height <= all.len() {
        height += 1;
        level = level
            .iter()
            .flat_map(|d| children.get(d).into_iter().flatten().copied())
            .collect();
    }
    if depth + height > max_depth {
        return Err(StoreError::Invalid {
            field: "parent_id",
            rule: "max_depth",
            detail: format!(
                "there it would reach {} levels down; department trees are at most {max_depth}",
                depth + height
            ),
        });
    }
    Ok(())
}

/// 409 `department_in_use`, saying what holds it.
pub fn department_in_use(what: &str) -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "department_in_use",
        None,
        format!("{what}: move or remove that first"),
    )
}

/// 409 `tag_in_use`, saying what holds it.
pub fn tag_in_use(what: &str) -> crate::error::StoreError {
    crate::error::StoreError::conflict("tag_in_use", None, format!("{what}: remove that first"))
}

/// The departments and tags a group's grants name, deduplicated, for reference checks.
pub(crate) fn granted_ids(grants: &Grants) -> (Vec<uuid::Uuid>, Vec<uuid::Uuid>) {
    let departments: Vec<uuid::Uuid> = grants.departments.iter().map(|d| d.id.0).collect();
    let tags: Vec<uuid::Uuid> = grants.tags.iter().map(|t| t.id.0).collect();
    (dedup(&departments), dedup(&tags))
}

pub(crate) fn group_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "group_name_taken",
        Some("name"),
        "another admin group has this name",
    )
}

pub(crate) fn app_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "app_name_taken",
        Some("name"),
        "another app of the tenant has this name",
    )
}

pub(crate) fn room_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "room_name_taken",
        Some("name"),
        "another room of the tenant has this name",
    )
}

pub(crate) fn shuttle_route_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "shuttle_route_name_taken",
        Some("name"),
        "another shuttle route of the tenant has this name",
    )
}

pub(crate) fn device_type_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "device_type_name_taken",
        Some("name"),
        "another device type of the tenant has this name",
    )
}

pub(crate) fn bus_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "bus_name_taken",
        Some("name"),
        "another shuttle bus of the tenant has this name",
    )
}

pub(crate) fn room_booked() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "room_booked",
        None,
        "the room has bookings still to come; cancel them first",
    )
}

pub(crate) fn too_many_bookings(cap: u32) -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "too_many_bookings",
        None,
        format!("you hold {cap} bookings of this room still to come, as many as it allows"),
    )
}

pub(crate) fn slot_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "slot_taken",
        None,
        "another booking holds some of this time; pick another",
    )
}

/// 409 `user_changed` unless each user named in `expect` still has the memberships it
/// names (read inside the write's transaction, the users locked).
pub(crate) fn check_unchanged(
    users: &[User],
    expect: &[(UserId, Memberships)],
) -> crate::error::StoreResult<()> {
    let changed = expect.iter().any(|(id, was)| {
        users
            .iter()
            .find(|u| u.id == *id)
            .is_none_or(|u| Memberships::of(u) != *was)
    });
    if changed {
        return Err(crate::error::StoreError::conflict(
            "user_changed",
            None,
            "a user's departments or tags changed while this change was checked; read it again",
        ));
    }
    Ok(())
}

/// Another collection code, of whichever tenant, has the code.
pub(crate) fn collection_code_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "code_taken",
        Some("code"),
        "another collection code has this code",
    )
}

/// Another event, of whichever tenant, has the check-in code.
pub(crate) fn device_code_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict("code_taken", Some("code"), "another device has this code")
}

pub(crate) fn code_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict("code_taken", Some("code"), "another event has this code")
}

pub(crate) fn group_in_use() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "group_in_use",
        None,
        "admins still belong to this group; remove them or move them first",
    )
}

/// Checks shared by both engines before a write touches the database.
pub(crate) fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(*item);
        }
    }
    out
}

pub(crate) fn identity_type_name_taken() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "identity_type_name_taken",
        Some("name"),
        "another identity type of the tenant has this name",
    )
}

/// An identity type that cannot be deleted: `users` hold it, `cards` name it.
pub(crate) fn identity_in_use(users: i64, cards: &[String]) -> crate::error::StoreError {
    let mut why = Vec::new();
    if users > 0 {
        why.push(format!(
            "{users} user(s) hold it: move them to another identity first"
        ));
    }
    if !cards.is_empty() {
        why.push(format!(
            "the card(s) {} may be claimed by it: change them first",
            cards.join(", ")
        ));
    }
    crate::error::StoreError::conflict("identity_in_use", None, why.join("; "))
}

/// Whether an identity type is free to delete, given who holds it and which cards (title,
/// identity type ids as JSON) name it.
pub(crate) fn check_identity_free(
    id: crate::ids::IdentityTypeId,
    users: i64,
    cards: Vec<(String, String)>,
) -> crate::error::StoreResult<()> {
    let mut naming = Vec::new();
    for (title, ids) in cards {
        let ids: Vec<crate::ids::IdentityTypeId> = from_json_text(&ids)?;
        if ids.contains(&id) {
            naming.push(format!("\u{201c}{title}\u{201d}"));
        }
    }
    if users > 0 || !naming.is_empty() {
        return Err(identity_in_use(users, &naming));
    }
    Ok(())
}

/// Whether the operator may make `review` of `card` now.
pub(crate) fn check_review(
    card: &Card,
    review: &crate::card_store::Review,
) -> crate::error::StoreResult<()> {
    use crate::error::StoreError;
    if card.status != CardStatus::PendingReview {
        return Err(StoreError::conflict(
            "not_pending_review",
            None,
            format!("this card is {} and waits for no review", card.status),
        ));
    }
    if let crate::card_store::Review::Approve { seen, .. } = review {
        if card.revision != *seen {
            return Err(StoreError::conflict(
                "card_changed",
                Some("revision"),
                "the card changed since you saw it: look at it again",
            ));
        }
        if card.cover_sha256.is_none() {
            return Err(StoreError::conflict(
                "cover_missing",
                None,
                "a card needs its cover image before it can be approved",
            ));
        }
    }
    Ok(())
}

/// A card as the operator's decision leaves it.
pub(crate) fn reviewed(mut card: Card, review: crate::card_store::Review, now: Timestamp) -> Card {
    match review {
        crate::card_store::Review::Approve { note, .. } => {
            card.status = CardStatus::Approved;
            card.review_reason = note;
        }
        crate::card_store::Review::Reject { reason } => {
            card.status = CardStatus::Rejected;
            card.review_reason = Some(reason);
        }
    }
    card.reviewed_at = Some(now);
    card
}

pub(crate) fn phone_code_too_soon() -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "phone_code_too_soon",
        Some("phone"),
        "a code was sent to this phone less than a minute ago: wait for it, or try again shortly",
    )
}

/// A cover as hex, as cards name it.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two digests are equal, in time that does not depend on where they differ.
pub(crate) fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The grants a cardholder's identity type gives them (its management scope, stored as
/// JSON): `None` unless it names a department.
pub(crate) fn managed_grants(manages: Option<&str>) -> crate::error::StoreResult<Option<Grants>> {
    let Some(text) = manages else {
        return Ok(None);
    };
    let departments: Vec<DepartmentGrant> = from_json_text(text)?;
    Ok((!departments.is_empty()).then(|| Grants {
        departments,
        ..Grants::default()
    }))
}
