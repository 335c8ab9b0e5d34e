//! Online top-ups (docs/OPERATIONS.md "Online top-ups"): a cardholder tops up their own
//! wallet by paying the payment provider from their phone. The order (a charge) is opened
//! here and paid in the provider's app; the wallet is credited once the provider says it
//! was paid (`crate::charges`), whether its notice comes, the phone asks, or the sweep
//! does.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::validate::Checks;
use onecard_actors::provider::{ChargeOrder, SandboxPayRefusal};
use onecard_schema::charge_store::{Charge, ChargeFilter, ChargeStatus};
use onecard_schema::ids::{ChargeId, TenantId, UserId};
use onecard_schema::model::{OnlineTopUps, Page};
use onecard_schema::money::Money;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{checked, ListParams, Paged};
use crate::auth::{Auth, Cardholder, PaymentsViewer};
use crate::charges::settle;
use crate::extract::{path_id, required_idempotency_key, Json, Query};
use crate::limits::{CHARGES_PENDING_MAX, CHARGE_TTL};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCharge {
    /// Fen, within the tenant's `min` and `max` (`GET /me/wallet/online-topups`).
    #[schema(minimum = 1)]
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    pub id: ChargeId,
    pub user_id: UserId,
    /// Fen.
    pub amount: i64,
    /// The provider the order is open at.
    pub provider: String,
    /// `pending` (not paid yet, or paid and about to be credited), `paid` (credited to
    /// the wallet) or `closed` (expired unpaid).
    pub status: ChargeStatus,
    pub created_at: Timestamp,
    /// Unpaid by then, it is closed.
    pub expires_at: Timestamp,
    /// The provider's transaction, once paid: the top-up's `reference` in the register.
    pub transaction: Option<String>,
    /// The top-up register's line, once credited (`GET /wallets/topups`).
    pub topup_id: Option<uuid::Uuid>,
    /// When it was credited or closed.
    pub settled_at: Option<Timestamp>,
}

impl From<Charge> for ChargeView {
    fn from(c: Charge) -> Self {
        ChargeView {
            id: c.id,
            user_id: c.user_id,
            amount: c.amount.0,
            provider: c.provider,
            status: c.status,
            created_at: c.created_at,
            expires_at: c.expires_at,
            transaction: c.transaction,
            topup_id: c.topup_id,
            settled_at: c.settled_at,
        }
    }
}

/// A charge just opened, with what the phone hands the provider's app to pay it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenedCharge {
    #[serde(flatten)]
    pub charge: ChargeView,
    /// The provider's payment parameters (the sandbox: `sandbox_pay_url`, to POST to).
    #[schema(value_type = Object)]
    pub pay: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineTopUpsView {
    /// Whether this tenant's cardholders may top up online.
    pub enabled: bool,
    /// The least and the most one top-up may be, fen.
    pub min: i64,
    pub max: i64,
    pub provider: String,
}

/// Whether the caller may top up online, and how much at a time.
#[utoipa::path(tag = "me", security(("bearer" = [])),
    responses((status = 200, body = OnlineTopUpsView), Problems))]
#[get("/me/wallet/online-topups")]
pub async fn get_online_topups(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<web::Json<OnlineTopUpsView>, ApiError> {
    let o = state.tenant(caller.tenant()?).await?.settings.online_topups;
    Ok(web::Json(OnlineTopUpsView {
        enabled: o.enabled,
        min: o.min,
        max: o.max,
        provider: state.provider_name.clone(),
    }))
}

fn check_amount(c: &mut Checks, o: &OnlineTopUps, amount: i64) {
    if !(o.min..=o.max).contains(&amount) {
        c.fail(
            "amount",
            "range",
            format!("{} to {} fen (the tenant's limits)", o.min, o.max),
        );
    }
}

/// Open an online top-up (Idempotency-Key required): an order at the payment provider for
/// the caller to pay in its app within 15 minutes. The wallet is credited once it is paid;
/// `GET /me/wallet/charges/{id}` says when. 403 `online_topups_disabled` unless the tenant
/// has turned them on; 409 `too_many_pending_charges` with three unpaid already; 503 if the
/// provider cannot be reached (nothing is opened).
#[utoipa::path(tag = "me", params(("Idempotency-Key" = String, Header)), request_body = NewCharge,
    security(("bearer" = [])), responses((status = 201, body = OpenedCharge), Problems))]
#[post("/me/wallet/charges")]
pub async fn create_charge(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    req: HttpRequest,
    Json(body): Json<NewCharge>,
) -> Result<HttpResponse, ApiError> {
    required_idempotency_key(&req)?;
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let settings = state.tenant(tenant).await?.settings.online_topups;
    if !settings.enabled {
        return Err(ApiError::forbidden(
            "online_topups_disabled",
            "this tenant has not turned on online top-ups",
        ));
    }
    let mut c = Checks::new();
    check_amount(&mut c, &settings, body.amount);
    checked(c)?;
    let open = state
        .store
        .list_charges(
            tenant,
            ChargeFilter {
                user: Some(user),
                status: Some(ChargeStatus::Pending),
                ..Default::default()
            },
            onecard_schema::model::PageReq {
                limit: CHARGES_PENDING_MAX,
                after: None,
            },
        )
        .await?;
    if open.items.len() >= CHARGES_PENDING_MAX as usize {
        return Err(ApiError::conflict(
            "too_many_pending_charges",
            format!(
                "{CHARGES_PENDING_MAX} online top-ups are waiting to be paid: pay or let one \
                 expire first"
            ),
        ));
    }
    let now = state.clock.now();
    let charge = Charge {
        id: ChargeId(uuid::Uuid::now_v7()),
        tenant_id: tenant,
        user_id: user,
        amount: Money(body.amount),
        provider: state.provider_name.clone(),
        status: ChargeStatus::Pending,
        created_at: now,
        expires_at: now + CHARGE_TTL,
        transaction: None,
        topup_id: None,
        settled_at: None,
    };
    // Stored first, so that an order the provider opened is never unknown here; if the
    // provider cannot be reached it is closed at once.
    state.store.create_charge(charge.clone()).await?;
    let order = ChargeOrder {
        id: charge.id,
        tenant,
        user,
        amount: charge.amount,
        expires_at: charge.expires_at,
    };
    let pay = match state.provider.open_charge(&order).await {
        Ok(pay) => pay,
        Err(e) => {
            let end = onecard_schema::charge_store::ChargeEnd::Closed { at: now };
            state.store.end_charge(tenant, charge.id, end).await?;
            return Err(ApiError::Unavailable(e.to_string()));
        }
    };
    Ok(HttpResponse::Created().json(OpenedCharge {
        charge: charge.into(),
        pay,
    }))
}

fn paged(found: Page<Charge, ChargeId>) -> Paged<ChargeView> {
    Paged::new(
        found.items.into_iter().map(ChargeView::from).collect(),
        found.next.map(|c| c.0),
    )
}

/// The caller's charge `id`, of this tenant (404 for anyone else's).
async fn own_charge(
    state: &AppState,
    tenant: TenantId,
    user: UserId,
    id: &str,
) -> Result<Charge, ApiError> {
    let charge = state.store.get_charge(tenant, path_id(id)?).await?;
    if charge.user_id != user {
        return Err(ApiError::NotFound);
    }
    Ok(charge)
}

/// One of the caller's online top-ups. A pending one is asked about at the provider first,
/// so the phone that comes back from paying sees it credited even if the provider's notice
/// was lost.
#[utoipa::path(tag = "me", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ChargeView), Problems))]
#[get("/me/wallet/charges/{id}")]
pub async fn get_my_charge(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    id: web::Path<String>,
) -> Result<web::Json<ChargeView>, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let charge = own_charge(&state, tenant, user, &id).await?;
    Ok(web::Json(settle(&state, charge).await?.into()))
}

/// The caller's online top-ups, oldest first.
#[utoipa::path(tag = "me", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<ChargeView>), Problems))]
#[get("/me/wallet/charges")]
pub async fn list_my_charges(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<ChargeView>>, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let filter = ChargeFilter {
        user: Some(user),
        ..Default::default()
    };
    let page = params.page(ChargeId)?;
    let found = state.store.list_charges(tenant, filter, page).await?;
    Ok(web::Json(paged(found)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChargeParams {
    pub user_id: Option<UserId>,
    /// `pending`, `paid` or `closed`.
    pub status: Option<ChargeStatus>,
    /// Opened at or after this.
    pub from: Option<Timestamp>,
    /// Opened before this.
    pub to: Option<Timestamp>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The tenant's online top-ups, oldest first, by person, status and when they were opened
/// (admins who may read payments). Those paid are in the top-up register too, under the
/// provider's transaction.
#[utoipa::path(tag = "wallets", params(ChargeParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<ChargeView>), Problems))]
#[get("/wallets/charges")]
pub async fn list_charges(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<ChargeParams>,
) -> Result<web::Json<Paged<ChargeView>>, ApiError> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(ChargeId)?;
    let filter = ChargeFilter {
        user: params.user_id,
        status: params.status,
        from: params.from,
        to: params.to,
    };
    let found = state
        .store
        .list_charges(caller.tenant()?, filter, page)
        .await?;
    Ok(web::Json(paged(found)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxPay {
    /// Whether the sandbox tells the server at once, as a provider's notice would
    /// (default); `false` loses the notice, so that the phone's question or the sweep
    /// credits it.
    pub notify: Option<bool>,
}

/// Sandbox provider: the cardholder pays their order in the "provider's app" (sandbox
/// only). 409 `charge_closed` once it has been closed.
#[utoipa::path(tag = "sandbox", params(("id" = String, Path)), request_body = SandboxPay,
    security(("bearer" = [])), responses((status = 200, body = ChargeView), Problems))]
#[post("/sandbox/provider/charges/{id}/pay")]
pub async fn sandbox_pay(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    id: web::Path<String>,
    Json(body): Json<SandboxPay>,
) -> Result<web::Json<ChargeView>, ApiError> {
    let sandbox = state.sandbox.as_ref().ok_or(ApiError::NotFound)?;
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let charge = own_charge(&state, tenant, user, &id).await?;
    match sandbox.pay(charge.id) {
        Ok(_) => {}
        Err(SandboxPayRefusal::Closed) => {
            return Err(ApiError::conflict(
                "charge_closed",
                "this top-up was closed unpaid: open a new one",
            ))
        }
        // Opened by another node's sandbox, or before a restart: nothing to pay here.
        Err(SandboxPayRefusal::Unknown) => return Err(ApiError::NotFound),
    }
    if body.notify == Some(false) {
        return Ok(web::Json(charge.into()));
    }
    // The provider's notice: the server asks where the order stands and credits it.
    Ok(web::Json(settle(&state, charge).await?.into()))
}
