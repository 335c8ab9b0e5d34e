//! Tenants: created by the platform operator; read and tuned by their own admins.

use actix_web::{get, patch, post, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::edition::{capabilities, edition_allowed, Capability};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{AdminId, TenantGroupId, TenantId};
use onecard_schema::model::{
    ArrearsPolicy, Edition, NewToken, OnlineTopUps, Tenant, TenantKind, TenantSettings, TokenKind,
};
use onecard_schema::retention::{RecordKind, Retention};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{checked, nullable};
use crate::auth::{hash_token, new_token, Admin, Auth, Root, SuperAdmin};
use crate::extract::Json;
use crate::limits::{
    ONLINE_TOPUP_MAX_FEN, RETENTION_DAYS_MAX, RETENTION_DAYS_MIN, TENANT_NAME_CHARS_MAX,
};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: String,
    pub kind: TenantKind,
    pub edition: Edition,
    /// IANA time zone; default `Asia/Shanghai`.
    #[schema(example = "Asia/Shanghai", max_length = 64)]
    pub timezone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    pub id: TenantId,
    pub name: String,
    pub kind: TenantKind,
    pub edition: Edition,
    pub timezone: String,
    /// The first super admin's token; shown once, stored only as a hash.
    pub admin_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: TenantId,
    pub name: String,
    pub kind: TenantKind,
    pub edition: Edition,
    pub timezone: String,
    pub capabilities: Vec<Capability>,
    pub settings: TenantSettings,
    pub created_at: Timestamp,
    /// The tenant group it belongs to, if any.
    pub group_id: Option<TenantGroupId>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        TenantView {
            capabilities: capabilities(t.edition),
            id: t.id,
            name: t.name,
            kind: t.kind,
            edition: t.edition,
            timezone: t.timezone,
            settings: t.settings,
            created_at: t.created_at,
            group_id: t.group_id,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub require_agreement: Option<bool>,
    pub refund_expired_to_cash: Option<bool>,
    /// `carry_over` (default) or `write_off`: what the month-end cut-off does with
    /// arrears still owed. `write_off` takes effect at the next cut-off.
    pub arrears_at_month_end: Option<ArrearsPolicy>,
    /// How long the scenario apps' personal records are kept: each field given sets that
    /// kind's days (30 to 3650) or, `null`, keeps it for good; absent fields stay.
    pub retention: Option<RetentionPatch>,
    /// Cardholders topping up their own wallet through the payment provider: absent
    /// fields stay ("Online top-ups" in docs/OPERATIONS.md).
    pub online_topups: Option<OnlineTopUpsPatch>,
}

/// `enabled`, and the least and most one payment may be (fen, 1 to
/// `ONLINE_TOPUP_MAX_FEN`, `min` ≤ `max`); absent fields stay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnlineTopUpsPatch {
    pub enabled: Option<bool>,
    #[schema(minimum = 1)]
    pub min: Option<i64>,
    #[schema(minimum = 1)]
    pub max: Option<i64>,
}

impl OnlineTopUpsPatch {
    fn apply(&self, c: &mut Checks, o: &mut OnlineTopUps) {
        if let Some(v) = self.enabled {
            o.enabled = v;
        }
        for (field, given, slot) in [("min", self.min, &mut o.min), ("max", self.max, &mut o.max)] {
            let Some(v) = given else { continue };
            if !(1..=ONLINE_TOPUP_MAX_FEN).contains(&v) {
                c.fail(
                    &format!("settings.online_topups.{field}"),
                    "range",
                    format!("1 to {ONLINE_TOPUP_MAX_FEN} fen"),
                );
            }
            *slot = v;
        }
        if o.min > o.max {
            c.fail(
                "settings.online_topups.min",
                "min_above_max",
                format!("min ({}) is more than max ({})", o.min, o.max),
            );
        }
    }
}

/// Days per kind of record; absent stays, `null` keeps for good.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPatch {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 30, maximum = 3650)]
    pub visitor_requests_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 30, maximum = 3650)]
    pub shuttle_rides_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 30, maximum = 3650)]
    pub check_ins_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 30, maximum = 3650)]
    pub maintenance_records_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 30, maximum = 3650)]
    pub collection_visits_days: Option<Option<u32>>,
}

impl RetentionPatch {
    fn given(&self, kind: RecordKind) -> Option<Option<u32>> {
        match kind {
            RecordKind::VisitorRequests => self.visitor_requests_days,
            RecordKind::ShuttleRides => self.shuttle_rides_days,
            RecordKind::CheckIns => self.check_ins_days,
            RecordKind::MaintenanceRecords => self.maintenance_records_days,
            RecordKind::CollectionVisits => self.collection_visits_days,
        }
    }

    /// Checks each day count given, then applies it to `r`.
    fn apply(&self, c: &mut Checks, r: &mut Retention) {
        for kind in RecordKind::ALL {
            let Some(days) = self.given(kind) else {
                continue;
            };
            if days.is_some_and(|d| !(RETENTION_DAYS_MIN..=RETENTION_DAYS_MAX).contains(&d)) {
                c.fail(
                    &format!("settings.retention.{}_days", kind.as_str()),
                    "range",
                    format!("{RETENTION_DAYS_MIN} to {RETENTION_DAYS_MAX} days, or null"),
                );
                continue;
            }
            *r.days_mut(kind) = days;
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    #[schema(example = "Asia/Shanghai", max_length = 64)]
    pub timezone: Option<String>,
    pub settings: Option<SettingsPatch>,
}

fn check_timezone(c: &mut Checks, tz: &str) {
    if c.text("timezone", tz, 1, 64) && jiff::tz::TimeZone::get(tz).is_err() {
        c.fail(
            "timezone",
            "iana_zone",
            "not an IANA time zone such as Asia/Shanghai",
        );
    }
}

/// Create a tenant and its first super admin (platform operator).
#[utoipa::path(tag = "tenants", request_body = CreateTenant, security(("bearer" = [])),
    responses((status = 201, body = TenantCreated), Problems))]
#[post("/tenants")]
pub async fn create_tenant(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    Json(body): Json<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let mut c = Checks::new();
    c.text("name", &body.name, 1, TENANT_NAME_CHARS_MAX);
    let timezone = body.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.into());
    check_timezone(&mut c, &timezone);
    if !edition_allowed(body.kind, body.edition) {
        c.fail(
            "edition",
            "edition_for_kind",
            "basic_edu is only for k12 tenants",
        );
    }
    checked(c)?;
    let now = state.clock.now();
    let tenant = Tenant {
        id: TenantId::new(),
        name: body.name,
        kind: body.kind,
        edition: body.edition,
        timezone,
        settings: TenantSettings::default(),
        created_at: now,
        group_id: None,
    };
    let admin_id = AdminId::new();
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Admin,
        tenant_id: Some(tenant.id),
        subject_id: Some(admin_id.0),
        created_at: now,
    };
    // Platform-level entry: the operator's actions are listed by the operator.
    let mut audit = caller.audit(
        &state,
        "tenant.create",
        "tenant",
        tenant.id,
        serde_json::json!({
            "kind": tenant.kind, "edition": tenant.edition,
        }),
    );
    audit.tenant_id = None;
    state
        .store
        .create_tenant(tenant.clone(), admin_id, stored, audit)
        .await?;
    Ok(HttpResponse::Created().json(TenantCreated {
        id: tenant.id,
        name: tenant.name,
        kind: tenant.kind,
        edition: tenant.edition,
        timezone: tenant.timezone,
        admin_token: token,
    }))
}

/// The caller's tenant, with its capabilities and settings.
#[utoipa::path(tag = "tenants", security(("bearer" = [])),
    responses((status = 200, body = TenantView), Problems))]
#[get("/tenant")]
pub async fn get_tenant(
    state: web::Data<AppState>,
    caller: Auth<Admin>,
) -> Result<web::Json<TenantView>, ApiError> {
    Ok(web::Json(
        state.store.get_tenant(caller.tenant()?).await?.into(),
    ))
}

/// Change the time zone or settings (super admin).
#[utoipa::path(tag = "tenants", request_body = PatchTenant, security(("bearer" = [])),
    responses((status = 200, body = TenantView), Problems))]
#[patch("/tenant")]
pub async fn patch_tenant(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Json(body): Json<PatchTenant>,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant_id = caller.tenant()?;
    let mut c = Checks::new();
    if let Some(tz) = &body.timezone {
        check_timezone(&mut c, tz);
    }
    let settings = match body.settings {
        None => None,
        Some(patch) => {
            let mut s = state.store.get_tenant(tenant_id).await?.settings;
            if let Some(retention) = &patch.retention {
                retention.apply(&mut c, &mut s.retention);
            }
            if let Some(o) = &patch.online_topups {
                o.apply(&mut c, &mut s.online_topups);
            }
            if let Some(v) = patch.require_agreement {
                s.require_agreement = v;
            }
            if let Some(v) = patch.refund_expired_to_cash {
                s.refund_expired_to_cash = v;
            }
            if let Some(v) = patch.arrears_at_month_end {
                // In force from now: the next cut-off is the first to write off.
                s.arrears_write_off_since = match v {
                    ArrearsPolicy::CarryOver => None,
                    ArrearsPolicy::WriteOff => s
                        .arrears_write_off_since
                        .filter(|_| s.arrears_at_month_end == ArrearsPolicy::WriteOff)
                        .or(Some(state.clock.now())),
                };
                s.arrears_at_month_end = v;
            }
            Some(s)
        }
    };
    checked(c)?;
    let audit = caller.audit(
        &state,
        "tenant.update",
        "tenant",
        tenant_id,
        serde_json::json!({
            "timezone": body.timezone, "settings": settings,
        }),
    );
    let tenant = state
        .store
        .update_tenant(tenant_id, body.timezone, settings, audit)
        .await?;
    state.tenants.remove(&tenant_id);
    Ok(web::Json(tenant.into()))
}
