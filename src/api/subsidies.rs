//! Subsidy rules: one admin creates, another approves (maker–checker); approval credits
//! every targeted person at once.

use actix_web::{get, post, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{AdminId, MerchantId, SubsidyRuleId};

use onecard_schema::wallet::{RuleState, SubsidyRule, SubsidyTargets};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::wallets::amount;
use super::{checked, ListParams, Paged};
use crate::auth::{Auth, PaymentsViewer, SubsidyManager};
use crate::extract::{path_id, Json, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// Targets per list in one rule.
pub const SUBSIDY_TARGETS_MAX: usize = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubsidyRule {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Fen per person.
    #[schema(minimum = 1)]
    pub amount: i64,
    pub targets: SubsidyTargets,
    #[serde(default)]
    pub merchant_ids: Vec<MerchantId>,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleStatus {
    pub id: SubsidyRuleId,
    /// `pending`, `effective` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credited_users: Option<u64>,
}

/// Targets name someone, and no list is longer than `SUBSIDY_TARGETS_MAX` (subsidy rules
/// and batch withdrawals).
pub fn check_targets(c: &mut Checks, t: &SubsidyTargets) {
    if t.user_ids.is_empty()
        && t.department_ids.is_empty()
        && t.tag_ids.is_empty()
        && t.identities.is_empty()
    {
        c.fail(
            "targets",
            "required",
            "name at least one user, department, tag or identity",
        );
    }
    for (field, n) in [
        ("targets.user_ids", t.user_ids.len()),
        ("targets.department_ids", t.department_ids.len()),
        ("targets.tag_ids", t.tag_ids.len()),
        ("targets.identities", t.identities.len()),
    ] {
        if n > SUBSIDY_TARGETS_MAX {
            c.fail(field, "max_items", format!("at most {SUBSIDY_TARGETS_MAX}"));
        }
    }
    for identity in &t.identities {
        c.text("targets.identities", identity, 1, 32);
    }
}

/// Propose a subsidy rule; it takes effect when another admin approves it.
#[utoipa::path(tag = "subsidies", request_body = CreateSubsidyRule, security(("bearer" = [])),
    responses((status = 201, body = RuleStatus), Problems))]
#[post("/subsidy-rules")]
pub async fn create_subsidy_rule(
    state: web::Data<AppState>,
    caller: Auth<SubsidyManager>,
    Json(body): Json<CreateSubsidyRule>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let mut c = Checks::new();
    c.text("name", &body.name, 1, 64);
    let amount = amount(&mut c, "amount", body.amount);
    check_targets(&mut c, &body.targets);
    if body.expires_at.is_some_and(|e| e <= now) {
        c.fail("expires_at", "future", "must be in the future");
    }
    checked(c)?;
    state.check_merchants(tenant, &body.merchant_ids).await?;
    let rule = SubsidyRule {
        id: SubsidyRuleId::new(),
        name: body.name,
        amount,
        targets: body.targets,
        merchant_ids: body.merchant_ids,
        expires_at: body.expires_at,
        status: "pending".into(),
        created_by: AdminId(caller.subject()?),
        approved_by: None,
        credited_users: 0,
        created_at: now,
        approved_at: None,
        rejected_by: None,
        rejected_at: None,
        reject_reason: None,
    };
    let audit = caller.audit(
        &state,
        "subsidy_rule.create",
        "subsidy_rule",
        rule.id,
        serde_json::json!({
            "amount": amount.0, "name": rule.name,
        }),
    );
    state
        .store
        .create_subsidy_rule(tenant, rule.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(RuleStatus {
        id: rule.id,
        status: rule.status,
        credited_users: None,
    }))
}

/// Approve a rule (not by its creator: 403 `maker_checker`); credits every target.
#[utoipa::path(tag = "subsidies", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = RuleStatus), Problems))]
#[post("/subsidy-rules/{id}/approve")]
pub async fn approve_subsidy_rule(
    state: web::Data<AppState>,
    caller: Auth<SubsidyManager>,
    id: web::Path<String>,
) -> Result<web::Json<RuleStatus>, ApiError> {
    let tenant = caller.tenant()?;
    let id: SubsidyRuleId = path_id(&id)?;
    let rule = state.store.get_subsidy_rule(tenant, id).await?;
    let approver = AdminId(caller.subject()?);
    if rule.created_by == approver {
        return Err(ApiError::forbidden(
            "maker_checker",
            "a rule must be approved by an admin other than its creator",
        ));
    }
    let users = state
        .store
        .resolve_targets(tenant, rule.targets.clone())
        .await?;
    let audit = caller.audit(
        &state,
        "subsidy_rule.approve",
        "subsidy_rule",
        id,
        serde_json::json!({
            "users": users.len(), "amount": rule.amount.0,
        }),
    );
    let n = state
        .store
        .approve_subsidy_rule(tenant, id, approver, users, state.clock.now(), audit)
        .await?;
    Ok(web::Json(RuleStatus {
        id,
        status: "effective".into(),
        credited_users: Some(n),
    }))
}

/// A rule and its state.
#[utoipa::path(tag = "subsidies", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SubsidyRule), Problems))]
#[get("/subsidy-rules/{id}")]
pub async fn get_subsidy_rule(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<SubsidyRule>, ApiError> {
    Ok(web::Json(
        state
            .store
            .get_subsidy_rule(caller.tenant()?, path_id(&id)?)
            .await?,
    ))
}

/// Why a rule is turned down.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectSubsidyRule {
    /// What its maker reads: 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "Amount is per term, not per month"
    )]
    pub reason: String,
}

/// Reject a pending rule, with a reason its maker reads; its maker may withdraw it the
/// same way. Nobody is credited; 409 `not_pending` once it was approved or rejected.
#[utoipa::path(tag = "subsidies", params(("id" = String, Path)), request_body = RejectSubsidyRule,
    security(("bearer" = [])), responses((status = 200, body = SubsidyRule), Problems))]
#[post("/subsidy-rules/{id}/reject")]
pub async fn reject_subsidy_rule(
    state: web::Data<AppState>,
    caller: Auth<SubsidyManager>,
    id: web::Path<String>,
    Json(body): Json<RejectSubsidyRule>,
) -> Result<web::Json<SubsidyRule>, ApiError> {
    let tenant = caller.tenant()?;
    let id: SubsidyRuleId = path_id(&id)?;
    let mut c = Checks::new();
    c.text("reason", &body.reason, 1, 200);
    checked(c)?;
    let audit = caller.audit(
        &state,
        "subsidy_rule.reject",
        "subsidy_rule",
        id,
        serde_json::json!({ "reason": body.reason }),
    );
    let rule = state
        .store
        .reject_subsidy_rule(
            tenant,
            id,
            AdminId(caller.subject()?),
            body.reason,
            state.clock.now(),
            audit,
        )
        .await?;
    Ok(web::Json(rule))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RuleParams {
    /// `pending` (what waits for a checker), `effective` or `rejected`; absent: all.
    #[param(inline)]
    pub status: Option<RuleState>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The tenant's subsidy rules, newest first: the checker's queue with `status=pending`.
#[utoipa::path(tag = "subsidies", params(RuleParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<SubsidyRule>), Problems))]
#[get("/subsidy-rules")]
pub async fn list_subsidy_rules(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<RuleParams>,
) -> Result<web::Json<Paged<SubsidyRule>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(SubsidyRuleId)?;
    let found = state
        .store
        .list_subsidy_rules(caller.tenant()?, params.status, page)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}
