//! Wallets: balances, top-ups, coupons, the deferred-debit agreement, payment codes,
//! freezes. Every change goes through the cardholder's wallet actor.

use actix_web::http::StatusCode;
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::code;
use onecard_actors::domain::validate::Checks;
use onecard_actors::provider::SandboxAccount;
use onecard_actors::wallet::{Answer, Op, Outcome};
use onecard_actors::wire::WalletView;
use onecard_schema::ids::{CouponId, MerchantId, TenantId, UserId};
use onecard_schema::money::{Money, MONEY_JSON_MAX};
use onecard_schema::wallet::Coupon;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::checked;
use super::money::{idem, wallet_call};
use super::register::check_reference;
use crate::auth::{Auth, Cardholder, PaymentsManager, PaymentsViewer, SuperAdmin};
use crate::extract::{path_id, required_idempotency_key, HashedJson, Json};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Fen, at least 1.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// The bank's reference for the money (a transfer's serial number, a receipt's),
    /// 1–64 characters: kept in the top-up register, and credited once in the tenant (409
    /// `reference_used` the second time, whoever sends it).
    #[schema(min_length = 1, max_length = 64)]
    pub reference: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCoupon {
    #[schema(min_length = 1, max_length = 32)]
    pub name: String,
    #[schema(minimum = 1)]
    pub discount: i64,
    #[schema(minimum = 0)]
    pub threshold: i64,
    #[serde(default)]
    pub merchant_ids: Vec<MerchantId>,
    pub valid_from: Option<Timestamp>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentCode {
    /// Show as a QR code; accepted until `expires_at`, once.
    pub code: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxUser {
    /// Fen the sandbox provider will still collect from this user.
    #[schema(minimum = 0)]
    pub available: i64,
    #[schema(minimum = 0, maximum = 60000)]
    pub latency_ms: Option<u64>,
    /// Answer every deferred debit as unreachable (a provider outage): payments stay
    /// `accepted` and are asked again once it is back.
    #[serde(default)]
    pub unavailable: bool,
}

pub fn amount(c: &mut Checks, field: &str, v: i64) -> Money {
    if !(1..=MONEY_JSON_MAX).contains(&v) {
        c.fail(field, "range", format!("1 to {MONEY_JSON_MAX} fen"));
    }
    Money(v)
}

/// An operation that needs no idempotency key, answered 200.
async fn wallet_op(
    state: &AppState,
    tenant: TenantId,
    user: UserId,
    op: Op,
) -> Result<HttpResponse, ApiError> {
    wallet_call(state, tenant, user, op, None, StatusCode::OK).await
}

/// A cardholder's wallet.
#[utoipa::path(tag = "wallets", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = WalletView), Problems))]
#[get("/users/{id}/wallet")]
pub async fn get_wallet(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    wallet_op(&state, caller.tenant()?, path_id(&id)?, Op::Get).await
}

/// The caller's own wallet.
#[utoipa::path(tag = "me", security(("bearer" = [])), responses((status = 200, body = WalletView), Problems))]
#[get("/me/wallet")]
pub async fn get_my_wallet(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<HttpResponse, ApiError> {
    wallet_op(&state, caller.tenant()?, UserId(caller.subject()?), Op::Get).await
}

/// Top up a wallet's cash balance (Idempotency-Key required), with the bank's reference
/// for the money if it has one: a reference already credited in the tenant is 409
/// `reference_used`, so one transfer is never credited twice.
#[utoipa::path(tag = "wallets", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = TopUp, security(("bearer" = [])), responses((status = 201, body = WalletView), Problems))]
#[post("/users/{id}/wallet/topups")]
pub async fn create_topup(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    req: HttpRequest,
    id: web::Path<String>,
    HashedJson(body, hash): HashedJson<TopUp>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let (tenant, user): (TenantId, UserId) = (caller.tenant()?, path_id(&id)?);
    let mut c = Checks::new();
    let amount = amount(&mut c, "amount", body.amount);
    check_reference(&mut c, &body.reference);
    checked(c)?;
    let op = Op::TopUp {
        amount,
        reference: body.reference,
        credited_by: caller.actor().as_string(),
    };
    let idem = Some(idem(&caller, key, hash));
    wallet_call(&state, tenant, user, op, idem, StatusCode::CREATED).await
}

/// Give a cardholder a coupon.
#[utoipa::path(tag = "wallets", params(("id" = String, Path)), request_body = NewCoupon,
    security(("bearer" = [])), responses((status = 201, body = WalletView), Problems))]
#[post("/users/{id}/wallet/coupons")]
pub async fn create_coupon(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
    Json(body): Json<NewCoupon>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user): (TenantId, UserId) = (caller.tenant()?, path_id(&id)?);
    let now = state.clock.now();
    let mut c = Checks::new();
    c.text("name", &body.name, 1, 32);
    let discount = amount(&mut c, "discount", body.discount);
    if !(0..=MONEY_JSON_MAX).contains(&body.threshold) {
        c.fail("threshold", "range", format!("0 to {MONEY_JSON_MAX} fen"));
    }
    let valid_from = body.valid_from.unwrap_or(now);
    if body.expires_at <= valid_from || body.expires_at <= now {
        c.fail(
            "expires_at",
            "after",
            "must be after valid_from and in the future",
        );
    }
    checked(c)?;
    state.check_merchants(tenant, &body.merchant_ids).await?;
    let coupon = Coupon {
        id: CouponId::new(),
        user_id: user,
        name: body.name,
        discount,
        threshold: Money(body.threshold),
        merchant_ids: body.merchant_ids,
        valid_from,
        expires_at: body.expires_at,
        used_payment: None,
        created_at: now,
    };
    let op = Op::AddCoupon { coupon };
    wallet_call(&state, tenant, user, op, None, StatusCode::CREATED).await
}

/// Sign the deferred-debit (withholding) agreement.
#[utoipa::path(tag = "me", security(("bearer" = [])), responses((status = 201, body = WalletView), Problems))]
#[post("/me/agreement")]
pub async fn sign_agreement(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    wallet_call(
        &state,
        tenant,
        user,
        Op::SignAgreement,
        None,
        StatusCode::CREATED,
    )
    .await
}

/// A fresh payment code (accepted for 2 minutes, once).
#[utoipa::path(tag = "me", security(("bearer" = [])), responses((status = 201, body = PaymentCode), Problems))]
#[post("/me/payment-codes")]
pub async fn create_payment_code(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<HttpResponse, ApiError> {
    let code = issue_code(&state, &caller).await?;
    Ok(HttpResponse::Created().json(code))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentCodeQr {
    pub code: String,
    pub expires_at: Timestamp,
    /// The code as an SVG QR image, for pages that cannot draw one.
    pub svg: String,
}

/// A fresh payment code with its QR image (for the `/me` page; the same rules).
#[utoipa::path(tag = "me", security(("bearer" = [])), responses((status = 201, body = PaymentCodeQr), Problems))]
#[post("/me/payment-codes/qr")]
pub async fn create_payment_code_qr(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<HttpResponse, ApiError> {
    let PaymentCode { code, expires_at } = issue_code(&state, &caller).await?;
    let svg = super::qr_svg(&code, 240)?;
    Ok(HttpResponse::Created().json(PaymentCodeQr {
        code,
        expires_at,
        svg,
    }))
}

async fn issue_code(state: &AppState, caller: &Auth<Cardholder>) -> Result<PaymentCode, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let policy = state.policy(tenant).await?;
    match state
        .wallets
        .call(tenant, user, Op::IssueCode, policy, None)
        .await?
    {
        Outcome::Decided {
            answer: Answer::MayIssueCode,
            ..
        } => {
            let (code, expires_at) = code::issue(&state.keys, user, state.clock.now());
            Ok(PaymentCode { code, expires_at })
        }
        other => Err(ApiError::internal(anyhow::anyhow!(
            "unexpected answer to IssueCode: {other:?}"
        ))),
    }
}

/// Freeze a cardholder's payment code (it stays frozen until unfrozen).
#[utoipa::path(tag = "wallets", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = WalletView), Problems))]
#[post("/users/{id}/freeze")]
pub async fn freeze_wallet(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user: UserId = path_id(&id)?;
    let res = wallet_op(&state, caller.tenant()?, user, Op::Freeze).await?;
    let audit = caller.audit(&state, "wallet.freeze", "user", user, serde_json::json!({}));
    state.record_audit(audit).await;
    Ok(res)
}

/// Lift a freeze.
#[utoipa::path(tag = "wallets", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = WalletView), Problems))]
#[post("/users/{id}/unfreeze")]
pub async fn unfreeze_wallet(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user: UserId = path_id(&id)?;
    let res = wallet_op(&state, caller.tenant()?, user, Op::Unfreeze).await?;
    let audit = caller.audit(
        &state,
        "wallet.unfreeze",
        "user",
        user,
        serde_json::json!({}),
    );
    state.record_audit(audit).await;
    Ok(res)
}

/// Sandbox provider: how much it will still collect from a user (admin; sandbox only).
#[utoipa::path(tag = "sandbox", params(("user_id" = String, Path)), request_body = SandboxUser,
    security(("bearer" = [])), responses((status = 200, body = SandboxUserView), Problems))]
#[put("/sandbox/provider/users/{user_id}")]
pub async fn put_sandbox_user(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
    Json(body): Json<SandboxUser>,
) -> Result<web::Json<SandboxUserView>, ApiError> {
    // Only while the sandbox is the active provider do these endpoints exist.
    let sandbox = state.sandbox.as_ref().ok_or(ApiError::NotFound)?;
    let user: UserId = path_id(&id)?;
    state.store.get_user(caller.tenant()?, user).await?;
    let mut c = Checks::new();
    if !(0..=MONEY_JSON_MAX).contains(&body.available) {
        c.fail("available", "range", format!("0 to {MONEY_JSON_MAX} fen"));
    }
    if body.latency_ms.is_some_and(|l| l > 60_000) {
        c.fail("latency_ms", "range", "0 to 60000");
    }
    checked(c)?;
    sandbox.set(
        user,
        SandboxAccount {
            available: Some(body.available),
            latency_ms: body.latency_ms.unwrap_or(0),
            unavailable: body.unavailable,
        },
    );
    Ok(web::Json(SandboxUserView {
        available: body.available,
        latency_ms: body.latency_ms.unwrap_or(0),
        unavailable: body.unavailable,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxUserView {
    pub available: i64,
    pub latency_ms: u64,
    pub unavailable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    /// The topic this cardholder may subscribe to on `/api/v1/ws`.
    pub topic: String,
}

/// Who the cardholder token belongs to.
#[utoipa::path(tag = "me", security(("bearer" = [])), responses((status = 200, body = Me), Problems))]
#[get("/me")]
pub async fn get_me(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<web::Json<Me>, ApiError> {
    let user = state
        .store
        .get_user(caller.tenant()?, UserId(caller.subject()?))
        .await?;
    Ok(web::Json(Me {
        user_id: user.id,
        name: user.name,
        number: user.number,
        topic: format!("user:{}", user.id),
    }))
}
