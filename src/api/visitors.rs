//! Visitor reservation (SPEC §13). The visitors app's admins choose what the tenant's form
//! asks (phone, company, purpose, licence plate: off, optional or required; a real-name
//! switch). A visitor, who has no account, asks to visit a member by their number and
//! name; the member (the host) approves or rejects it, and a rejection never blocks a later
//! request. The visitor follows their request by its link (the pass, a secret shown once),
//! shows its QR code at the gate once approved, and may cancel. Staff of the visitors app
//! let them in from a phone. Admins list requests and count them.

use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use jiff::{SignedDuration, Timestamp};
use onecard_actors::domain::directory as rules;
use onecard_actors::domain::validate::Checks;
use onecard_actors::domain::visitors::{normalize_plate, pass_of, qr_text, resident_id_valid};
use onecard_schema::ids::{EventId, TenantId, UserId, VisitorRequestId};
use onecard_schema::model::{
    FieldRule, PageReq, UserStatus, VisitStatus, VisitorForm, VisitorRequest,
};
use onecard_schema::visitor_store::{NewVisitorRequest, VisitorCounts, VisitorFilter};
use onecard_schema::wallet::{OutboxEvent, Payload, PendingEvent};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::sheet::check_period;
use super::{checked, qr_svg, ListParams, Paged};
use crate::auth::{
    hash_token, new_token, Auth, Cardholder, VisitorGate, VisitorsAdmin, VisitorsViewer,
};
use crate::extract::{path_id, Json, Query};
use crate::limits::HOST_PENDING_MAX;
use crate::problem::{ApiError, Problems};
use crate::ratelimit::address_key;
use crate::state::AppState;

const NAME_CHARS_MAX: usize = 32;
const COMPANY_CHARS_MAX: usize = 64;
const PURPOSE_CHARS_MAX: usize = 200;
const REASON_CHARS_MAX: usize = 200;
/// The host's number and name as a visitor types them: no member's is longer.
const HOST_FIELD_CHARS_MAX: usize = 64;
/// How far ahead a visit may be asked for, and how long one lasts at most.
const BOOK_AHEAD: SignedDuration = SignedDuration::from_hours(30 * 24);
const VISIT_LONGEST: SignedDuration = SignedDuration::from_hours(24);
/// A visitor may come in this long before their visit starts.
const EARLY_ENTRY: SignedDuration = SignedDuration::from_mins(30);
/// The longest period the figures cover.
const STATS_DAYS_MAX: i64 = 366;

/// The form a visitor fills in, with the tenant's name for its heading.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicForm {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub form: VisitorForm,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVisitorRequest {
    pub tenant_id: TenantId,
    /// The host's number and name, as the host gave them (both must match a member).
    pub host_number: String,
    pub host_name: String,
    #[schema(min_length = 1, max_length = 32)]
    pub name: String,
    pub phone: Option<String>,
    #[schema(max_length = 64)]
    pub company: Option<String>,
    #[schema(max_length = 200)]
    pub purpose: Option<String>,
    #[schema(example = "沪A·12345")]
    pub plate: Option<String>,
    /// Under a real-name check: an 18-character resident ID number.
    pub id_number: Option<String>,
    /// From now (or a few minutes ago) to 30 days ahead.
    pub starts_at: Timestamp,
    /// After `starts_at`, at most 24 hours later.
    pub ends_at: Timestamp,
}

/// A request just made: keep `pass` (shown once); the link shows where it stands and,
/// once approved, the QR code for the gate.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitorRequestMade {
    pub request: VisitorRequest,
    pub pass: String,
    pub pass_url: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassBody {
    /// The pass from the visitor's link, or scanned from its QR code.
    pub pass: String,
}

/// A visitor's request as its pass shows it: the QR code for the gate while approved.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassView {
    pub request: VisitorRequest,
    /// The QR code to show at the gate (SVG); null unless approved.
    pub svg: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    #[schema(max_length = 200)]
    pub reason: Option<String>,
}

/// A visitor let in, or let in already.
#[derive(Debug, Serialize, ToSchema)]
pub struct Entry {
    pub request: VisitorRequest,
    /// Whether this scan let them in (false: they came in at `entered_at`).
    pub first: bool,
}

/// Text as stored: trimmed; none when empty.
fn trimmed(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Checks one optional field against its rule; answers it as stored.
fn field(
    c: &mut Checks,
    name: &str,
    rule: FieldRule,
    value: Option<String>,
    max: usize,
) -> Option<String> {
    let value = trimmed(value);
    match (rule, &value) {
        (FieldRule::Off, Some(_)) => c.fail(name, "not_asked", "this form does not ask for it"),
        (FieldRule::Required, None) => c.fail(name, "required", "this form needs it"),
        (_, Some(v)) => {
            c.text(name, v, 1, max);
        }
        _ => {}
    }
    value
}

/// The visitor form of a tenant (no token needed: visitors have none).
#[utoipa::path(tag = "visitors", params(("tenant_id" = String, Path)),
    responses((status = 200, body = PublicForm), Problems))]
#[get("/visitors/forms/{tenant_id}")]
pub async fn get_public_form(
    state: web::Data<AppState>,
    tenant_id: web::Path<String>,
) -> Result<web::Json<PublicForm>, ApiError> {
    let tenant: TenantId = path_id(&tenant_id)?;
    let t = state.store.get_tenant(tenant).await?;
    let form = state.store.visitor_form(tenant).await?;
    Ok(web::Json(PublicForm {
        tenant_id: tenant,
        tenant_name: t.name,
        form,
    }))
}

/// Set what the visitor form asks (super admins and the visitors app's admins).
#[utoipa::path(tag = "visitors", request_body = VisitorForm, security(("bearer" = [])),
    responses((status = 200, body = VisitorForm), Problems))]
#[put("/visitors/form")]
pub async fn put_form(
    state: web::Data<AppState>,
    caller: Auth<VisitorsAdmin>,
    Json(form): Json<VisitorForm>,
) -> Result<web::Json<VisitorForm>, ApiError> {
    let tenant = caller.tenant()?;
    let audit = caller.audit(
        &state,
        "visitors.form",
        "tenant",
        tenant,
        serde_json::to_value(&form).unwrap_or_default(),
    );
    state
        .store
        .put_visitor_form(tenant, form.clone(), state.clock.now(), audit)
        .await?;
    Ok(web::Json(form))
}

fn unknown_host() -> ApiError {
    ApiError::refused(
        "unknown_host",
        "no member has this number and name: check them with your host",
    )
}

fn pass_invalid() -> ApiError {
    ApiError::refused("pass_invalid", "this is not a visitor's pass of ours")
}

/// Ask to visit a member (no token needed). 201 with the pending request and its pass;
/// 422 `unknown_host` unless an active member has both the number and the name; 422 for
/// a field the form does not ask for, or needs, or a resident ID that fails the real-name
/// check; 409 `host_busy` while the host has 50 requests waiting; 429 past 20 requests from
/// one address, then one every 10 seconds. The host hears `visitor.requested`.
#[utoipa::path(tag = "visitors", request_body = CreateVisitorRequest,
    responses((status = 201, body = VisitorRequestMade), Problems))]
#[post("/visitors/requests")]
pub async fn create_request(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<CreateVisitorRequest>,
) -> Result<HttpResponse, ApiError> {
    let address = address_key("visitor-request", req.peer_addr());
    if let Err(retry_after_s) = state.visitor_requests.check(&address) {
        return Err(ApiError::RateLimited { retry_after_s });
    }
    let tenant = body.tenant_id;
    state.store.get_tenant(tenant).await?;
    let form = state.store.visitor_form(tenant).await?;
    let now = state.clock.now();
    let mut c = Checks::new();
    let name = body.name.trim().to_string();
    c.text("name", &name, 1, NAME_CHARS_MAX);
    c.text(
        "host_number",
        body.host_number.trim(),
        1,
        HOST_FIELD_CHARS_MAX,
    );
    c.text("host_name", body.host_name.trim(), 1, HOST_FIELD_CHARS_MAX);
    let phone = match field(&mut c, "phone", form.phone, body.phone, 32) {
        Some(p) => rules::check_phone(&mut c, "phone", &p),
        None => None,
    };
    let company = field(
        &mut c,
        "company",
        form.company,
        body.company,
        COMPANY_CHARS_MAX,
    );
    let purpose = field(
        &mut c,
        "purpose",
        form.purpose,
        body.purpose,
        PURPOSE_CHARS_MAX,
    );
    let plate = match field(&mut c, "plate", form.plate, body.plate, 16) {
        Some(p) => {
            let plate = normalize_plate(&p);
            if plate.is_none() {
                c.fail(
                    "plate",
                    "pattern",
                    "a licence plate: 5 to 10 letters and digits",
                );
            }
            plate
        }
        None => None,
    };
    let id_number = trimmed(body.id_number).map(|i| i.to_ascii_uppercase());
    match (&id_number, form.real_name) {
        (None, true) => c.fail("id_number", "required", "a real-name check needs it"),
        (Some(_), false) => c.fail("id_number", "not_asked", "this form does not ask for it"),
        (Some(id), true) if !resident_id_valid(id) => c.fail(
            "id_number",
            "real_name",
            "not a valid resident ID number (18 characters, its last a check character)",
        ),
        _ => {}
    }
    if body.starts_at < now - SignedDuration::from_mins(5) {
        c.fail("starts_at", "range", "not in the past");
    } else if body.starts_at > now + BOOK_AHEAD {
        c.fail("starts_at", "range", "at most 30 days ahead");
    }
    if body.ends_at <= body.starts_at {
        c.fail("ends_at", "after", "must be after starts_at");
    } else if body.ends_at.duration_since(body.starts_at) > VISIT_LONGEST {
        c.fail("ends_at", "range", "a visit lasts at most 24 hours");
    }
    checked(c)?;

    // The host: an active member with both the number and the name; the same answer
    // whichever is wrong, so that numbers cannot be tried for names.
    let number = body.host_number.trim().to_string();
    let found = state
        .store
        .users_by_number(tenant, vec![number.clone()])
        .await?;
    let Some((_, host_id)) = found.into_iter().find(|(n, _)| *n == number) else {
        return Err(unknown_host());
    };
    let host = state.store.get_user(tenant, host_id).await?;
    if host.status != UserStatus::Active || host.name.trim() != body.host_name.trim() {
        return Err(unknown_host());
    }
    let waiting = VisitorFilter {
        host: Some(host_id),
        status: Some(VisitStatus::Pending),
        ..VisitorFilter::default()
    };
    let page = PageReq {
        limit: HOST_PENDING_MAX,
        after: None,
    };
    let pending = state
        .store
        .list_visitor_requests(tenant, waiting, page)
        .await?;
    if pending.next.is_some() || pending.items.len() >= HOST_PENDING_MAX as usize {
        return Err(ApiError::conflict(
            "host_busy",
            "your host has too many requests waiting for a decision: ask them directly",
        ));
    }
    // With a registry, the name and the number must belong together (asked last, once the
    // request is otherwise good: each question may cost the operator).
    if let (Some(registry), Some(id)) = (&state.real_name, &id_number) {
        match registry.matches(tenant, &name, id).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::invalid_field(
                    "id_number",
                    "real_name",
                    "the name and the resident ID number do not belong together",
                ))
            }
            Err(why) => {
                tracing::warn!(%tenant, %why, "real-name registry gave no answer");
                return Err(ApiError::Unavailable(format!(
                    "the real-name check cannot be made now ({why}): try again shortly"
                )));
            }
        }
    }

    let pass = new_token();
    let request = VisitorRequest {
        id: VisitorRequestId::new(),
        host_id,
        host_name: Some(host.name),
        name,
        phone,
        company,
        purpose,
        plate,
        id_last4: id_number.as_deref().map(rules::id_last4),
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        status: VisitStatus::Pending,
        reason: None,
        decided_at: None,
        entered_at: None,
        created_at: now,
    };
    let event = host_event(&request, "visitor.requested");
    state
        .store
        .create_visitor_request(
            tenant,
            NewVisitorRequest {
                request: request.clone(),
                pass_hash: hash_token(&pass),
                id_hash: id_number.as_deref().map(|i| state.keys.id_number_hash(i)),
            },
            event.clone(),
        )
        .await?;
    state
        .relay
        .submit(PendingEvent::of_page(tenant, vec![event], now));
    Ok(HttpResponse::Created().json(VisitorRequestMade {
        pass_url: format!("{}/visit#{pass}", state.public_url_of(tenant).await?),
        pass,
        request,
    }))
}

/// An event for the host's own topic and the tenant's dashboard.
fn host_event(r: &VisitorRequest, kind: &str) -> OutboxEvent {
    OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("user:{}", r.host_id), "tenant".to_string()],
        kind: kind.into(),
        payload: Payload::of(r),
    }
}

/// The request a pass names, of whichever tenant; 422 `pass_invalid` for none.
async fn by_pass(state: &AppState, pass: &str) -> Result<(TenantId, VisitorRequest), ApiError> {
    let pass = pass_of(pass);
    let found = if pass.is_empty() || pass.len() > 128 {
        None
    } else {
        state
            .store
            .visitor_request_by_pass(hash_token(pass))
            .await?
    };
    found.ok_or_else(pass_invalid)
}

/// Where a request stands, by its pass (no token needed), with the QR code for the gate
/// once approved. A POST, so that the pass never appears in an address.
#[utoipa::path(tag = "visitors", request_body = PassBody,
    responses((status = 200, body = PassView), Problems))]
#[post("/visitors/pass")]
pub async fn read_pass(
    state: web::Data<AppState>,
    Json(body): Json<PassBody>,
) -> Result<web::Json<PassView>, ApiError> {
    let (_, request) = by_pass(&state, &body.pass).await?;
    let svg = match request.status {
        VisitStatus::Approved => Some(qr_svg(&qr_text(pass_of(&body.pass)), 280)?),
        _ => None,
    };
    Ok(web::Json(PassView { request, svg }))
}

/// The visitor cancels their request, pending or approved, before they come in (no token
/// needed: the pass is the proof). 409 `not_pending` once rejected, cancelled or entered.
#[utoipa::path(tag = "visitors", request_body = PassBody,
    responses((status = 200, body = VisitorRequest), Problems))]
#[post("/visitors/pass/cancel")]
pub async fn cancel_by_pass(
    state: web::Data<AppState>,
    Json(body): Json<PassBody>,
) -> Result<web::Json<VisitorRequest>, ApiError> {
    let (tenant, request) = by_pass(&state, &body.pass).await?;
    if request.entered_at.is_some() {
        return Err(ApiError::conflict(
            "not_pending",
            "this visitor has come in already",
        ));
    }
    let moved = state
        .store
        .move_visitor_request(
            tenant,
            request.id,
            None,
            vec![VisitStatus::Pending, VisitStatus::Approved],
            VisitStatus::Cancelled,
            None,
            state.clock.now(),
        )
        .await?;
    Ok(web::Json(moved))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MyRequestParams {
    pub status: Option<VisitStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Requests to visit me (a cardholder: the host), oldest first.
#[utoipa::path(tag = "me", params(MyRequestParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<VisitorRequest>), Problems))]
#[get("/me/visitor-requests")]
pub async fn list_my_requests(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<MyRequestParams>,
) -> Result<web::Json<Paged<VisitorRequest>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(VisitorRequestId)?;
    let filter = VisitorFilter {
        host: Some(UserId(caller.subject()?)),
        status: params.status,
        ..VisitorFilter::default()
    };
    let found = state
        .store
        .list_visitor_requests(caller.tenant()?, filter, page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

async fn decide(
    state: &AppState,
    caller: &Auth<Cardholder>,
    id: &str,
    to: VisitStatus,
    reason: Option<String>,
) -> Result<web::Json<VisitorRequest>, ApiError> {
    let moved = state
        .store
        .move_visitor_request(
            caller.tenant()?,
            path_id(id)?,
            Some(UserId(caller.subject()?)),
            vec![VisitStatus::Pending],
            to,
            reason,
            state.clock.now(),
        )
        .await?;
    Ok(web::Json(moved))
}

/// Approve a request to visit me (the host). 409 `not_pending` once decided or cancelled;
/// 404 for a request to someone else.
#[utoipa::path(tag = "me", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = VisitorRequest), Problems))]
#[post("/me/visitor-requests/{id}/approve")]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    id: web::Path<String>,
) -> Result<web::Json<VisitorRequest>, ApiError> {
    decide(&state, &caller, &id, VisitStatus::Approved, None).await
}

/// Reject a request to visit me (the host), with an optional reason the visitor sees. It
/// blocks nothing: the visitor may ask again.
#[utoipa::path(tag = "me", params(("id" = String, Path)), request_body = Rejection,
    security(("bearer" = [])), responses((status = 200, body = VisitorRequest), Problems))]
#[post("/me/visitor-requests/{id}/reject")]
pub async fn reject(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    id: web::Path<String>,
    Json(body): Json<Rejection>,
) -> Result<web::Json<VisitorRequest>, ApiError> {
    let reason = trimmed(body.reason);
    if let Some(r) = &reason {
        let mut c = Checks::new();
        c.text("reason", r, 1, REASON_CHARS_MAX);
        checked(c)?;
    }
    decide(&state, &caller, &id, VisitStatus::Rejected, reason).await
}

/// Let a visitor in at the gate: staff of the visitors app scan the pass's QR code from a
/// phone, or a turnstile's app with `visitors_gate` sends it. 201 with the request (its plate, for a car gate) when this lets them in; 200
/// when they came in already. 422 `pass_invalid`; 409 `visit_not_approved` (pending,
/// rejected or cancelled); 409 `outside_visit` before 30 minutes ahead of the visit or
/// after its end.
#[utoipa::path(tag = "visitors", request_body = PassBody, security(("bearer" = [])),
    responses((status = 201, body = Entry), (status = 200, body = Entry), Problems))]
#[post("/visitors/entries")]
pub async fn enter(
    state: web::Data<AppState>,
    caller: Auth<VisitorGate>,
    Json(body): Json<PassBody>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let (owner, request) = by_pass(&state, &body.pass).await?;
    if owner != tenant {
        return Err(pass_invalid());
    }
    let now = state.clock.now();
    if request.status != VisitStatus::Approved {
        return Err(ApiError::conflict(
            "visit_not_approved",
            format!("this visit is {}, not approved", request.status),
        ));
    }
    if request.entered_at.is_none()
        && (now < request.starts_at - EARLY_ENTRY || now >= request.ends_at)
    {
        return Err(ApiError::conflict(
            "outside_visit",
            format!(
                "this visit is from {} to {}",
                request.starts_at, request.ends_at
            ),
        ));
    }
    let event = host_event(&request, "visitor.entered");
    let (entered, first) = match state
        .store
        .enter_visitor(tenant, request.id, now, event.clone())
        .await
    {
        Ok(done) => done,
        // Cancelled between the read and the entry.
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(
                "visit_not_approved",
                "this visit was cancelled a moment ago",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if first {
        let mut event = event;
        event.payload = Payload::of(&entered);
        state
            .relay
            .submit(PendingEvent::of_page(tenant, vec![event], now));
        Ok(HttpResponse::Created().json(Entry {
            request: entered,
            first,
        }))
    } else {
        Ok(HttpResponse::Ok().json(Entry {
            request: entered,
            first,
        }))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RequestParams {
    pub host_id: Option<UserId>,
    pub status: Option<VisitStatus>,
    /// Visits starting at or after this.
    pub from: Option<Timestamp>,
    /// Visits starting before this.
    pub to: Option<Timestamp>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Visitors' requests, oldest first, by host, status and when the visit starts (the
/// visitors app's admins, or an app with `visitors_read`).
#[utoipa::path(tag = "visitors", params(RequestParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<VisitorRequest>), Problems))]
#[get("/visitors/requests")]
pub async fn list_requests(
    state: web::Data<AppState>,
    caller: Auth<VisitorsViewer>,
    Query(params): Query<RequestParams>,
) -> Result<web::Json<Paged<VisitorRequest>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page(VisitorRequestId)?;
    let filter = VisitorFilter {
        host: params.host_id,
        status: params.status,
        from: params.from,
        to: params.to,
    };
    let found = state
        .store
        .list_visitor_requests(caller.tenant()?, filter, page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// Visits starting at or after this.
    pub from: Timestamp,
    /// Visits starting before this; at most 366 days after `from`.
    pub to: Timestamp,
}

/// How many visits starting in a period were asked for, by where they stand, and how many
/// visitors came in (the visitors app's admins, or an app with `visitors_read`).
#[utoipa::path(tag = "visitors", params(StatsParams), security(("bearer" = [])),
    responses((status = 200, body = VisitorCounts), Problems))]
#[get("/visitors/stats")]
pub async fn stats(
    state: web::Data<AppState>,
    caller: Auth<VisitorsViewer>,
    Query(params): Query<StatsParams>,
) -> Result<web::Json<VisitorCounts>, ApiError> {
    check_period(params.from, params.to, STATS_DAYS_MAX)?;
    let counts = state
        .store
        .count_visitor_requests(caller.tenant()?, params.from, params.to)
        .await?;
    Ok(web::Json(counts))
}
