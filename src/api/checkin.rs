//! Event check-in (SPEC §13): events with a check-in code and QR, optional designated
//! attendees (picked by user, number, department or tag), an optional geofence. A person
//! checks in with the code from their phone; an admin of the check-in app, or a gate app
//! with `checkin_write`, may check someone in for them. A refused check-in says why
//! (`not_a_member`, `event_not_open`, `not_designated`, `outside_geofence`), and both
//! outcomes reach the event's screen live: `checkin.confirmed` and `checkin.failed` on the
//! `event:<id>` topic (and on webhooks). Kept by super admins and the app's admins.
//!
//! Designating by department or tag takes the people in it now (a later arrival is added
//! by designating again), so an event's list is fixed and countable.

use std::collections::HashSet;

use actix_web::{delete, get, patch, post, web, HttpResponse};
use jiff::{SignedDuration, Timestamp};
use onecard_actors::domain::checkin::{
    check_fence, check_window, normalise_code, Refusal, QR_PREFIX,
};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{
    CheckInId, CheckinEventId, DepartmentId, EventId, TagId, TenantId, UserId,
};
use onecard_schema::model::{
    Attendee, CheckIn, CheckInWrite, CheckinEvent, CheckinMethod, Geofence, User, UserStatus,
};
use onecard_schema::wallet::{OutboxEvent, Payload, PendingEvent, SubsidyTargets};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::reports::csv_text;
use super::sheet::SheetFormat;
use super::{
    all_pages, attachment, checked, nullable, qr_svg, svg_response, with_fresh_code, ListParams,
    Paged,
};
use crate::auth::{Auth, Cardholder, CheckinManager, CheckinViewer};
use crate::extract::{path_id, Json, Query};
use crate::import::XLSX_MIME;
use crate::limits::ATTENDEES_PER_REQUEST_MAX;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const NAME_CHARS_MAX: usize = 64;
const EARLY_MINUTES_MAX: u32 = 24 * 60;
const DURATION_MAX: SignedDuration = SignedDuration::from_hours(31 * 24);
const RADIUS_M: std::ops::RangeInclusive<u32> = 10..=10_000;
/// Departments or tags one request may designate by.
const DESIGNATE_GROUPS_MAX: usize = 100;
/// People one request may designate in all, departments and tags included.
const DESIGNATE_TOTAL_MAX: usize = 50_000;
/// Unknown numbers named in a 422, at most.
const UNKNOWN_SHOWN: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    #[schema(min_length = 1, max_length = 64, example = "Freshers' orientation")]
    pub name: String,
    pub starts_at: Timestamp,
    /// After `starts_at`, at most 31 days later.
    pub ends_at: Timestamp,
    /// Check-in opens this many minutes before the start (0 to 1,440; default 30).
    #[schema(minimum = 0, maximum = 1440)]
    pub early_minutes: Option<u32>,
    pub geofence: Option<Geofence>,
    /// Only designated attendees may check in (default false: any active member).
    #[serde(default)]
    pub designated: bool,
}

/// Absent fields stay as they are; `geofence: null` removes the fence.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEvent {
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    #[schema(minimum = 0, maximum = 1440)]
    pub early_minutes: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Geofence>)]
    pub geofence: Option<Option<Geofence>>,
    pub designated: Option<bool>,
}

/// The years an event may start in.
const YEARS: std::ops::RangeInclusive<i16> = 2000..=2199;

fn check_event(e: &CheckinEvent) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &e.name, 1, NAME_CHARS_MAX);
    let year = e.starts_at.to_zoned(jiff::tz::TimeZone::UTC).year();
    if !YEARS.contains(&year) {
        c.fail("starts_at", "range", "in the years 2000 to 2199");
    } else if e.ends_at <= e.starts_at {
        c.fail("ends_at", "after", "must be after starts_at");
    } else if e.ends_at.duration_since(e.starts_at) > DURATION_MAX {
        c.fail("ends_at", "range", "an event lasts at most 31 days");
    }
    if e.early_minutes > EARLY_MINUTES_MAX {
        c.fail("early_minutes", "range", "0 to 1440");
    }
    if let Some(f) = e.geofence {
        if !(f.latitude.is_finite() && (-90.0..=90.0).contains(&f.latitude)) {
            c.fail("geofence.latitude", "range", "-90 to 90");
        }
        if !(f.longitude.is_finite() && (-180.0..=180.0).contains(&f.longitude)) {
            c.fail("geofence.longitude", "range", "-180 to 180");
        }
        if !RADIUS_M.contains(&f.radius_m) {
            c.fail("geofence.radius_m", "range", "10 to 10000 metres");
        }
    }
    checked(c)
}

fn event_detail(e: &CheckinEvent) -> serde_json::Value {
    serde_json::json!({
        "name": e.name, "starts_at": e.starts_at, "ends_at": e.ends_at,
        "early_minutes": e.early_minutes, "geofence": e.geofence, "designated": e.designated,
    })
}

/// Create an event with a fresh check-in code (super admins and the check-in app's
/// admins).
#[utoipa::path(tag = "checkin", request_body = CreateEvent, security(("bearer" = [])),
    responses((status = 201, body = CheckinEvent), Problems))]
#[post("/events")]
pub async fn create_event(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    Json(body): Json<CreateEvent>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let event = CheckinEvent {
        id: CheckinEventId::new(),
        name: body.name,
        code: String::new(),
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        early_minutes: body.early_minutes.unwrap_or(30),
        geofence: body.geofence,
        designated: body.designated,
        attendees: 0,
        checked_in: 0,
        created_at: now,
        updated_at: now,
    };
    check_event(&event)?;
    let event = with_fresh_code(
        event,
        |e, code| e.code = code,
        |e| {
            let audit = caller.audit(&state, "event.create", "event", e.id, event_detail(&e));
            let store = state.store.clone();
            async move { store.create_event(tenant, e, audit).await }
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(event))
}

/// The tenant's events, oldest first, with their counts.
#[utoipa::path(tag = "checkin", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<CheckinEvent>), Problems))]
#[get("/events")]
pub async fn list_events(
    state: web::Data<AppState>,
    caller: Auth<CheckinViewer>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<CheckinEvent>>, ApiError> {
    let page = state
        .store
        .list_events(caller.tenant()?, params.page(CheckinEventId)?)
        .await?;
    Ok(web::Json(Paged::new(page.items, page.next.map(|i| i.0))))
}

/// One event, with how many are designated and how many have checked in.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CheckinEvent), Problems))]
#[get("/events/{id}")]
pub async fn get_event(
    state: web::Data<AppState>,
    caller: Auth<CheckinViewer>,
    id: web::Path<String>,
) -> Result<web::Json<CheckinEvent>, ApiError> {
    let event = state
        .store
        .get_event(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(event))
}

/// Change an event. Check-ins made stay as they are.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), request_body = PatchEvent,
    security(("bearer" = [])), responses((status = 200, body = CheckinEvent), Problems))]
#[patch("/events/{id}")]
pub async fn patch_event(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    id: web::Path<String>,
    Json(body): Json<PatchEvent>,
) -> Result<web::Json<CheckinEvent>, ApiError> {
    let tenant = caller.tenant()?;
    let mut event = state.store.get_event(tenant, path_id(&id)?).await?;
    if let Some(name) = body.name {
        event.name = name;
    }
    if let Some(at) = body.starts_at {
        event.starts_at = at;
    }
    if let Some(at) = body.ends_at {
        event.ends_at = at;
    }
    if let Some(m) = body.early_minutes {
        event.early_minutes = m;
    }
    if let Some(fence) = body.geofence {
        event.geofence = fence;
    }
    if let Some(d) = body.designated {
        event.designated = d;
    }
    check_event(&event)?;
    event.updated_at = state.clock.now();
    let audit = caller.audit(
        &state,
        "event.update",
        "event",
        event.id,
        event_detail(&event),
    );
    state
        .store
        .update_event(tenant, event.clone(), audit)
        .await?;
    Ok(web::Json(event))
}

/// Delete an event with its attendees and check-ins.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/events/{id}")]
pub async fn delete_event(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: CheckinEventId = path_id(&id)?;
    let audit = caller.audit(&state, "event.delete", "event", id, serde_json::json!({}));
    state
        .store
        .delete_event(caller.tenant()?, id, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Give an event a new check-in code (when the old one was shared where it should not
/// be). The old code stops working at once.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CheckinEvent), Problems))]
#[post("/events/{id}/code")]
pub async fn rotate_event_code(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    id: web::Path<String>,
) -> Result<web::Json<CheckinEvent>, ApiError> {
    let tenant = caller.tenant()?;
    let mut event = state.store.get_event(tenant, path_id(&id)?).await?;
    event.updated_at = state.clock.now();
    let event = with_fresh_code(
        event,
        |e, code| e.code = code,
        |e| {
            let audit = caller.audit(&state, "event.code", "event", e.id, serde_json::json!({}));
            let store = state.store.clone();
            async move { store.update_event(tenant, e, audit).await }
        },
    )
    .await?;
    Ok(web::Json(event))
}

/// The event's check-in QR code, as SVG, to print or show at the door. It carries
/// `onecard:checkin:<code>`.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "image/svg+xml", body = String), Problems))]
#[get("/events/{id}/qr")]
pub async fn get_event_qr(
    state: web::Data<AppState>,
    caller: Auth<CheckinViewer>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let event = state
        .store
        .get_event(caller.tenant()?, path_id(&id)?)
        .await?;
    let svg = qr_svg(&format!("{QR_PREFIX}{}", event.code), 320)?;
    Ok(svg_response(svg))
}

/// Whom to designate: users by id or by number (a list from a spreadsheet), and everyone
/// now in some departments (with their sub-departments) or carrying some tags.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddAttendees {
    /// At most 1,000 (more in several requests, or by department or tag).
    #[serde(default)]
    pub user_ids: Vec<UserId>,
    /// Student or staff numbers of active users; at most 1,000. One unknown number
    /// refuses the whole request (422, naming them).
    #[serde(default)]
    pub numbers: Vec<String>,
    /// At most 100.
    #[serde(default)]
    pub department_ids: Vec<DepartmentId>,
    /// At most 100.
    #[serde(default)]
    pub tag_ids: Vec<TagId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttendeesAdded {
    /// Newly designated by this request (those designated before are not counted).
    pub added: u64,
    /// The event's designated attendees now.
    pub attendees: u64,
}

/// Designate attendees. Those designated already stay; nothing changes when any id or
/// number is unknown.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), request_body = AddAttendees,
    security(("bearer" = [])), responses((status = 200, body = AttendeesAdded), Problems))]
#[post("/events/{id}/attendees")]
pub async fn add_attendees(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    id: web::Path<String>,
    Json(body): Json<AddAttendees>,
) -> Result<web::Json<AttendeesAdded>, ApiError> {
    let tenant = caller.tenant()?;
    let event: CheckinEventId = path_id(&id)?;
    let mut c = Checks::new();
    for (field, n, max) in [
        ("user_ids", body.user_ids.len(), ATTENDEES_PER_REQUEST_MAX),
        ("numbers", body.numbers.len(), ATTENDEES_PER_REQUEST_MAX),
        (
            "department_ids",
            body.department_ids.len(),
            DESIGNATE_GROUPS_MAX,
        ),
        ("tag_ids", body.tag_ids.len(), DESIGNATE_GROUPS_MAX),
    ] {
        if n > max {
            c.fail(field, "max_items", format!("at most {max}"));
        }
    }
    if body.user_ids.is_empty()
        && body.numbers.is_empty()
        && body.department_ids.is_empty()
        && body.tag_ids.is_empty()
    {
        c.fail(
            "user_ids",
            "required",
            "name someone: user_ids, numbers, department_ids or tag_ids",
        );
    }
    for n in &body.numbers {
        if !c.text("numbers", n, 1, 64) {
            break;
        }
    }
    checked(c)?;
    // The event first: another tenant's, or none, is a 404 before any 422 about names.
    state.store.get_event(tenant, event).await?;
    let mut users: Vec<UserId> = body.user_ids.clone();
    if !body.numbers.is_empty() {
        let wanted: HashSet<&str> = body.numbers.iter().map(String::as_str).collect();
        let found = state
            .store
            .users_by_number(tenant, wanted.iter().map(|n| n.to_string()).collect())
            .await?;
        let known: HashSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        let mut unknown: Vec<&str> = wanted.difference(&known).copied().collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            let n = unknown.len();
            unknown.truncate(UNKNOWN_SHOWN);
            return Err(ApiError::invalid_field(
                "numbers",
                "exists",
                format!(
                    "{n} number(s) match no active user: {}{}",
                    unknown.join(", "),
                    if n > UNKNOWN_SHOWN { ", …" } else { "" }
                ),
            ));
        }
        users.extend(found.into_iter().map(|(_, id)| id));
    }
    if !body.department_ids.is_empty() || !body.tag_ids.is_empty() {
        check_groups_exist(&state, tenant, &body.department_ids, &body.tag_ids).await?;
        let targets = SubsidyTargets {
            department_ids: body.department_ids.clone(),
            tag_ids: body.tag_ids.clone(),
            user_ids: Vec::new(),
            identities: Vec::new(),
        };
        users.extend(state.store.resolve_targets(tenant, targets).await?);
    }
    users.sort_unstable();
    users.dedup();
    if users.len() > DESIGNATE_TOTAL_MAX {
        return Err(ApiError::invalid_field(
            "department_ids",
            "max_items",
            format!(
                "this names {} people; designate at most {DESIGNATE_TOTAL_MAX} a request",
                users.len()
            ),
        ));
    }
    let audit = caller.audit(
        &state,
        "event.attendees.add",
        "event",
        event,
        serde_json::json!({
            "user_ids": body.user_ids.len(), "numbers": body.numbers.len(),
            "department_ids": body.department_ids, "tag_ids": body.tag_ids,
            "people": users.len(),
        }),
    );
    let added = state
        .store
        .add_attendees(tenant, event, users, audit)
        .await?;
    let attendees = state.store.get_event(tenant, event).await?.attendees;
    Ok(web::Json(AttendeesAdded { added, attendees }))
}

/// 422 naming the departments and tags that are not the tenant's.
async fn check_groups_exist(
    state: &AppState,
    tenant: TenantId,
    departments: &[DepartmentId],
    tags: &[TagId],
) -> Result<(), ApiError> {
    let mut c = Checks::new();
    if !departments.is_empty() {
        let known: HashSet<DepartmentId> = state
            .store
            .list_departments(tenant)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        if departments.iter().any(|d| !known.contains(d)) {
            c.fail(
                "department_ids",
                "exists",
                "one or more department_ids do not exist",
            );
        }
    }
    if !tags.is_empty() {
        let known: HashSet<TagId> = state
            .store
            .list_tags(tenant)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        if tags.iter().any(|t| !known.contains(t)) {
            c.fail("tag_ids", "exists", "one or more tag_ids do not exist");
        }
    }
    checked(c)
}

/// Take someone off the list. A check-in they made stays.
#[utoipa::path(tag = "checkin", params(("id" = String, Path), ("user_id" = String, Path)),
    security(("bearer" = [])), responses((status = 204), Problems))]
#[delete("/events/{id}/attendees/{user_id}")]
pub async fn remove_attendee(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (event, user): (CheckinEventId, UserId) = (path_id(&path.0)?, path_id(&path.1)?);
    let audit = caller.audit(
        &state,
        "event.attendees.remove",
        "event",
        event,
        serde_json::json!({ "user_id": user }),
    );
    state
        .store
        .remove_attendee(caller.tenant()?, event, user, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttendeeParams {
    /// true: only those who have checked in; false: only those who have not.
    pub checked_in: Option<bool>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The designated attendees, by user id, each with when they checked in.
#[utoipa::path(tag = "checkin", params(("id" = String, Path), AttendeeParams),
    security(("bearer" = [])), responses((status = 200, body = Paged<Attendee>), Problems))]
#[get("/events/{id}/attendees")]
pub async fn list_attendees(
    state: web::Data<AppState>,
    caller: Auth<CheckinViewer>,
    id: web::Path<String>,
    Query(params): Query<AttendeeParams>,
) -> Result<web::Json<Paged<Attendee>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(UserId)?;
    let found = state
        .store
        .list_attendees(caller.tenant()?, path_id(&id)?, params.checked_in, page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

/// The event's check-ins, oldest first.
#[utoipa::path(tag = "checkin", params(("id" = String, Path), ListParams),
    security(("bearer" = [])), responses((status = 200, body = Paged<CheckIn>), Problems))]
#[get("/events/{id}/check-ins")]
pub async fn list_check_ins(
    state: web::Data<AppState>,
    caller: Auth<CheckinViewer>,
    id: web::Path<String>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<CheckIn>>, ApiError> {
    let found = state
        .store
        .list_check_ins(caller.tenant()?, path_id(&id)?, params.page(CheckInId)?)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffCheckIn {
    pub user_id: UserId,
}

/// Check someone in for them (an admin at the door, or a gate app with `checkin_write`).
/// The geofence does not apply; the window and the list do. 201 with the check-in, or 200
/// with the one they made before.
#[utoipa::path(tag = "checkin", params(("id" = String, Path)), request_body = StaffCheckIn,
    security(("bearer" = [])), responses((status = 201, body = CheckIn),
    (status = 200, body = CheckIn), Problems))]
#[post("/events/{id}/check-ins")]
pub async fn create_staff_check_in(
    state: web::Data<AppState>,
    caller: Auth<CheckinManager>,
    id: web::Path<String>,
    Json(body): Json<StaffCheckIn>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let event = state.store.get_event(tenant, path_id(&id)?).await?;
    let user = match state.store.get_user(tenant, body.user_id).await {
        Ok(user) => user,
        Err(StoreError::NotFound) => {
            return Err(ApiError::invalid_field(
                "user_id",
                "exists",
                "no such user in this organisation",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let audit = caller.audit(
        &state,
        "event.check_in",
        "event",
        event.id,
        serde_json::json!({ "user_id": user.id }),
    );
    check_in(&state, tenant, &event, Some(&user), None, Some(audit)).await
}

/// Where the person is, as their phone reports it.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub latitude: f64,
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub longitude: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfCheckIn {
    /// The event's code as typed (case, spaces and dashes do not matter) or as scanned
    /// from its QR code (`onecard:checkin:<code>`).
    #[schema(max_length = 64, example = "K7QM-4XPA")]
    pub code: String,
    /// Needed when the event has a geofence.
    pub location: Option<Location>,
}

/// Check in to an event with its code (a cardholder, from their phone). 201 with the
/// check-in, or 200 with the one made before. Refusals: 403 `not_a_member`,
/// `not_designated`, `outside_geofence`; 409 `event_not_open`; 422 for an unknown code
/// or a missing location.
#[utoipa::path(tag = "checkin", request_body = SelfCheckIn, security(("bearer" = [])),
    responses((status = 201, body = CheckIn), (status = 200, body = CheckIn), Problems))]
#[post("/check-ins")]
pub async fn create_check_in(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Json(body): Json<SelfCheckIn>,
) -> Result<HttpResponse, ApiError> {
    let mut c = Checks::new();
    let code = normalise_code(&body.code);
    if code.is_none() {
        c.fail(
            "code",
            "format",
            "an event's check-in code has 8 letters and digits",
        );
    }
    if let Some(l) = body.location {
        if !(l.latitude.is_finite() && (-90.0..=90.0).contains(&l.latitude)) {
            c.fail("location.latitude", "range", "-90 to 90");
        }
        if !(l.longitude.is_finite() && (-180.0..=180.0).contains(&l.longitude)) {
            c.fail("location.longitude", "range", "-180 to 180");
        }
    }
    checked(c)?;
    let Some((tenant, event)) = state.store.event_by_code(code.unwrap_or_default()).await? else {
        return Err(ApiError::invalid_field(
            "code",
            "exists",
            "no event has this check-in code",
        ));
    };
    let user = if caller.tenant == Some(tenant) {
        match state
            .store
            .get_user(tenant, UserId(caller.subject()?))
            .await
        {
            Ok(user) => Some(user),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let at = body.location.map(|l| (l.latitude, l.longitude));
    check_in(&state, tenant, &event, user.as_ref(), Some(at), None).await
}

/// The check-in of `user` (None: not a member of `tenant`) to `event`. `location` is
/// `Some` for a person checking themselves in (the geofence applies), `None` for staff.
async fn check_in(
    state: &AppState,
    tenant: TenantId,
    event: &CheckinEvent,
    user: Option<&User>,
    location: Option<Option<(f64, f64)>>,
    audit: Option<onecard_schema::model::Audit>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
        return Err(refuse(state, tenant, event, user, Refusal::NotAMember, now).await);
    };
    let fits = check_window(event, now).and_then(|()| match location {
        Some(at) => check_fence(event.geofence, at).map(|d| (CheckinMethod::Person, d)),
        None => Ok((CheckinMethod::Staff, None)),
    });
    let (method, distance_m) = match fits {
        Ok(fits) => fits,
        // Someone who checked in already gets their check-in back, whenever and wherever
        // they scan again. Read only on a refusal: a first scan costs no extra read.
        Err(r) => {
            if let Some(before) = state.store.find_check_in(tenant, event.id, user.id).await? {
                return Ok(HttpResponse::Ok().json(before));
            }
            if r == Refusal::LocationRequired {
                return Err(ApiError::invalid_field("location", "required", r.detail()));
            }
            return Err(refuse(state, tenant, event, Some(user), r, now).await);
        }
    };
    let check_in = CheckIn {
        id: CheckInId::new(),
        event_id: event.id,
        user_id: user.id,
        name: user.name.clone(),
        number: user.number.clone(),
        at: now,
        method,
        distance_m,
    };
    let confirmed = OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("event:{}", event.id), format!("user:{}", user.id)],
        kind: "checkin.confirmed".into(),
        payload: Payload::of(&check_in),
    };
    let written = state
        .store
        .check_in(tenant, check_in, event.designated, confirmed.clone(), audit)
        .await?;
    match written {
        CheckInWrite::Created(made) => {
            state
                .relay
                .submit(PendingEvent::of_page(tenant, vec![confirmed], now));
            Ok(HttpResponse::Created().json(made))
        }
        CheckInWrite::Existing(before) => Ok(HttpResponse::Ok().json(before)),
        CheckInWrite::NotDesignated => Err(refuse(
            state,
            tenant,
            event,
            Some(user),
            Refusal::NotDesignated,
            now,
        )
        .await),
    }
}

/// The `data` of a `checkin.failed` event.
#[derive(Serialize)]
struct Failed<'a> {
    event_id: CheckinEventId,
    reason: &'static str,
    /// Null when the person is not the tenant's (nothing of them is shown).
    user_id: Option<UserId>,
    name: Option<&'a str>,
    number: Option<&'a str>,
    at: Timestamp,
    distance_m: Option<u32>,
}

/// Tells the event's screen about a refused check-in, and answers the refusal. The
/// person's answer does not wait on the screen: if the event cannot be stored, the
/// refusal is answered anyway (and logged).
async fn refuse(
    state: &AppState,
    tenant: TenantId,
    event: &CheckinEvent,
    user: Option<&User>,
    refusal: Refusal,
    now: Timestamp,
) -> ApiError {
    let data = Failed {
        event_id: event.id,
        reason: refusal.code(),
        user_id: user.map(|u| u.id),
        name: user.map(|u| u.name.as_str()),
        number: user.map(|u| u.number.as_str()),
        at: now,
        distance_m: match refusal {
            Refusal::OutsideGeofence { distance_m, .. } => Some(distance_m),
            _ => None,
        },
    };
    let failed = OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("event:{}", event.id)],
        kind: "checkin.failed".into(),
        payload: Payload::of(&data),
    };
    match state.store.insert_events(tenant, vec![failed], now).await {
        Ok(pending) => state.relay.submit(pending),
        Err(e) => {
            tracing::warn!(error = %e, event = %event.id, "a refused check-in was not published")
        }
    }
    let detail = refusal.detail();
    match refusal {
        Refusal::NotOpen { .. } => ApiError::conflict(refusal.code(), detail),
        _ => ApiError::forbidden(refusal.code(), detail),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `csv` (default) or `xlsx`.
    #[param(inline)]
    pub format: Option<SheetFormat>,
}

/// One line of the attendance sheet.
struct Line {
    number: String,
    name: String,
    present: bool,
    /// Local time, `YYYY-MM-DD HH:MM:SS`.
    at: String,
    method: &'static str,
    distance_m: Option<u32>,
}

/// Every designated attendee (present or absent) and everyone who checked in, by
/// number; times in the tenant's time zone.
#[utoipa::path(tag = "checkin", params(("id" = String, Path), ExportParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attendance sheet", content(
            (String = "text/csv"),
            (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
        Problems))]
#[get("/events/{id}/attendance")]
pub async fn export_attendance(
    state: web::Data<AppState>,
    caller: Auth<CheckinViewer>,
    id: web::Path<String>,
    Query(params): Query<ExportParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let event = state.store.get_event(tenant, path_id(&id)?).await?;
    let tz = state.policy(tenant).await?.tz;
    let local = |t: Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut lines: std::collections::BTreeMap<UserId, Line> = Default::default();
    let store = &state.store;
    for k in all_pages(|page| store.list_check_ins(tenant, event.id, page)).await? {
        lines.insert(
            k.user_id,
            Line {
                number: k.number,
                name: k.name,
                present: true,
                at: local(k.at),
                method: k.method.as_str(),
                distance_m: k.distance_m,
            },
        );
    }
    for a in all_pages(|page| store.list_attendees(tenant, event.id, Some(false), page)).await? {
        lines.entry(a.user_id).or_insert(Line {
            number: a.number,
            name: a.name,
            present: false,
            at: String::new(),
            method: "",
            distance_m: None,
        });
    }
    let mut lines: Vec<Line> = lines.into_values().collect();
    lines.sort_by(|a, b| a.number.cmp(&b.number));
    let name = format!("onecard-attendance-{}", event.id);
    let (body, mime, ext) = match params.format.unwrap_or(SheetFormat::Csv) {
        SheetFormat::Csv => (attendance_csv(&lines), "text/csv; charset=utf-8", "csv"),
        SheetFormat::Xlsx => {
            let title = format!("{} ({})", event.name, tz.iana_name().unwrap_or("UTC"));
            let bytes = web::block(move || attendance_xlsx(&title, &lines))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            (bytes, XLSX_MIME, "xlsx")
        }
    };
    Ok(attachment(body, mime, &format!("{name}.{ext}")))
}

const ATTENDANCE_COLUMNS: [&str; 6] = [
    "number",
    "name",
    "present",
    "checked_in_at",
    "method",
    "distance_m",
];

fn attendance_csv(lines: &[Line]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(ATTENDANCE_COLUMNS);
    for l in lines {
        let _ = w.write_record([
            csv_text(&l.number),
            csv_text(&l.name),
            if l.present { "yes" } else { "no" }.to_string(),
            l.at.clone(),
            l.method.to_string(),
            l.distance_m.map(|d| d.to_string()).unwrap_or_default(),
        ]);
    }
    w.into_inner().unwrap_or_default()
}

fn attendance_xlsx(title: &str, lines: &[Line]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    let sheet = wb.add_worksheet();
    sheet.set_name("attendance")?;
    sheet.write_string_with_format(0, 0, title, &bold)?;
    for (i, c) in ATTENDANCE_COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(2, i as u16, *c, &bold)?;
        sheet.set_column_width(i as u16, 18)?;
    }
    for (r, l) in lines.iter().enumerate() {
        let r = 3 + r as u32;
        sheet.write_string(r, 0, &l.number)?;
        sheet.write_string(r, 1, &l.name)?;
        sheet.write_string(r, 2, if l.present { "yes" } else { "no" })?;
        sheet.write_string(r, 3, &l.at)?;
        sheet.write_string(r, 4, l.method)?;
        if let Some(d) = l.distance_m {
            sheet.write_number(r, 5, f64::from(d))?;
        }
    }
    let r = 3 + lines.len() as u32;
    let present = lines.iter().filter(|l| l.present).count();
    sheet.write_string_with_format(r, 0, format!("{present} of {} present", lines.len()), &bold)?;
    wb.save_to_buffer()
}
