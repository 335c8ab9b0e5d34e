//! Multi-merchant-entity settlement (SPEC §1, the advanced edition and up): the bodies a
//! tenant's merchants settle to, and each merchant's schedule of them by tenant-local day
//! (docs/OPERATIONS.md, "Settlement entities"). The `entity-settlement` report and the
//! merchant reports' `settlement_entity` filter read the schedule (`reports.rs`).

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use jiff::civil::Date;
use jiff::ToSpan;
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{MerchantId, SettlementEntityId, TenantId};
use onecard_schema::settlement_store::{
    Assignment, MerchantSettlement, Schedule, SettlementEntity, SettlesTo,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::checked;
use super::reports::parse_date;
use crate::auth::{Auth, SettlementManager, SettlementViewer};
use crate::extract::{path_id, Json};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

pub const ENTITY_NAME_CHARS_MAX: usize = 40;
pub const LEGAL_NAME_CHARS_MAX: usize = 100;
pub const SUB_MERCHANT_CHARS_MAX: usize = 64;
/// An IBAN is at most 34 characters; Chinese bank account numbers are shorter.
pub const BANK_ACCOUNT_CHARS_MAX: usize = 34;
/// How far ahead a merchant's move to another entity may be scheduled.
pub const SCHEDULE_DAYS_AHEAD_MAX: i32 = 366;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSettlementEntity {
    #[schema(min_length = 1, max_length = 40)]
    pub name: String,
    #[schema(max_length = 100)]
    pub legal_name: Option<String>,
    /// The entity's sub-merchant number at the payment provider.
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9_-]*$")]
    pub provider_sub_merchant: Option<String>,
    /// Letters, digits and single spaces.
    #[schema(max_length = 34)]
    pub bank_account: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSettlementEntity {
    #[schema(min_length = 1, max_length = 40)]
    pub name: Option<String>,
    #[schema(max_length = 100)]
    pub legal_name: Option<String>,
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9_-]*$")]
    pub provider_sub_merchant: Option<String>,
    #[schema(max_length = 34)]
    pub bank_account: Option<String>,
}

/// An entity with the merchants that settle to it today.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementEntityView {
    #[serde(flatten)]
    pub entity: SettlementEntity,
    /// Merchants that settle to it today, by an entry of their own or their parent's.
    pub merchants_today: Vec<MerchantId>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMerchantSettlement {
    /// `parent` (take the parent's; a root's is the tenant itself), `own` (the tenant
    /// itself, whatever the parent does) or a settlement entity's id.
    pub settles_to: String,
    /// The tenant-local day it starts, `YYYY-MM-DD`: today (the whole of today) or up to
    /// 366 days ahead; default today. A day's entry replaces an earlier one for that day.
    pub effective_from: Option<String>,
}

/// One entry of a merchant's schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleEntry {
    pub effective_from: String,
    /// `parent`, `own` or a settlement entity's id.
    pub settles_to: String,
    pub set_at: jiff::Timestamp,
}

/// Whom a merchant settles to today, and its schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantSettlementView {
    pub merchant_id: MerchantId,
    /// The tenant-local today.
    pub today: String,
    /// `own` (the tenant itself) or the entity's id.
    pub settles_to: String,
    /// The entity, when not the tenant itself.
    pub settlement_entity: Option<SettlementEntity>,
    /// The merchant whose entry decides today's (this one or an ancestor); null when no
    /// entry up the tree does and the merchant settles to the tenant.
    pub decided_by: Option<MerchantId>,
    /// Every entry of this merchant's own, by day: past ones (which made past days'
    /// statements) and coming ones.
    pub schedule: Vec<ScheduleEntry>,
}

/// The wire form of a result: `own` or the entity's id.
pub fn settles_to_text(s: SettlesTo) -> String {
    match s {
        SettlesTo::Own => "own".into(),
        SettlesTo::Entity(e) => e.to_string(),
    }
}

fn assignment_text(a: Assignment) -> String {
    match a {
        Assignment::Parent => "parent".into(),
        Assignment::Own => "own".into(),
        Assignment::Entity(e) => e.to_string(),
    }
}

/// A filter or result named on the wire: `own` or an entity's id.
pub fn parse_settles_to(field: &str, s: &str) -> Result<SettlesTo, ApiError> {
    if s == "own" {
        return Ok(SettlesTo::Own);
    }
    s.parse()
        .map(SettlesTo::Entity)
        .map_err(|_| ApiError::invalid_field(field, "one_of", "own or a settlement entity's id"))
}

fn check_entity(e: &SettlementEntity) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &e.name, 1, ENTITY_NAME_CHARS_MAX);
    c.text("legal_name", &e.legal_name, 0, LEGAL_NAME_CHARS_MAX);
    if c.text(
        "provider_sub_merchant",
        &e.provider_sub_merchant,
        0,
        SUB_MERCHANT_CHARS_MAX,
    ) && !e
        .provider_sub_merchant
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        c.fail(
            "provider_sub_merchant",
            "pattern",
            "letters, digits, '_' and '-' only",
        );
    }
    if c.text("bank_account", &e.bank_account, 0, BANK_ACCOUNT_CHARS_MAX)
        && (!e
            .bank_account
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == ' ')
            || e.bank_account.contains("  "))
    {
        c.fail(
            "bank_account",
            "pattern",
            "letters, digits and single spaces only",
        );
    }
    checked(c)
}

/// The tenant's merchants, their schedule and today.
struct Today {
    merchants: std::sync::Arc<Vec<onecard_schema::wallet::Merchant>>,
    entries: Vec<MerchantSettlement>,
    schedule: Schedule,
    today: Date,
}

impl Today {
    async fn of(state: &AppState, tenant: TenantId) -> Result<Today, ApiError> {
        let policy = state.policy(tenant).await?;
        let merchants = state.merchants_of(tenant).await?;
        let entries = state.store.merchant_settlements(tenant).await?;
        Ok(Today {
            schedule: Schedule::new(&merchants, &entries),
            entries,
            merchants,
            today: state.clock.now().to_zoned(policy.tz).date(),
        })
    }

    fn view(&self, entity: SettlementEntity) -> SettlementEntityView {
        SettlementEntityView {
            merchants_today: self
                .merchants
                .iter()
                .filter(|m| self.schedule.on(m.id, self.today).0 == SettlesTo::Entity(entity.id))
                .map(|m| m.id)
                .collect(),
            entity,
        }
    }
}

/// Add a settlement entity: a body the tenant's merchants may settle to. Needs the
/// multi-merchant-entity settlement capability (advanced edition and up).
#[utoipa::path(tag = "settlement", request_body = CreateSettlementEntity,
    security(("bearer" = [])), responses((status = 201, body = SettlementEntityView), Problems))]
#[post("/settlement-entities")]
pub async fn create_settlement_entity(
    state: web::Data<AppState>,
    caller: Auth<SettlementManager>,
    Json(body): Json<CreateSettlementEntity>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let entity = SettlementEntity {
        id: SettlementEntityId::new(),
        name: body.name,
        legal_name: body.legal_name.unwrap_or_default(),
        provider_sub_merchant: body.provider_sub_merchant.unwrap_or_default(),
        bank_account: body.bank_account.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    check_entity(&entity)?;
    let audit = caller.audit(
        &state,
        "settlement_entity.create",
        "settlement_entity",
        entity.id,
        serde_json::json!({ "name": entity.name }),
    );
    state
        .store
        .create_settlement_entity(tenant, entity.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(Today::of(&state, tenant).await?.view(entity)))
}

/// The tenant's settlement entities, by name, each with the merchants settling to it
/// today.
#[utoipa::path(tag = "settlement", security(("bearer" = [])),
    responses((status = 200, body = Vec<SettlementEntityView>), Problems))]
#[get("/settlement-entities")]
pub async fn list_settlement_entities(
    state: web::Data<AppState>,
    caller: Auth<SettlementViewer>,
) -> Result<web::Json<Vec<SettlementEntityView>>, ApiError> {
    let tenant = caller.tenant()?;
    let t = Today::of(&state, tenant).await?;
    let entities = state.store.list_settlement_entities(tenant).await?;
    Ok(web::Json(entities.into_iter().map(|e| t.view(e)).collect()))
}

#[utoipa::path(tag = "settlement", security(("bearer" = [])),
    responses((status = 200, body = SettlementEntityView), Problems))]
#[get("/settlement-entities/{id}")]
pub async fn get_settlement_entity(
    state: web::Data<AppState>,
    caller: Auth<SettlementViewer>,
    id: web::Path<String>,
) -> Result<web::Json<SettlementEntityView>, ApiError> {
    let tenant = caller.tenant()?;
    let entity = state
        .store
        .get_settlement_entity(tenant, path_id(&id)?)
        .await?;
    Ok(web::Json(Today::of(&state, tenant).await?.view(entity)))
}

/// Change an entity's name or details. Past statements show its current name.
#[utoipa::path(tag = "settlement", request_body = PatchSettlementEntity,
    security(("bearer" = [])), responses((status = 200, body = SettlementEntityView), Problems))]
#[patch("/settlement-entities/{id}")]
pub async fn patch_settlement_entity(
    state: web::Data<AppState>,
    caller: Auth<SettlementManager>,
    id: web::Path<String>,
    Json(body): Json<PatchSettlementEntity>,
) -> Result<web::Json<SettlementEntityView>, ApiError> {
    let tenant = caller.tenant()?;
    let mut entity = state
        .store
        .get_settlement_entity(tenant, path_id(&id)?)
        .await?;
    let fields = [
        (body.name, &mut entity.name),
        (body.legal_name, &mut entity.legal_name),
        (
            body.provider_sub_merchant,
            &mut entity.provider_sub_merchant,
        ),
        (body.bank_account, &mut entity.bank_account),
    ];
    for (new, field) in fields {
        if let Some(v) = new {
            *field = v;
        }
    }
    entity.updated_at = state.clock.now();
    check_entity(&entity)?;
    let audit = caller.audit(
        &state,
        "settlement_entity.update",
        "settlement_entity",
        entity.id,
        serde_json::json!({ "name": entity.name }),
    );
    state
        .store
        .update_settlement_entity(tenant, entity.clone(), audit)
        .await?;
    Ok(web::Json(Today::of(&state, tenant).await?.view(entity)))
}

/// Delete an entity no merchant's schedule names (409 `settlement_entity_in_use`
/// otherwise: past statements keep it).
#[utoipa::path(tag = "settlement", security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), Problems))]
#[delete("/settlement-entities/{id}")]
pub async fn delete_settlement_entity(
    state: web::Data<AppState>,
    caller: Auth<SettlementManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: SettlementEntityId = path_id(&id)?;
    let audit = caller.audit(
        &state,
        "settlement_entity.delete",
        "settlement_entity",
        id,
        serde_json::json!({}),
    );
    state
        .store
        .delete_settlement_entity(caller.tenant()?, id, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn merchant_view(
    state: &AppState,
    tenant: TenantId,
    merchant: MerchantId,
) -> Result<MerchantSettlementView, ApiError> {
    let mut t = Today::of(state, tenant).await?;
    if !t.merchants.iter().any(|m| m.id == merchant) {
        // Perhaps made on another node within the cache's few seconds: read again.
        state.merchants.remove(&tenant);
        t = Today::of(state, tenant).await?;
        if !t.merchants.iter().any(|m| m.id == merchant) {
            return Err(ApiError::NotFound);
        }
    }
    let (settles_to, decided_by) = t.schedule.on(merchant, t.today);
    let settlement_entity = match settles_to {
        SettlesTo::Own => None,
        SettlesTo::Entity(e) => Some(state.store.get_settlement_entity(tenant, e).await?),
    };
    Ok(MerchantSettlementView {
        merchant_id: merchant,
        today: t.today.to_string(),
        settles_to: settles_to_text(settles_to),
        settlement_entity,
        decided_by,
        schedule: t
            .entries
            .iter()
            .filter(|e| e.merchant_id == merchant)
            .map(|e| ScheduleEntry {
                effective_from: e.effective_from.to_string(),
                settles_to: assignment_text(e.assignment),
                set_at: e.set_at,
            })
            .collect(),
    })
}

/// Whom a merchant settles to today (by its own entry or an ancestor's), and its schedule.
#[utoipa::path(tag = "settlement", security(("bearer" = [])),
    responses((status = 200, body = MerchantSettlementView), Problems))]
#[get("/merchants/{id}/settlement")]
pub async fn get_merchant_settlement(
    state: web::Data<AppState>,
    caller: Auth<SettlementViewer>,
    id: web::Path<String>,
) -> Result<web::Json<MerchantSettlementView>, ApiError> {
    let view = merchant_view(&state, caller.tenant()?, path_id(&id)?).await?;
    Ok(web::Json(view))
}

/// Set whom a merchant settles to from a day on: today (the whole of today) or a coming
/// day; never a past one, whose statement may have been paid out. Its sub-merchants
/// without an entry of their own follow it.
#[utoipa::path(tag = "settlement", request_body = SetMerchantSettlement,
    security(("bearer" = [])), responses((status = 200, body = MerchantSettlementView), Problems))]
#[put("/merchants/{id}/settlement")]
pub async fn put_merchant_settlement(
    state: web::Data<AppState>,
    caller: Auth<SettlementManager>,
    id: web::Path<String>,
    Json(body): Json<SetMerchantSettlement>,
) -> Result<web::Json<MerchantSettlementView>, ApiError> {
    let tenant = caller.tenant()?;
    let merchant: MerchantId = path_id(&id)?;
    let assignment = match body.settles_to.as_str() {
        "parent" => Assignment::Parent,
        "own" => Assignment::Own,
        other => Assignment::Entity(other.parse().map_err(|_| {
            ApiError::invalid_field(
                "settles_to",
                "one_of",
                "parent, own or a settlement entity's id",
            )
        })?),
    };
    let policy = state.policy(tenant).await?;
    let now = state.clock.now();
    let today = now.to_zoned(policy.tz).date();
    let from = parse_date("effective_from", body.effective_from.as_deref())?.unwrap_or(today);
    if from < today {
        return Err(ApiError::invalid_field(
            "effective_from",
            "not_past",
            format!("today ({today}) or later: a past day's statement stays as it was"),
        ));
    }
    let last = today
        .checked_add(SCHEDULE_DAYS_AHEAD_MAX.days())
        .map_err(ApiError::internal)?;
    if from > last {
        return Err(ApiError::invalid_field(
            "effective_from",
            "range",
            format!("at most {SCHEDULE_DAYS_AHEAD_MAX} days ahead"),
        ));
    }
    let entry = MerchantSettlement {
        merchant_id: merchant,
        effective_from: from,
        assignment,
        set_at: now,
    };
    let audit = caller.audit(
        &state,
        "merchant.settlement",
        "merchant",
        merchant,
        serde_json::json!({
            "settles_to": assignment_text(assignment), "effective_from": from.to_string(),
        }),
    );
    state
        .store
        .set_merchant_settlement(tenant, entry, audit)
        .await?;
    Ok(web::Json(merchant_view(&state, tenant, merchant).await?))
}
