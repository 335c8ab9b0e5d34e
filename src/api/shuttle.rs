//! Shuttle-bus verification (SPEC §13). The shuttle app's admins keep routes (with who may
//! ride them) and the buses on each. A bus is the shuttle code one verifying phone is
//! bound to: an admin makes a one-time binding link, the driver's or a steward's phone
//! opens it and holds a `verifier` token for that bus alone; binding another phone, or
//! unbinding, revokes the earlier one. A rider shows their personal code (issued by
//! `/me/personal-codes`, signed, accepted for 2 minutes, once, and unable to pay); the
//! phone scans it and the server answers who boarded or why not (`personal_code_invalid`,
//! `personal_code_expired`, `personal_code_used`, `card_inactive`, `not_on_route`). Rides
//! are records, searchable by route, bus, person and time, and exportable.

use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::code;
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{BusId, EventId, RideId, ShuttleRouteId, UserId};
use onecard_schema::model::{Bus, Ride, ShuttleRoute};
use onecard_schema::shuttle_store::{RideFilter, RideWrite};
use onecard_schema::wallet::{OutboxEvent, Payload, PendingEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::payments::mask_name;
use super::scan::{
    active_member, admits, check_identities, distinct, link_refused, person_of_code, verifier_of,
    BindVerifier, Link, Opening,
};
use super::sheet::{check_export_window, ExportWindow, Sheet, SheetFormat, EXPORT_ROWS_MAX};
use super::{checked, pages_up_to, qr_svg, ListParams, Paged};
use crate::auth::{Auth, Cardholder, ShuttleAdmin, ShuttleViewer, Verifier};
use crate::extract::{path_id, Json, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const NAME_CHARS_MAX: usize = 32;
/// The longest reboarding window a route may set: half a day.
const REBOARD_MINUTES_MAX: u32 = 720;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    #[schema(min_length = 1, max_length = 32, example = "East gate – Science park")]
    pub name: String,
    /// Who may ride: people whose identity is one of these (e.g. `staff`); absent or
    /// empty, every active member.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub identities: Vec<String>,
    /// One ride per trip: a rider who boarded this route less than this many minutes ago
    /// is answered "already boarded" with that ride, on whichever bus. 0 (the default):
    /// every fresh code boards.
    #[serde(default)]
    #[schema(maximum = 720, example = 30)]
    pub reboard_minutes: u32,
}

/// Absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRoute {
    #[schema(min_length = 1, max_length = 32)]
    pub name: Option<String>,
    #[schema(max_items = 32)]
    pub identities: Option<Vec<String>>,
    #[schema(maximum = 720)]
    pub reboard_minutes: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBus {
    pub route_id: ShuttleRouteId,
    #[schema(min_length = 1, max_length = 32, example = "Bus 3 (沪A·12345)")]
    pub name: String,
}

/// Absent fields stay as they are; a bus moved to another route keeps its phone.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBus {
    pub route_id: Option<ShuttleRouteId>,
    #[schema(min_length = 1, max_length = 32)]
    pub name: Option<String>,
}

/// A bus's one-time binding link: open it on the phone that will verify riders.
#[derive(Debug, Serialize, ToSchema)]
pub struct BusBinding {
    pub bus_id: BusId,
    pub binding_url: String,
    pub binding_token: String,
    pub expires_at: Timestamp,
    /// The link as an SVG QR image, for the phone's camera.
    pub svg: String,
}

/// What a bus's verifying phone is bound to.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifierView {
    pub bus: Bus,
    pub route: ShuttleRoute,
}

/// A phone just bound: its token (keep it; it is shown once) and what it verifies.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifierBound {
    pub token: String,
    pub bus: Bus,
    pub route: ShuttleRoute,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRide {
    /// The rider's personal code, as scanned.
    pub code: String,
}

/// A fresh personal code: it names its holder to a shuttle's phone and cannot pay.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonalCode {
    pub code: String,
    pub expires_at: Timestamp,
    /// The code as an SVG QR image.
    pub svg: String,
}

fn check_route(r: &ShuttleRoute) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &r.name, 1, NAME_CHARS_MAX);
    check_identities(&mut c, &r.identities);
    if r.reboard_minutes > REBOARD_MINUTES_MAX {
        c.fail(
            "reboard_minutes",
            "range",
            format!("0 to {REBOARD_MINUTES_MAX} minutes"),
        );
    }
    checked(c)
}

fn check_bus(b: &Bus) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &b.name, 1, NAME_CHARS_MAX);
    checked(c)
}

/// Create a route (super admins and the shuttle app's admins).
#[utoipa::path(tag = "shuttle", request_body = CreateRoute, security(("bearer" = [])),
    responses((status = 201, body = ShuttleRoute), Problems))]
#[post("/shuttle/routes")]
pub async fn create_route(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    Json(body): Json<CreateRoute>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let route = ShuttleRoute {
        id: ShuttleRouteId::new(),
        name: body.name,
        identities: distinct(body.identities),
        reboard_minutes: body.reboard_minutes,
        created_at: now,
        updated_at: now,
    };
    check_route(&route)?;
    let audit = caller.audit(
        &state,
        "shuttle.route.create",
        "shuttle_route",
        route.id,
        serde_json::json!({
            "name": route.name, "identities": route.identities,
            "reboard_minutes": route.reboard_minutes,
        }),
    );
    state
        .store
        .create_route(caller.tenant()?, route.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(route))
}

/// The tenant's routes, by name.
#[utoipa::path(tag = "shuttle", security(("bearer" = [])),
    responses((status = 200, body = Paged<ShuttleRoute>), Problems))]
#[get("/shuttle/routes")]
pub async fn list_routes(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
) -> Result<web::Json<Paged<ShuttleRoute>>, ApiError> {
    let routes = state.store.list_routes(caller.tenant()?).await?;
    Ok(web::Json(Paged::new(routes, None)))
}

/// One route.
#[utoipa::path(tag = "shuttle", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ShuttleRoute), Problems))]
#[get("/shuttle/routes/{id}")]
pub async fn get_route(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<ShuttleRoute>, ApiError> {
    let route = state
        .store
        .get_route(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(route))
}

/// Rename a route or change who may ride it (from the next scan on).
#[utoipa::path(tag = "shuttle", params(("id" = String, Path)), request_body = PatchRoute,
    security(("bearer" = [])), responses((status = 200, body = ShuttleRoute), Problems))]
#[patch("/shuttle/routes/{id}")]
pub async fn patch_route(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    id: web::Path<String>,
    Json(body): Json<PatchRoute>,
) -> Result<web::Json<ShuttleRoute>, ApiError> {
    let tenant = caller.tenant()?;
    let mut route = state.store.get_route(tenant, path_id(&id)?).await?;
    if let Some(name) = body.name {
        route.name = name;
    }
    if let Some(identities) = body.identities {
        route.identities = distinct(identities);
    }
    if let Some(minutes) = body.reboard_minutes {
        route.reboard_minutes = minutes;
    }
    route.updated_at = state.clock.now();
    check_route(&route)?;
    let audit = caller.audit(
        &state,
        "shuttle.route.update",
        "shuttle_route",
        route.id,
        serde_json::json!({
            "name": route.name, "identities": route.identities,
            "reboard_minutes": route.reboard_minutes,
        }),
    );
    state
        .store
        .update_route(tenant, route.clone(), audit)
        .await?;
    Ok(web::Json(route))
}

/// Put a bus on a route.
#[utoipa::path(tag = "shuttle", request_body = CreateBus, security(("bearer" = [])),
    responses((status = 201, body = Bus), Problems))]
#[post("/shuttle/buses")]
pub async fn create_bus(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    Json(body): Json<CreateBus>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let bus = Bus {
        id: BusId::new(),
        route_id: body.route_id,
        name: body.name,
        bound_at: None,
        created_at: now,
        updated_at: now,
    };
    check_bus(&bus)?;
    let audit = caller.audit(
        &state,
        "shuttle.bus.create",
        "bus",
        bus.id,
        serde_json::json!({ "name": bus.name, "route_id": bus.route_id }),
    );
    state
        .store
        .create_bus(caller.tenant()?, bus.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(bus))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BusParams {
    /// Only this route's buses.
    pub route_id: Option<ShuttleRouteId>,
}

/// The tenant's buses (or one route's), by name, each with when its phone was bound.
#[utoipa::path(tag = "shuttle", params(BusParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Bus>), Problems))]
#[get("/shuttle/buses")]
pub async fn list_buses(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    Query(params): Query<BusParams>,
) -> Result<web::Json<Paged<Bus>>, ApiError> {
    let buses = state
        .store
        .list_buses(caller.tenant()?, params.route_id)
        .await?;
    Ok(web::Json(Paged::new(buses, None)))
}

/// One bus.
#[utoipa::path(tag = "shuttle", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Bus), Problems))]
#[get("/shuttle/buses/{id}")]
pub async fn get_bus(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<Bus>, ApiError> {
    let bus = state.store.get_bus(caller.tenant()?, path_id(&id)?).await?;
    Ok(web::Json(bus))
}

/// Rename a bus or move it to another route (its phone stays bound).
#[utoipa::path(tag = "shuttle", params(("id" = String, Path)), request_body = PatchBus,
    security(("bearer" = [])), responses((status = 200, body = Bus), Problems))]
#[patch("/shuttle/buses/{id}")]
pub async fn patch_bus(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    id: web::Path<String>,
    Json(body): Json<PatchBus>,
) -> Result<web::Json<Bus>, ApiError> {
    let tenant = caller.tenant()?;
    let mut bus = state.store.get_bus(tenant, path_id(&id)?).await?;
    if let Some(route) = body.route_id {
        bus.route_id = route;
    }
    if let Some(name) = body.name {
        bus.name = name;
    }
    bus.updated_at = state.clock.now();
    check_bus(&bus)?;
    let audit = caller.audit(
        &state,
        "shuttle.bus.update",
        "bus",
        bus.id,
        serde_json::json!({ "name": bus.name, "route_id": bus.route_id }),
    );
    state.store.update_bus(tenant, bus.clone(), audit).await?;
    Ok(web::Json(bus))
}

/// A one-time link (valid 24 h) that binds the phone opening it as the bus's verifier. It
/// replaces any link not yet used; the bus's current phone keeps working until the new
/// one binds.
#[utoipa::path(tag = "shuttle", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = BusBinding), Problems))]
#[post("/shuttle/buses/{id}/binding")]
pub async fn create_bus_binding(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let bus: BusId = path_id(&id)?;
    let link = Link::new(
        &state,
        &state.public_url_of(caller.tenant()?).await?,
        "/verify",
    )?;
    let audit = caller.audit(
        &state,
        "shuttle.bus.binding",
        "bus",
        bus,
        serde_json::json!({ "expires_at": link.expires_at }),
    );
    state
        .store
        .set_bus_binding(caller.tenant()?, bus, link.hash, link.expires_at, audit)
        .await?;
    Ok(HttpResponse::Created().json(BusBinding {
        bus_id: bus,
        binding_url: link.url,
        binding_token: link.token,
        expires_at: link.expires_at,
        svg: link.svg,
    }))
}

/// Revoke the bus's verifying phone (lost, or handed back) and any unused link.
#[utoipa::path(tag = "shuttle", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Bus), Problems))]
#[post("/shuttle/buses/{id}/unbind")]
pub async fn unbind_bus(
    state: web::Data<AppState>,
    caller: Auth<ShuttleAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<Bus>, ApiError> {
    let bus: BusId = path_id(&id)?;
    let audit = caller.audit(
        &state,
        "shuttle.bus.unbind",
        "bus",
        bus,
        serde_json::json!({}),
    );
    let bus = state.store.unbind_bus(caller.tenant()?, bus, audit).await?;
    // This node forgets the phone's token now; other nodes within their cache's life.
    state.tokens.clear();
    Ok(web::Json(bus))
}

/// Open a bus's binding link on the phone that will verify its riders (no token needed:
/// the link is the proof). 201 with the phone's token; 410 `binding_used_or_expired`.
#[utoipa::path(tag = "shuttle", request_body = BindVerifier,
    responses((status = 201, body = VerifierBound), Problems))]
#[post("/shuttle/bind")]
pub async fn bind_verifier(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<BindVerifier>,
) -> Result<HttpResponse, ApiError> {
    let Some(o) = Opening::of(&state, &req, &body.binding_token, "shuttle.bus.bind", "bus") else {
        return Err(ApiError::NotFound);
    };
    let now = o.stored.created_at;
    let (tenant, bus) = state
        .store
        .bind_verifier(o.hash, o.stored, now, o.audit)
        .await
        .map_err(link_refused)?;
    // The phone this one replaces stops now on this node.
    state.tokens.clear();
    let route = state.store.get_route(tenant, bus.route_id).await?;
    Ok(HttpResponse::Created().json(VerifierBound {
        token: o.token,
        bus,
        route,
    }))
}

/// The bus and route this phone verifies (a verifier token).
#[utoipa::path(tag = "shuttle", security(("bearer" = [])),
    responses((status = 200, body = VerifierView), Problems))]
#[get("/shuttle/verifier")]
pub async fn get_verifier(
    state: web::Data<AppState>,
    caller: Auth<Verifier>,
) -> Result<web::Json<VerifierView>, ApiError> {
    let (bus, route) = phone_bus(&state, &caller).await?;
    Ok(web::Json(VerifierView { bus, route }))
}

/// The bus, and its route, that the calling verifier token belongs to; 403 for a
/// verifier of something else (a device's scanner).
async fn phone_bus(
    state: &AppState,
    caller: &Auth<Verifier>,
) -> Result<(Bus, ShuttleRoute), ApiError> {
    let tenant = caller.tenant()?;
    let bus = verifier_of(
        state.store.get_bus(tenant, BusId(caller.subject()?)).await,
        "a shuttle bus",
    )?;
    let route = state.store.get_route(tenant, bus.route_id).await?;
    Ok((bus, route))
}

/// Verify a rider's personal code on this phone's bus (a verifier token). 201 with the
/// ride; 200 with the same ride when the same code is scanned again on this bus, and with
/// the rider's earlier ride when the route takes each rider once within
/// `reboard_minutes` and they boarded it (on any bus) that recently. Refused
/// with why: 422 `personal_code_invalid` (not a personal code, or another organisation's),
/// 409 `personal_code_expired` (older than 2 minutes: a screenshot), 409
/// `personal_code_used` (it boarded another bus), 403 `card_inactive`, 403 `not_on_route`
/// (the route is for other identities). The rider's own topic hears `shuttle.ride`.
#[utoipa::path(tag = "shuttle", request_body = VerifyRide, security(("bearer" = [])),
    responses((status = 201, body = Ride), (status = 200, body = Ride), Problems))]
#[post("/shuttle/rides")]
pub async fn verify_ride(
    state: web::Data<AppState>,
    caller: Auth<Verifier>,
    Json(body): Json<VerifyRide>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let (bus, route) = phone_bus(&state, &caller).await?;
    let (rider, nonce) = person_of_code(&state, tenant, &body.code).await?;
    let user = rider.id;
    if !admits(&route.identities, &rider) {
        return Err(ApiError::forbidden(
            "not_on_route",
            format!("this route is for {} only", route.identities.join(", ")),
        ));
    }
    let ride = Ride {
        id: RideId::new(),
        route_id: route.id,
        bus_id: bus.id,
        user_id: user,
        route_name: Some(route.name),
        bus_name: Some(bus.name),
        name: Some(rider.name),
        number: Some(rider.number),
        at: now,
    };
    let event = OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("user:{user}"), "tenant".to_string()],
        kind: "shuttle.ride".into(),
        // The rider's screen says "boarded"; the tenant's dashboard counts: neither needs
        // more of the name than a till shows (admins list rides in full).
        payload: Payload::of(&Ride {
            name: ride.name.as_deref().map(mask_name),
            number: None,
            ..ride.clone()
        }),
    };
    match state
        .store
        .record_ride(
            tenant,
            ride.clone(),
            nonce,
            event.clone(),
            (route.reboard_minutes > 0)
                .then(|| now - jiff::SignedDuration::from_mins(i64::from(route.reboard_minutes))),
        )
        .await?
    {
        RideWrite::Created => {
            state
                .relay
                .submit(PendingEvent::of_page(tenant, vec![event], now));
            Ok(HttpResponse::Created().json(ride))
        }
        RideWrite::Repeat(first) => Ok(HttpResponse::Ok().json(first)),
        RideWrite::Used(first) => Err(ApiError::conflict(
            "personal_code_used",
            format!(
                "this code already boarded {} at {}: ask the rider to refresh it",
                first.bus_name.as_deref().unwrap_or("another bus"),
                first.at
            ),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RideParams {
    pub route_id: Option<ShuttleRouteId>,
    pub bus_id: Option<BusId>,
    pub user_id: Option<UserId>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl RideParams {
    fn filter(&self) -> RideFilter {
        RideFilter {
            route: self.route_id,
            bus: self.bus_id,
            user: self.user_id,
            from: self.from,
            to: self.to,
        }
    }
}

/// Rides, oldest first, by route, bus, person and time (the shuttle app's admins, or an app
/// with `shuttle_read`).
#[utoipa::path(tag = "shuttle", params(RideParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Ride>), Problems))]
#[get("/shuttle/rides")]
pub async fn list_rides(
    state: web::Data<AppState>,
    caller: Auth<ShuttleViewer>,
    Query(params): Query<RideParams>,
) -> Result<web::Json<Paged<Ride>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page(RideId)?;
    let found = state
        .store
        .list_rides(caller.tenant()?, params.filter(), page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

/// My rides, oldest first (a cardholder).
#[utoipa::path(tag = "me", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Ride>), Problems))]
#[get("/me/rides")]
pub async fn list_my_rides(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<Ride>>, ApiError> {
    let filter = RideFilter {
        user: Some(UserId(caller.subject()?)),
        ..RideFilter::default()
    };
    let found = state
        .store
        .list_rides(caller.tenant()?, filter, params.page(RideId)?)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RideExportParams {
    pub route_id: Option<ShuttleRouteId>,
    pub bus_id: Option<BusId>,
    pub user_id: Option<UserId>,
    /// At or after this.
    pub from: Timestamp,
    /// Before this; at most 31 days after `from`.
    pub to: Timestamp,
    /// `csv` (default) or `xlsx`.
    pub format: Option<SheetFormat>,
}

const RIDE_COLUMNS: &[&str] = &["at", "number", "name", "route", "bus", "user_id"];

/// The rides of a window of at most 31 days, as CSV or XLSX, times in the tenant's zone
/// (the shuttle app's admins, or an app with `shuttle_read`). 422 `too_many_rows` past
/// 200,000 rides: narrow it.
#[utoipa::path(tag = "shuttle", params(RideExportParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/shuttle/rides/export")]
pub async fn export_rides(
    state: web::Data<AppState>,
    caller: Auth<ShuttleViewer>,
    Query(params): Query<RideExportParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    check_export_window(params.from, params.to)?;
    let filter = RideFilter {
        route: params.route_id,
        bus: params.bus_id,
        user: params.user_id,
        from: Some(params.from),
        to: Some(params.to),
    };
    let store = &state.store;
    let rides = pages_up_to(EXPORT_ROWS_MAX, |page| {
        store.list_rides(tenant, filter.clone(), page)
    })
    .await?;
    let window = ExportWindow {
        from: params.from,
        to: params.to,
        tz: state.policy(tenant).await?.tz,
    };
    let rows = rides
        .into_iter()
        .map(|r| {
            vec![
                window.at(r.at),
                r.number.unwrap_or_default(),
                r.name.unwrap_or_default(),
                r.route_name.unwrap_or_default(),
                r.bus_name.unwrap_or_default(),
                r.user_id.to_string(),
            ]
        })
        .collect();
    let sheet = Sheet {
        title: window.title("Rides"),
        name: "rides",
        columns: RIDE_COLUMNS,
        money_columns: &[],
        rows,
        noun: "rides",
    };
    sheet
        .download(
            params.format.unwrap_or(SheetFormat::Csv),
            &window.stem("rides"),
        )
        .await
}

/// A fresh personal code (accepted for 2 minutes, once) to show a shuttle's phone. It
/// names me and cannot pay; no agreement is needed. 403 `card_inactive` for a suspended or
/// departed member.
#[utoipa::path(tag = "me", security(("bearer" = [])),
    responses((status = 201, body = PersonalCode), Problems))]
#[post("/me/personal-codes")]
pub async fn create_personal_code(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    active_member(&state, tenant, user).await?;
    let (code, expires_at) = code::issue_personal(&state.keys, user, state.clock.now());
    let svg = qr_svg(&code, 240)?;
    Ok(HttpResponse::Created().json(PersonalCode {
        code,
        expires_at,
        svg,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_names_each_identity_once_and_checks_them() {
        assert_eq!(
            distinct::<String>(vec!["staff".into(), "student".into(), "staff".into()]),
            vec!["staff".to_string(), "student".to_string()]
        );
        let now = Timestamp::UNIX_EPOCH;
        let mut route = ShuttleRoute {
            id: ShuttleRouteId::new(),
            name: "East gate".into(),
            identities: vec!["staff".into()],
            reboard_minutes: 0,
            created_at: now,
            updated_at: now,
        };
        assert!(check_route(&route).is_ok());
        route.identities.push(String::new());
        assert!(check_route(&route).is_err());
        route.identities = (0..33).map(|i| format!("id{i}")).collect();
        assert!(check_route(&route).is_err());
        route.identities = vec!["staff".into()];
        route.reboard_minutes = REBOARD_MINUTES_MAX;
        assert!(check_route(&route).is_ok());
        route.reboard_minutes = REBOARD_MINUTES_MAX + 1;
        assert!(check_route(&route).is_err());
    }
}
