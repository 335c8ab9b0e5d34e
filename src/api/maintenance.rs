//! Equipment maintenance codes (SPEC §13). The maintenance app's admins name device types
//! (computers, lifts…) with the time windows their codes are valid in and who may maintain
//! them, and register devices, each with a printed code. A visit is recorded three ways:
//! the technician scans the device's code with their phone (`device_code`); an admin of
//! the app scans the technician's personal code (`staff_scan`); or the device's fixed
//! scanner, bound by a one-time link as a shuttle's phone is, reads it (`fixed_scanner`).
//! A refusal says why (`outside_window`, `not_a_technician`, `card_inactive`, and the
//! personal code's own). Records are searchable by person and place, and exportable.

use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::maintenance::{
    check_windows, describe, normalise_code, open_at, qr_text,
};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{
    AdminId, DeviceId, DeviceTypeId, EventId, MaintenanceId, TenantId, UserId,
};
use onecard_schema::maintenance_store::{RecordFilter, RecordWrite};
use onecard_schema::model::{
    Device, DeviceType, MaintenanceMethod, MaintenanceRecord, User, Window,
};
use onecard_schema::wallet::{OutboxEvent, Payload, PendingEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::payments::mask_name;
use super::scan::{
    active_member, admits, check_identities, distinct, link_refused, person_of_code, verifier_of,
    BindVerifier, Link, Opening,
};
use super::sheet::{check_export_window, ExportWindow, Sheet, SheetFormat, EXPORT_ROWS_MAX};
use super::{checked, pages_up_to, qr_svg, svg_response, with_fresh_code, ListParams, Paged};
use crate::auth::{Auth, Cardholder, MaintenanceAdmin, MaintenanceViewer, Verifier};
use crate::extract::{path_id, Json, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const NAME_CHARS_MAX: usize = 32;
const LOCATION_CHARS_MAX: usize = 64;
const NOTE_CHARS_MAX: usize = 200;
/// A technician's taps on one device's code within one clock minute record one visit.
const TAP_BUCKET_S: i64 = 60;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeviceType {
    #[schema(min_length = 1, max_length = 32, example = "Lift")]
    pub name: String,
    /// When its devices' codes are valid (tenant time); absent or empty, at any time.
    #[serde(default)]
    #[schema(max_items = 14)]
    pub windows: Vec<Window>,
    /// Who may maintain it: people whose identity is one of these; absent or empty, every
    /// active member.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub identities: Vec<String>,
}

/// Absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDeviceType {
    #[schema(min_length = 1, max_length = 32)]
    pub name: Option<String>,
    #[schema(max_items = 14)]
    pub windows: Option<Vec<Window>>,
    #[schema(max_items = 32)]
    pub identities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    pub type_id: DeviceTypeId,
    #[schema(min_length = 1, max_length = 32, example = "Lift B")]
    pub name: String,
    #[schema(min_length = 1, max_length = 64, example = "Library, east stairwell")]
    pub location: String,
}

/// Absent fields stay as they are; the printed code never changes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDevice {
    pub type_id: Option<DeviceTypeId>,
    #[schema(min_length = 1, max_length = 32)]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub location: Option<String>,
}

/// A device's one-time link for its fixed scanner.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceBinding {
    pub device_id: DeviceId,
    pub binding_url: String,
    pub binding_token: String,
    pub expires_at: Timestamp,
    /// The link as an SVG QR image.
    pub svg: String,
}

/// What a fixed scanner is bound to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScannerView {
    pub device: Device,
    pub device_type: DeviceType,
}

/// A scanner just bound: its token (keep it; it is shown once) and its device.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScannerBound {
    pub token: String,
    pub device: Device,
    pub device_type: DeviceType,
}

/// A technician's personal code, as scanned, and an optional note.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanTechnician {
    pub code: String,
    #[schema(max_length = 200)]
    pub note: Option<String>,
}

/// An optional note on a visit recorded from the technician's phone.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitNote {
    #[schema(max_length = 200)]
    pub note: Option<String>,
}

fn check_type(t: &DeviceType) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &t.name, 1, NAME_CHARS_MAX);
    for (field, rule, message) in check_windows(&t.windows) {
        c.fail(&field, rule, message);
    }
    check_identities(&mut c, &t.identities);
    checked(c)
}

fn check_device(d: &Device) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &d.name, 1, NAME_CHARS_MAX);
    c.text("location", &d.location, 1, LOCATION_CHARS_MAX);
    checked(c)
}

/// A note as stored: trimmed, none when empty; 422 past 200 characters.
fn note_of(note: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(note) = note.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let mut c = Checks::new();
    c.text("note", &note, 1, NOTE_CHARS_MAX);
    checked(c)?;
    Ok(Some(note))
}

fn type_detail(t: &DeviceType) -> serde_json::Value {
    serde_json::json!({ "name": t.name, "windows": t.windows, "identities": t.identities })
}

fn device_detail(d: &Device) -> serde_json::Value {
    serde_json::json!({ "type_id": d.type_id, "name": d.name, "location": d.location })
}

/// Name a device type (super admins and the maintenance app's admins).
#[utoipa::path(tag = "maintenance", request_body = CreateDeviceType, security(("bearer" = [])),
    responses((status = 201, body = DeviceType), Problems))]
#[post("/maintenance/device-types")]
pub async fn create_device_type(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    Json(body): Json<CreateDeviceType>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let t = DeviceType {
        id: DeviceTypeId::new(),
        name: body.name,
        windows: body.windows,
        identities: distinct(body.identities),
        created_at: now,
        updated_at: now,
    };
    check_type(&t)?;
    let audit = caller.audit(
        &state,
        "maintenance.type.create",
        "device_type",
        t.id,
        type_detail(&t),
    );
    state
        .store
        .create_device_type(caller.tenant()?, t.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(t))
}

/// The tenant's device types, by name.
#[utoipa::path(tag = "maintenance", security(("bearer" = [])),
    responses((status = 200, body = Paged<DeviceType>), Problems))]
#[get("/maintenance/device-types")]
pub async fn list_device_types(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
) -> Result<web::Json<Paged<DeviceType>>, ApiError> {
    let types = state.store.list_device_types(caller.tenant()?).await?;
    Ok(web::Json(Paged::new(types, None)))
}

/// One device type.
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DeviceType), Problems))]
#[get("/maintenance/device-types/{id}")]
pub async fn get_device_type(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<DeviceType>, ApiError> {
    let t = state
        .store
        .get_device_type(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(t))
}

/// Rename a device type, or change its windows or who maintains it (from the next scan).
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), request_body = PatchDeviceType,
    security(("bearer" = [])), responses((status = 200, body = DeviceType), Problems))]
#[patch("/maintenance/device-types/{id}")]
pub async fn patch_device_type(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
    Json(body): Json<PatchDeviceType>,
) -> Result<web::Json<DeviceType>, ApiError> {
    let tenant = caller.tenant()?;
    let mut t = state.store.get_device_type(tenant, path_id(&id)?).await?;
    if let Some(name) = body.name {
        t.name = name;
    }
    if let Some(windows) = body.windows {
        t.windows = windows;
    }
    if let Some(identities) = body.identities {
        t.identities = distinct(identities);
    }
    t.updated_at = state.clock.now();
    check_type(&t)?;
    let audit = caller.audit(
        &state,
        "maintenance.type.update",
        "device_type",
        t.id,
        type_detail(&t),
    );
    state
        .store
        .update_device_type(tenant, t.clone(), audit)
        .await?;
    Ok(web::Json(t))
}

/// Register a device with a fresh code to print.
#[utoipa::path(tag = "maintenance", request_body = CreateDevice, security(("bearer" = [])),
    responses((status = 201, body = Device), Problems))]
#[post("/maintenance/devices")]
pub async fn create_device(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    Json(body): Json<CreateDevice>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let d = Device {
        id: DeviceId::new(),
        type_id: body.type_id,
        name: body.name,
        location: body.location,
        code: String::new(),
        bound_at: None,
        created_at: now,
        updated_at: now,
    };
    check_device(&d)?;
    let store = &state.store;
    let d = with_fresh_code(
        d,
        |d, code| d.code = code,
        |d: Device| {
            let audit = caller.audit(
                &state,
                "maintenance.device.create",
                "device",
                d.id,
                device_detail(&d),
            );
            async move { store.create_device(tenant, d, audit).await }
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(d))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// Only this type's devices.
    pub type_id: Option<DeviceTypeId>,
}

/// The tenant's devices (or one type's), by location and name.
#[utoipa::path(tag = "maintenance", params(DeviceParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Device>), Problems))]
#[get("/maintenance/devices")]
pub async fn list_devices(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    Query(params): Query<DeviceParams>,
) -> Result<web::Json<Paged<Device>>, ApiError> {
    let devices = state
        .store
        .list_devices(caller.tenant()?, params.type_id)
        .await?;
    Ok(web::Json(Paged::new(devices, None)))
}

/// One device.
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Device), Problems))]
#[get("/maintenance/devices/{id}")]
pub async fn get_device(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<Device>, ApiError> {
    let d = state
        .store
        .get_device(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(d))
}

/// Move, rename or retype a device (its code and scanner stay).
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), request_body = PatchDevice,
    security(("bearer" = [])), responses((status = 200, body = Device), Problems))]
#[patch("/maintenance/devices/{id}")]
pub async fn patch_device(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
    Json(body): Json<PatchDevice>,
) -> Result<web::Json<Device>, ApiError> {
    let tenant = caller.tenant()?;
    let mut d = state.store.get_device(tenant, path_id(&id)?).await?;
    if let Some(t) = body.type_id {
        d.type_id = t;
    }
    if let Some(name) = body.name {
        d.name = name;
    }
    if let Some(location) = body.location {
        d.location = location;
    }
    d.updated_at = state.clock.now();
    check_device(&d)?;
    let audit = caller.audit(
        &state,
        "maintenance.device.update",
        "device",
        d.id,
        device_detail(&d),
    );
    state.store.update_device(tenant, d.clone(), audit).await?;
    Ok(web::Json(d))
}

/// The device's code as an SVG QR code to print (it carries `onecard:device:<code>`; print
/// the code beneath it for typing).
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "image/svg+xml", body = String), Problems))]
#[get("/maintenance/devices/{id}/qr")]
pub async fn get_device_qr(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let d = state
        .store
        .get_device(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(svg_response(qr_svg(&qr_text(&d.code), 320)?))
}

/// A one-time link (valid 24 h) that binds the scanner opening it as the device's fixed
/// scanner; it replaces any link not yet used.
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = DeviceBinding), Problems))]
#[post("/maintenance/devices/{id}/binding")]
pub async fn create_device_binding(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device: DeviceId = path_id(&id)?;
    let link = Link::new(
        &state,
        &state.public_url_of(caller.tenant()?).await?,
        "/verify?app=maintenance",
    )?;
    let audit = caller.audit(
        &state,
        "maintenance.device.binding",
        "device",
        device,
        serde_json::json!({ "expires_at": link.expires_at }),
    );
    state
        .store
        .set_device_binding(caller.tenant()?, device, link.hash, link.expires_at, audit)
        .await?;
    Ok(HttpResponse::Created().json(DeviceBinding {
        device_id: device,
        binding_url: link.url,
        binding_token: link.token,
        expires_at: link.expires_at,
        svg: link.svg,
    }))
}

/// Revoke the device's fixed scanner and any unused link.
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Device), Problems))]
#[post("/maintenance/devices/{id}/unbind")]
pub async fn unbind_device(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<Device>, ApiError> {
    let device: DeviceId = path_id(&id)?;
    let audit = caller.audit(
        &state,
        "maintenance.device.unbind",
        "device",
        device,
        serde_json::json!({}),
    );
    let d = state
        .store
        .unbind_device(caller.tenant()?, device, audit)
        .await?;
    state.tokens.clear();
    Ok(web::Json(d))
}

/// Open a device's binding link on its fixed scanner (no token needed: the link is the
/// proof). 201 with the scanner's token; 410 `binding_used_or_expired`.
#[utoipa::path(tag = "maintenance", request_body = BindVerifier,
    responses((status = 201, body = ScannerBound), Problems))]
#[post("/maintenance/bind")]
pub async fn bind_scanner(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<BindVerifier>,
) -> Result<HttpResponse, ApiError> {
    let Some(o) = Opening::of(
        &state,
        &req,
        &body.binding_token,
        "maintenance.device.bind",
        "device",
    ) else {
        return Err(ApiError::NotFound);
    };
    let now = o.stored.created_at;
    let (tenant, device) = state
        .store
        .bind_scanner(o.hash, o.stored, now, o.audit)
        .await
        .map_err(link_refused)?;
    state.tokens.clear();
    let device_type = state.store.get_device_type(tenant, device.type_id).await?;
    Ok(HttpResponse::Created().json(ScannerBound {
        token: o.token,
        device,
        device_type,
    }))
}

/// The device this fixed scanner is bound to (a verifier token).
#[utoipa::path(tag = "maintenance", security(("bearer" = [])),
    responses((status = 200, body = ScannerView), Problems))]
#[get("/maintenance/scanner")]
pub async fn get_scanner(
    state: web::Data<AppState>,
    caller: Auth<Verifier>,
) -> Result<web::Json<ScannerView>, ApiError> {
    let (device, device_type) = scanner_device(&state, &caller).await?;
    Ok(web::Json(ScannerView {
        device,
        device_type,
    }))
}

/// The device, and its type, that the calling verifier token belongs to; 403 for a
/// verifier of something else (a shuttle's phone).
async fn scanner_device(
    state: &AppState,
    caller: &Auth<Verifier>,
) -> Result<(Device, DeviceType), ApiError> {
    let tenant = caller.tenant()?;
    let device = verifier_of(
        state
            .store
            .get_device(tenant, DeviceId(caller.subject()?))
            .await,
        "a device",
    )?;
    let t = state.store.get_device_type(tenant, device.type_id).await?;
    Ok((device, t))
}

/// What one scan records, once its device and technician are known.
struct Visit {
    tenant: TenantId,
    device: Device,
    device_type: DeviceType,
    person: User,
    method: MaintenanceMethod,
    verified_by: Option<AdminId>,
    note: Option<String>,
    dedupe: Vec<u8>,
}

/// Records a visit after the device type's rules: 403 `not_a_technician`, 409
/// `outside_window`; 201 with the record, 200 with the earlier one for a repeat, 409
/// `personal_code_used` for a personal code recorded at another device.
async fn record(state: &AppState, v: Visit) -> Result<HttpResponse, ApiError> {
    if !admits(&v.device_type.identities, &v.person) {
        return Err(ApiError::forbidden(
            "not_a_technician",
            format!(
                "{} is maintained by {} only",
                v.device_type.name,
                v.device_type.identities.join(", ")
            ),
        ));
    }
    let now = state.clock.now();
    let tz = state.policy(v.tenant).await?.tz;
    if !open_at(&v.device_type.windows, now.to_zoned(tz.clone()).datetime()) {
        return Err(ApiError::conflict(
            "outside_window",
            format!(
                "{} codes are valid {} ({}) only",
                v.device_type.name,
                describe(&v.device_type.windows),
                tz.iana_name().unwrap_or("UTC")
            ),
        ));
    }
    let user = v.person.id;
    let rec = MaintenanceRecord {
        id: MaintenanceId::new(),
        device_id: v.device.id,
        type_id: v.device_type.id,
        user_id: user,
        method: v.method,
        verified_by: v.verified_by,
        note: v.note,
        device_name: Some(v.device.name),
        location: Some(v.device.location),
        type_name: Some(v.device_type.name),
        name: Some(v.person.name),
        number: Some(v.person.number),
        at: now,
    };
    let event = OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("user:{user}"), "tenant".to_string()],
        kind: "maintenance.recorded".into(),
        // The technician's screen and the dashboard: the name masked, as a till shows it
        // (admins list records in full).
        payload: Payload::of(&MaintenanceRecord {
            name: rec.name.as_deref().map(mask_name),
            number: None,
            ..rec.clone()
        }),
    };
    match state
        .store
        .record_maintenance(v.tenant, rec.clone(), v.dedupe, event.clone())
        .await?
    {
        RecordWrite::Created => {
            state
                .relay
                .submit(PendingEvent::of_page(v.tenant, vec![event], now));
            Ok(HttpResponse::Created().json(rec))
        }
        RecordWrite::Repeat(first) => Ok(HttpResponse::Ok().json(first)),
        RecordWrite::Used(first) => Err(ApiError::conflict(
            "personal_code_used",
            format!(
                "this code was already recorded at {}: ask them to refresh it",
                first.device_name.as_deref().unwrap_or("another device")
            ),
        )),
    }
}

/// A single-use key for a personal code: the code's own, marked as such.
fn code_key(nonce: Vec<u8>) -> Vec<u8> {
    let mut key = b"p:".to_vec();
    key.extend(nonce);
    key
}

/// The visit the technician records by scanning a device's code (a cardholder): the
/// device's code as typed or scanned (with or without `onecard:device:`). 201 with the
/// record; 200 with the same record for another tap within the same clock minute; 404
/// for an unknown code or another organisation's; 403 `card_inactive`, `not_a_technician`;
/// 409 `outside_window`.
#[utoipa::path(tag = "maintenance", params(("code" = String, Path)), request_body = VisitNote,
    security(("bearer" = [])),
    responses((status = 201, body = MaintenanceRecord), (status = 200, body = MaintenanceRecord), Problems))]
#[post("/maintenance/codes/{code}/records")]
pub async fn record_by_device_code(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    code: web::Path<String>,
    Json(body): Json<VisitNote>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let note = note_of(body.note)?;
    let code = normalise_code(&code).ok_or(ApiError::NotFound)?;
    let device = match state.store.device_by_code(code).await? {
        Some((owner, d)) if owner == tenant => d,
        _ => return Err(ApiError::NotFound),
    };
    let person = active_member(&state, tenant, user).await?;
    let device_type = state.store.get_device_type(tenant, device.type_id).await?;
    let bucket = state.clock.now().as_second().div_euclid(TAP_BUCKET_S);
    let mut dedupe = b"d:".to_vec();
    dedupe.extend(device.id.0.as_bytes());
    dedupe.extend(user.0.as_bytes());
    dedupe.extend(bucket.to_be_bytes());
    record(
        &state,
        Visit {
            tenant,
            device,
            device_type,
            person,
            method: MaintenanceMethod::DeviceCode,
            verified_by: None,
            note,
            dedupe,
        },
    )
    .await
}

/// An admin of the maintenance app scans a technician's personal code at a device. 201
/// with the record; 200 for the same code scanned again at this device; refusals as the
/// fixed scanner's.
#[utoipa::path(tag = "maintenance", params(("id" = String, Path)), request_body = ScanTechnician,
    security(("bearer" = [])),
    responses((status = 201, body = MaintenanceRecord), (status = 200, body = MaintenanceRecord), Problems))]
#[post("/maintenance/devices/{id}/records")]
pub async fn record_by_staff(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceAdmin>,
    id: web::Path<String>,
    Json(body): Json<ScanTechnician>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let note = note_of(body.note)?;
    let device = state.store.get_device(tenant, path_id(&id)?).await?;
    let device_type = state.store.get_device_type(tenant, device.type_id).await?;
    let (person, nonce) = person_of_code(&state, tenant, &body.code).await?;
    record(
        &state,
        Visit {
            tenant,
            device,
            device_type,
            person,
            method: MaintenanceMethod::StaffScan,
            verified_by: Some(AdminId(caller.subject()?)),
            note,
            dedupe: code_key(nonce),
        },
    )
    .await
}

/// A device's fixed scanner reads a technician's personal code (a verifier token). 201
/// with the record; 200 for the same code read again here; 422 `personal_code_invalid`,
/// 409 `personal_code_expired`, 409 `personal_code_used` (recorded at another device), 403
/// `card_inactive`, 403 `not_a_technician`, 409 `outside_window`.
#[utoipa::path(tag = "maintenance", request_body = ScanTechnician, security(("bearer" = [])),
    responses((status = 201, body = MaintenanceRecord), (status = 200, body = MaintenanceRecord), Problems))]
#[post("/maintenance/records")]
pub async fn record_by_scanner(
    state: web::Data<AppState>,
    caller: Auth<Verifier>,
    Json(body): Json<ScanTechnician>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let note = note_of(body.note)?;
    let (device, device_type) = scanner_device(&state, &caller).await?;
    let (person, nonce) = person_of_code(&state, tenant, &body.code).await?;
    record(
        &state,
        Visit {
            tenant,
            device,
            device_type,
            person,
            method: MaintenanceMethod::FixedScanner,
            verified_by: None,
            note,
            dedupe: code_key(nonce),
        },
    )
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordParams {
    pub device_id: Option<DeviceId>,
    pub type_id: Option<DeviceTypeId>,
    /// The technician.
    pub user_id: Option<UserId>,
    /// Devices whose location contains this (any case).
    #[param(max_length = 64)]
    pub location: Option<String>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A location filter: trimmed, none when empty; 422 past 64 characters.
fn place_of(location: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(place) = location.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let mut c = Checks::new();
    c.text("location", place, 1, LOCATION_CHARS_MAX);
    checked(c)?;
    Ok(Some(place.to_string()))
}

/// Maintenance records, oldest first, by device, type, technician, place and time (the
/// maintenance app's admins, or an app with `maintenance_read`).
#[utoipa::path(tag = "maintenance", params(RecordParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<MaintenanceRecord>), Problems))]
#[get("/maintenance/records")]
pub async fn list_records(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceViewer>,
    Query(params): Query<RecordParams>,
) -> Result<web::Json<Paged<MaintenanceRecord>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page(MaintenanceId)?;
    let filter = RecordFilter {
        device: params.device_id,
        device_type: params.type_id,
        user: params.user_id,
        location: place_of(params.location.as_deref())?,
        from: params.from,
        to: params.to,
    };
    let found = state
        .store
        .list_maintenance(caller.tenant()?, filter, page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

/// My maintenance visits, oldest first (a cardholder).
#[utoipa::path(tag = "me", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<MaintenanceRecord>), Problems))]
#[get("/me/maintenance")]
pub async fn list_my_records(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<MaintenanceRecord>>, ApiError> {
    let filter = RecordFilter {
        user: Some(UserId(caller.subject()?)),
        ..RecordFilter::default()
    };
    let found = state
        .store
        .list_maintenance(caller.tenant()?, filter, params.page(MaintenanceId)?)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordExportParams {
    pub device_id: Option<DeviceId>,
    pub type_id: Option<DeviceTypeId>,
    pub user_id: Option<UserId>,
    #[param(max_length = 64)]
    pub location: Option<String>,
    /// At or after this.
    pub from: Timestamp,
    /// Before this; at most 31 days after `from`.
    pub to: Timestamp,
    /// `csv` (default) or `xlsx`.
    pub format: Option<SheetFormat>,
}

const RECORD_COLUMNS: &[&str] = &[
    "at", "device", "location", "type", "number", "name", "method", "note",
];

/// The records of a window of at most 31 days, as CSV or XLSX, times in the tenant's zone
/// (the maintenance app's admins, or an app with `maintenance_read`). 422
/// `too_many_rows` past 200,000 records.
#[utoipa::path(tag = "maintenance", params(RecordExportParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/maintenance/records/export")]
pub async fn export_records(
    state: web::Data<AppState>,
    caller: Auth<MaintenanceViewer>,
    Query(params): Query<RecordExportParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    check_export_window(params.from, params.to)?;
    let filter = RecordFilter {
        device: params.device_id,
        device_type: params.type_id,
        user: params.user_id,
        location: place_of(params.location.as_deref())?,
        from: Some(params.from),
        to: Some(params.to),
    };
    let store = &state.store;
    let records = pages_up_to(EXPORT_ROWS_MAX, |page| {
        store.list_maintenance(tenant, filter.clone(), page)
    })
    .await?;
    let window = ExportWindow {
        from: params.from,
        to: params.to,
        tz: state.policy(tenant).await?.tz,
    };
    let rows = records
        .into_iter()
        .map(|r| {
            vec![
                window.at(r.at),
                r.device_name.unwrap_or_default(),
                r.location.unwrap_or_default(),
                r.type_name.unwrap_or_default(),
                r.number.unwrap_or_default(),
                r.name.unwrap_or_default(),
                r.method.as_str().to_string(),
                r.note.unwrap_or_default(),
            ]
        })
        .collect();
    let sheet = Sheet {
        title: window.title("Maintenance"),
        name: "maintenance",
        columns: RECORD_COLUMNS,
        money_columns: &[],
        rows,
        noun: "visits",
    };
    sheet
        .download(
            params.format.unwrap_or(SheetFormat::Csv),
            &window.stem("maintenance"),
        )
        .await
}
