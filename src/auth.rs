//! Who is calling. One extractor, `Auth<A>`, resolves the bearer token to a `Caller`
//! (its kind, tenant, role, group grants and edition) and checks the access rule `A` —
//! token kind, what a sub-admin's group must grant, edition capability — before a
//! handler runs. Handlers scope every store call to `caller.tenant()`; the directory's
//! handlers also narrow what a sub-admin sees with `scope::DirectoryScope`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::Engine;
use onecard_actors::domain::edition::{has_capability, Capability};
use onecard_schema::ids::{AdminId, AppId, AuditId, TenantId, UserId};
use onecard_schema::model::{
    Actor, AdminRole, AppScope, Audit, Edition, Feature, GrantLevel, Grants, ScenarioApp, TokenKind,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;
use crate::state::AppState;

/// A new opaque token: 32 random bytes, base64url without padding (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens are stored and compared only as their SHA-256.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token of a request, if it has one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The request id `TracingLogger` gave this request.
pub fn request_id(req: &HttpRequest) -> String {
    crate::telemetry::request_id(req).to_string()
}

#[derive(Clone, Debug)]
pub struct Caller {
    pub kind: TokenKind,
    pub tenant: Option<TenantId>,
    pub subject: Option<uuid::Uuid>,
    pub role: Option<AdminRole>,
    /// A sub-admin's group grants; `None` for every other caller.
    pub grants: Option<Arc<Grants>>,
    /// An app's scopes; `None` for every other caller.
    pub scopes: Option<Arc<Vec<AppScope>>>,
    pub edition: Option<Edition>,
    pub request_id: String,
    /// A tenant group's admin acting in a member tenant (`OneCard-Tenant`): their own
    /// tenant, the group's head. `tenant` is then the member's.
    pub via_group: Option<TenantId>,
}

impl Caller {
    /// The caller's tenant. Access rules that admit only tenant-bound tokens guarantee it;
    /// a root caller reaching here is refused rather than trusted.
    pub fn tenant(&self) -> Result<TenantId, ApiError> {
        self.tenant
            .ok_or_else(|| ApiError::forbidden("forbidden", "this needs a tenant token"))
    }

    /// Whether this caller is an admin whose group grants `feature` at `level` (super
    /// admins have every feature).
    pub fn admin_may(&self, feature: Feature, level: GrantLevel) -> bool {
        self.admin_granted(|g| g.allows(feature, level))
    }

    /// 403 `edition` unless the caller's tenant's edition has `capability`: for a handler
    /// that needs more than its access rule names (a report that needs a second one).
    pub fn require(&self, capability: Capability) -> Result<(), ApiError> {
        let edition = self.edition.ok_or(ApiError::Unauthorized)?;
        if !has_capability(edition, capability) {
            return Err(ApiError::Edition(capability));
        }
        Ok(())
    }

    /// Whether this caller is an admin whose group grants the scenario app `app` (super
    /// admins have every app).
    pub fn admin_has_app(&self, app: ScenarioApp) -> bool {
        self.admin_granted(|g| g.apps.contains(&app))
    }

    /// A super admin, or a sub-admin whose grants pass `test`.
    fn admin_granted(&self, test: impl FnOnce(&Grants) -> bool) -> bool {
        self.kind == TokenKind::Admin
            && match self.role {
                Some(AdminRole::SuperAdmin) => true,
                Some(AdminRole::SubAdmin) => self.grants.as_deref().is_some_and(test),
                None => false,
            }
    }

    /// The subject id (admin, terminal or user) of a token that must have one.
    pub fn subject(&self) -> Result<uuid::Uuid, ApiError> {
        self.subject.ok_or(ApiError::Unauthorized)
    }

    /// Who this caller is, for scoping idempotency keys: `<kind>:<subject>`.
    pub fn scope(&self) -> String {
        let who = match self.subject {
            Some(s) => format!("{}:{s}", self.kind.as_str()),
            None => self.kind.as_str().to_string(),
        };
        match (self.via_group, self.tenant) {
            // A group admin's keys are their own in each member tenant.
            (Some(_), Some(member)) => format!("{who}@{member}"),
            _ => who,
        }
    }

    pub fn actor(&self) -> Actor {
        match (self.kind, self.subject) {
            (TokenKind::Admin, Some(id)) => match self.via_group {
                Some(home) => Actor::GroupAdmin {
                    tenant: home,
                    admin: AdminId(id),
                },
                None => Actor::Admin(AdminId(id)),
            },
            (TokenKind::App, Some(id)) => Actor::App(AppId(id)),
            (TokenKind::Cardholder, Some(id)) => Actor::Member(UserId(id)),
            _ => Actor::Root,
        }
    }

    /// An audit entry for an action this caller is taking now.
    pub fn audit(
        &self,
        state: &AppState,
        action: &'static str,
        target_type: &'static str,
        target_id: impl ToString,
        detail: serde_json::Value,
    ) -> Audit {
        Audit {
            id: AuditId::new(),
            tenant_id: self.tenant,
            actor: self.actor(),
            action,
            target_type,
            target_id: target_id.to_string(),
            request_id: self.request_id.clone(),
            at: state.clock.now(),
            detail,
        }
    }
}

/// What an access rule lets a sub-admin do. Super admins pass every admin rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubAdmins {
    /// Refused: super admins only.
    Refused,
    /// Admitted; the handler narrows what they see to their group's departments and tags.
    Scoped,
    /// Admitted when their group grants this feature at this level or beyond.
    Granted(Feature, GrantLevel),
    /// Admitted when their group grants this scenario app (its app admins).
    App(ScenarioApp),
}

/// An app's authenticated signed request, left in the request by `apps::verify`.
#[derive(Clone)]
pub struct AppCaller(pub Caller);

/// An access rule, checked by `Auth<A>`.
pub trait Access {
    /// Token kinds admitted.
    const KINDS: &'static [TokenKind];
    /// Whether, and with which grant, sub-admins are admitted.
    const SUB_ADMINS: SubAdmins = SubAdmins::Refused;
    /// The scope that admits an app's signed request (in an edition with the open API);
    /// `None`: apps may not.
    const APP_SCOPE: Option<AppScope> = None;
    /// What the tenant's edition must include.
    const CAPABILITY: Capability = Capability::Core;
    /// Whether members holding an identity type with a management scope are admitted with
    /// their card's token, scoped to its departments as a sub-admin's group would be.
    const MANAGERS: bool = false;
}

/// The platform operator.
pub struct Root;
impl Access for Root {
    const KINDS: &'static [TokenKind] = &[TokenKind::Root];
}

/// Any admin of a tenant; a sub-admin sees only what their group grants (the handler
/// scopes it).
pub struct Admin;
impl Access for Admin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Scoped;
}

/// A super admin of a tenant.
pub struct SuperAdmin;
impl Access for SuperAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
}

/// The operator, or a tenant's super admin (each sees their own scope).
pub struct RootOrSuperAdmin;
impl Access for RootOrSuperAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Root, TokenKind::Admin];
}

/// An admin who may read money: merchants, wallets, payments, the ledger.
pub struct PaymentsViewer;
impl Access for PaymentsViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::View);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::PaymentsRead);
}

/// An admin who may move money or change merchants: top-ups, coupons, subsidy rules,
/// refunds, freezes, merchants and terminals.
pub struct PaymentsManager;
impl Access for PaymentsManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::Manage);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::PaymentsWrite);
}

/// An admin who may create or approve subsidy rules. Maker–checker is between two
/// people, so apps may not.
pub struct SubsidyManager;
impl Access for SubsidyManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::Manage);
}

/// An admin reading the directory (a sub-admin: their group's part of it), a member whose
/// identity type manages departments (those), or an app with `directory_read`.
pub struct DirectoryReader;
impl Access for DirectoryReader {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Scoped;
    const MANAGERS: bool = true;
    const APP_SCOPE: Option<AppScope> = Some(AppScope::DirectoryRead);
}

/// An admin changing the directory (a sub-admin: inside what their group manages), a
/// member whose identity type manages departments (inside those), or an app with
/// `directory_write`.
pub struct DirectoryWriter;
impl Access for DirectoryWriter {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Scoped;
    const MANAGERS: bool = true;
    const APP_SCOPE: Option<AppScope> = Some(AppScope::DirectoryWrite);
}

/// A reader of notices: super admins (every notice), admins granted `notifications`, and
/// department heads (members whose identity type manages departments); the handler shows
/// everyone but super admins only the notices they made.
pub struct NoticeReader;
impl Access for NoticeReader {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Notifications, GrantLevel::View);
    const MANAGERS: bool = true;
}

/// A sender of notices: super admins, admins granted `notifications` to manage, and
/// department heads; the handler keeps the audience inside what they may see.
pub struct NoticeSender;
impl Access for NoticeSender {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Notifications, GrantLevel::Manage);
    const MANAGERS: bool = true;
}

/// The tenant's notification channels: super admins and admins granted `notifications`
/// to manage.
pub struct NotificationSettings;
impl Access for NotificationSettings {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Notifications, GrantLevel::Manage);
}

/// An admin reading the tenant's apps: super admins, and sub-admins granted
/// `api_config`.
pub struct AppsViewer;
impl Access for AppsViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::ApiConfig, GrantLevel::View);
    const CAPABILITY: Capability = Capability::OpenApi;
}

/// An admin creating, changing or deleting apps and their secrets.
pub struct AppsManager;
impl Access for AppsManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::ApiConfig, GrantLevel::Manage);
    const CAPABILITY: Capability = Capability::OpenApi;
}

/// An admin of the event check-in app reading its events, attendees and check-ins, or
/// an app with `checkin_read`.
pub struct CheckinViewer;
impl Access for CheckinViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Checkin);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::CheckinRead);
}

/// An admin of the event check-in app changing events and attendees or checking people
/// in, or an app with `checkin_write` (a gate that checks people in).
pub struct CheckinManager;
impl Access for CheckinManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Checkin);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::CheckinWrite);
}

/// An admin of the room booking app: rooms, and anyone's bookings.
pub struct BookingManager;
impl Access for BookingManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Booking);
}

/// An admin reading identity types: super admins, and sub-admins granted `identity`.
pub struct IdentityViewer;
impl Access for IdentityViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Identity, GrantLevel::View);
}

/// An admin creating, changing or deleting identity types.
pub struct IdentityManager;
impl Access for IdentityManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Identity, GrantLevel::Manage);
}

/// An admin reading card products and their claim links: super admins, and sub-admins
/// granted `cards`.
pub struct CardsViewer;
impl Access for CardsViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Cards, GrantLevel::View);
}

/// An admin creating or changing card products and their covers.
pub struct CardsManager;
impl Access for CardsManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Cards, GrantLevel::Manage);
}

/// Who vouches for an account of the tenant's channel with a claim ticket: the channel's
/// own backend (an app with `claim_tickets`), or an admin managing cards.
pub struct ClaimTicketIssuer;
impl Access for ClaimTicketIssuer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Cards, GrantLevel::Manage);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::ClaimTickets);
}

/// A member of the organisation (a cardholder) or an admin of the room booking app:
/// rooms, their free slots, bookings shared with them.
pub struct BookingMember;
impl Access for BookingMember {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin, TokenKind::Cardholder];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Booking);
}

/// An admin of the shuttle app: routes, buses, their phones and the rides (SPEC §13:
/// only admins granted the shuttle app may configure it).
pub struct ShuttleAdmin;
impl Access for ShuttleAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Shuttle);
}

/// An admin of the shuttle app, or an app with `shuttle_read`: the rides.
pub struct ShuttleViewer;
impl Access for ShuttleViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Shuttle);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::ShuttleRead);
}

/// An admin of the maintenance app: device types, devices, their scanners and records;
/// they may also scan a technician's code at a device.
pub struct MaintenanceAdmin;
impl Access for MaintenanceAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Maintenance);
}

/// An admin of the maintenance app, or an app with `maintenance_read`: the records.
pub struct MaintenanceViewer;
impl Access for MaintenanceViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Maintenance);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::MaintenanceRead);
}

/// An admin of the visitors app: the visitor form.
pub struct VisitorsAdmin;
impl Access for VisitorsAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Visitors);
}

/// An admin of the visitors app, or an app with `visitors_read`: the requests and their
/// figures.
pub struct VisitorsViewer;
impl Access for VisitorsViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Visitors);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::VisitorsRead);
}

/// An admin of the visitors app at the gate, or an app with `visitors_gate` (a turnstile):
/// lets visitors in.
pub struct VisitorGate;
impl Access for VisitorGate {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::App(ScenarioApp::Visitors);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::VisitorsGate);
}

/// A shuttle bus's verifying phone or a device's fixed scanner (a `verifier` token; its
/// subject is the bus or the device).
pub struct Verifier;
impl Access for Verifier {
    const KINDS: &'static [TokenKind] = &[TokenKind::Verifier];
}

/// An app's server redeeming the launch tickets its page was opened with (a signed
/// request with the `launch` scope; no token opens it).
pub struct AppLauncher;
impl Access for AppLauncher {
    const KINDS: &'static [TokenKind] = &[];
    const APP_SCOPE: Option<AppScope> = Some(AppScope::Launch);
}

/// A till (terminal token).
pub struct Terminal;
impl Access for Terminal {
    const KINDS: &'static [TokenKind] = &[TokenKind::Terminal];
}

/// A cardholder acting for themselves.
pub struct Cardholder;
impl Access for Cardholder {
    const KINDS: &'static [TokenKind] = &[TokenKind::Cardholder];
}

/// A cardholder linking their records across a tenant group, or opening one of them: an
/// edition with global identity (group management).
pub struct IdentityLinker;
impl Access for IdentityLinker {
    const KINDS: &'static [TokenKind] = &[TokenKind::Cardholder];
    const CAPABILITY: Capability = Capability::GroupManagement;
}

/// A cardholder opening one of the organisation's apps from their card: an edition with
/// the open API.
pub struct AppOpener;
impl Access for AppOpener {
    const KINDS: &'static [TokenKind] = &[TokenKind::Cardholder];
    const CAPABILITY: Capability = Capability::OpenApi;
}

/// An admin who may read money, or a till looking at its own payments.
pub struct PaymentsViewerOrTerminal;
impl Access for PaymentsViewerOrTerminal {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin, TokenKind::Terminal];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::View);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::PaymentsRead);
}

/// An admin reading what cardholders spent (personal data: no app scope opens it), in an
/// edition with enhanced analytics.
pub struct SpendingAnalyst;
impl Access for SpendingAnalyst {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::View);
    const CAPABILITY: Capability = Capability::EnhancedAnalytics;
}

/// An admin reading the tenant's settlement entities and merchants' schedules, in an
/// edition with multi-merchant-entity settlement.
pub struct SettlementViewer;
impl Access for SettlementViewer {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::View);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::PaymentsRead);
    const CAPABILITY: Capability = Capability::MultiMerchantSettlement;
}

/// An admin changing settlement entities or whom a merchant settles to.
pub struct SettlementManager;
impl Access for SettlementManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::Manage);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::PaymentsWrite);
    const CAPABILITY: Capability = Capability::MultiMerchantSettlement;
}

/// An admin who may read money, in an edition that includes analytics (the financial
/// reports and money dashboards).
pub struct AnalyticsAdmin;
impl Access for AnalyticsAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Payments, GrantLevel::View);
    const APP_SCOPE: Option<AppScope> = Some(AppScope::ReportsRead);
    const CAPABILITY: Capability = Capability::Analytics;
}

/// A tenant group's admin: a super admin of a tenant, or a sub-admin granted `group`, in an
/// edition with group management (the handler checks that the tenant heads a group).
pub struct GroupAdmin;
impl Access for GroupAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Group, GrantLevel::View);
    const CAPABILITY: Capability = Capability::GroupManagement;
}

/// A tenant group's admin who changes the group's people: a super admin of the head
/// tenant, or a sub-admin granted `group` to manage.
pub struct GroupManager;
impl Access for GroupManager {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const SUB_ADMINS: SubAdmins = SubAdmins::Granted(Feature::Group, GrantLevel::Manage);
    const CAPABILITY: Capability = Capability::GroupManagement;
}

/// A super admin, in an edition that includes analytics (tenant-wide directory figures).
pub struct AnalyticsSuperAdmin;
impl Access for AnalyticsSuperAdmin {
    const KINDS: &'static [TokenKind] = &[TokenKind::Admin];
    const CAPABILITY: Capability = Capability::Analytics;
}

pub struct Auth<A>(pub Caller, PhantomData<A>);

impl<A> std::ops::Deref for Auth<A> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<A: Access + 'static> FromRequest for Auth<A> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let member = member_tenant(req);
        let app = req.extensions().get::<AppCaller>().map(|a| a.0.clone());
        if let Some(caller) = app {
            if member.is_some() {
                return Box::pin(async { Err(only_group_admins()) });
            }
            let result = check::<A>(&caller).map(|()| Auth(caller, PhantomData));
            return Box::pin(async move { result });
        }
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let hash = bearer(req).map(hash_token);
        let request_id = request_id(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let mut caller =
                resolve(&state, hash.ok_or(ApiError::Unauthorized)?, request_id).await?;
            if let Some(member) = member {
                caller = in_member_tenant(&state, caller, member?).await?;
            }
            check::<A>(&caller)?;
            Ok(Auth(caller, PhantomData))
        })
    }
}

/// The request header with which a tenant group's admin acts in a member tenant.
pub const MEMBER_TENANT_HEADER: &str = "onecard-tenant";

/// The member tenant a request names in `OneCard-Tenant`, if it names one; a value that is
/// not a tenant id is not found (as an id in a path would be).
fn member_tenant(req: &HttpRequest) -> Option<Result<TenantId, ApiError>> {
    let raw = req.headers().get(MEMBER_TENANT_HEADER)?;
    Some(
        raw.to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or(ApiError::NotFound),
    )
}

fn only_group_admins() -> ApiError {
    ApiError::forbidden(
        "forbidden",
        "only a tenant group's admins (super admins of its head tenant, or its sub-admins \
         granted group) may act in another tenant with OneCard-Tenant",
    )
}

/// A group admin's caller, moved into the member tenant `member`, under the member's
/// edition: a super admin there for a super admin of the head; for a sub-admin granted
/// `group`, a sub-admin there with the same features and apps, and no departments or tags
/// (those are the head's tree). The head's edition must have group management; a tenant
/// outside the group is not found.
pub(crate) async fn in_member_tenant(
    state: &AppState,
    caller: Caller,
    member: TenantId,
) -> Result<Caller, ApiError> {
    if caller.tenant == Some(member) {
        return Ok(caller);
    }
    if caller.kind != TokenKind::Admin {
        return Err(only_group_admins());
    }
    let grants = match caller.role {
        Some(AdminRole::SuperAdmin) => None,
        Some(AdminRole::SubAdmin) if caller.admin_may(Feature::Group, GrantLevel::View) => {
            caller.grants.as_deref().map(|g| {
                Arc::new(Grants {
                    departments: Vec::new(),
                    tags: Vec::new(),
                    ..g.clone()
                })
            })
        }
        _ => return Err(only_group_admins()),
    };
    let home = caller.tenant()?;
    let group = state
        .group_headed_by(home)
        .await?
        .ok_or_else(only_group_admins)?;
    let edition = caller.edition.ok_or(ApiError::Unauthorized)?;
    if !has_capability(edition, Capability::GroupManagement) {
        return Err(ApiError::Edition(Capability::GroupManagement));
    }
    let tenant = match state.tenant(member).await {
        Ok(t) if t.group_id == Some(group.id) => t,
        Ok(_) | Err(ApiError::NotFound) => return Err(ApiError::NotFound),
        Err(e) => return Err(e),
    };
    Ok(Caller {
        tenant: Some(member),
        edition: Some(tenant.edition),
        via_group: Some(home),
        grants,
        ..caller
    })
}

/// Looks a token up. With `ONECARD_ROOT_TOKEN` set, that is the only root token.
pub async fn resolve(
    state: &AppState,
    hash: [u8; 32],
    request_id: String,
) -> Result<Caller, ApiError> {
    if state
        .env_root_hash
        .is_some_and(|h| constant_time_eq(&h, &hash))
    {
        return Ok(Caller {
            kind: TokenKind::Root,
            tenant: None,
            subject: None,
            role: None,
            grants: None,
            scopes: None,
            edition: None,
            request_id,
            via_group: None,
        });
    }
    if let Some(mut cached) = state.tokens.get(&hash) {
        cached.request_id = request_id;
        return Ok(cached);
    }
    let record = state
        .store
        .lookup_token(hash)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if record.kind == TokenKind::Root && state.env_root_hash.is_some() {
        return Err(ApiError::Unauthorized);
    }
    let caller = Caller {
        kind: record.kind,
        tenant: record.tenant_id,
        subject: record.subject_id,
        role: record.role,
        grants: record.grants.map(Arc::new),
        scopes: None,
        edition: record.edition,
        request_id,
        via_group: None,
    };
    state.tokens.put(hash, caller.clone());
    Ok(caller)
}

fn check<A: Access>(caller: &Caller) -> Result<(), ApiError> {
    if caller.kind == TokenKind::App {
        let Some(scope) = A::APP_SCOPE else {
            return Err(ApiError::forbidden(
                "forbidden",
                "apps may not call this; it needs an admin token",
            ));
        };
        if !caller.scopes.as_deref().is_some_and(|s| s.contains(&scope)) {
            return Err(ApiError::forbidden(
                "not_granted",
                format!("this needs the app scope {scope}"),
            ));
        }
        let edition = caller.edition.ok_or(ApiError::Unauthorized)?;
        for capability in [Capability::OpenApi, A::CAPABILITY] {
            if !has_capability(edition, capability) {
                return Err(ApiError::Edition(capability));
            }
        }
        return Ok(());
    }
    if caller.kind == TokenKind::Cardholder && A::MANAGERS && caller.grants.is_some() {
        // A holder of a managing identity: the handler narrows them to its departments.
        return Ok(());
    }
    if A::KINDS.is_empty() {
        return Err(ApiError::forbidden(
            "forbidden",
            "this needs an app's signed request",
        ));
    }
    if !A::KINDS.contains(&caller.kind) {
        let wanted: Vec<&str> = A::KINDS.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::forbidden(
            "forbidden",
            format!("this needs a {} token", wanted.join(" or ")),
        ));
    }
    if caller.kind == TokenKind::Admin {
        match (caller.role, A::SUB_ADMINS) {
            (Some(AdminRole::SuperAdmin), _) | (Some(AdminRole::SubAdmin), SubAdmins::Scoped) => {}
            (Some(AdminRole::SubAdmin), SubAdmins::Granted(feature, level)) => {
                if !caller.admin_may(feature, level) {
                    return Err(ApiError::forbidden(
                        "not_granted",
                        format!(
                            "this needs the {feature} feature ({level}) granted to your \
                             admin group"
                        ),
                    ));
                }
            }
            (Some(AdminRole::SubAdmin), SubAdmins::App(app)) => {
                if !caller.admin_has_app(app) {
                    return Err(ApiError::forbidden(
                        "not_granted",
                        format!("this needs the {app} app granted to your admin group"),
                    ));
                }
            }
            _ => return Err(ApiError::forbidden("forbidden", "this needs a super admin")),
        }
    }
    // The tenant's edition decides for admins and, where a rule needs more than every
    // edition has, for any other token of the tenant (a cardholder's).
    if caller.kind == TokenKind::Admin || A::CAPABILITY != Capability::Core {
        let edition = caller.edition.ok_or(ApiError::Unauthorized)?;
        if !has_capability(edition, A::CAPABILITY) {
            return Err(ApiError::Edition(A::CAPABILITY));
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(kind: TokenKind, role: Option<AdminRole>, edition: Option<Edition>) -> Caller {
        Caller {
            kind,
            tenant: None,
            subject: None,
            role,
            grants: (role == Some(AdminRole::SubAdmin)).then(|| {
                Arc::new(Grants {
                    features: [(Feature::Payments, GrantLevel::View)].into(),
                    ..Grants::default()
                })
            }),
            scopes: None,
            edition,
            request_id: String::new(),
            via_group: None,
        }
    }

    #[test]
    fn tokens_are_43_url_safe_characters_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, b);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn access_rules_check_kind_role_and_capability() {
        let sup = caller(
            TokenKind::Admin,
            Some(AdminRole::SuperAdmin),
            Some(Edition::BasicEdu),
        );
        let sub = caller(
            TokenKind::Admin,
            Some(AdminRole::SubAdmin),
            Some(Edition::Flagship),
        );
        let root = caller(TokenKind::Root, None, None);
        assert!(check::<Admin>(&sup).is_ok());
        assert!(check::<Root>(&sup).is_err());
        assert!(check::<Admin>(&root).is_err());
        assert!(check::<SuperAdmin>(&sub).is_err());
        assert!(check::<RootOrSuperAdmin>(&root).is_ok());
        assert!(matches!(
            check::<AnalyticsAdmin>(&sup),
            Err(ApiError::Edition(Capability::Analytics))
        ));
        assert!(check::<AnalyticsAdmin>(&sub).is_ok());
        // The sub-admin's group grants payments (view): reading money, not moving it.
        assert!(check::<PaymentsViewer>(&sub).is_ok());
        assert!(check::<PaymentsViewerOrTerminal>(&sub).is_ok());
        assert!(matches!(
            check::<PaymentsManager>(&sub),
            Err(ApiError::Forbidden {
                code: "not_granted",
                ..
            })
        ));
        assert!(check::<AnalyticsSuperAdmin>(&sub).is_err());
        assert!(check::<Admin>(&sub).is_ok());
        assert!(check::<PaymentsManager>(&sup).is_ok());
        assert!(sup.admin_may(Feature::Notifications, GrantLevel::Manage));
        assert!(!sub.admin_may(Feature::Notifications, GrantLevel::View));
        assert!(!root.admin_may(Feature::Payments, GrantLevel::View));
    }
}
