//! Statements: every movement of a cardholder's money, newest first (SPEC §6; docs/
//! OPERATIONS.md "Statements"): payments, refunds, top-ups, subsidies, arrears. The
//! cardholder reads their own; an admin who may read payments reads anyone's.

use actix_web::{get, web};
use jiff::Timestamp;
use onecard_actors::wire::PaymentView;
use onecard_schema::ids::{MerchantId, PaymentId, SubsidyId, TenantId, UserId};
use onecard_schema::statement::StatementKind;
use onecard_schema::wallet::Breakdown;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Paged};
use crate::auth::{Auth, Cardholder, PaymentsViewer};
use crate::extract::{path_id, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct NamedRef<Id: ToSchema> {
    pub id: Id,
    /// Its name now (empty for a merchant no longer listed).
    pub name: String,
}

/// One line of a statement. Which fields it has depends on `kind`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementLineView {
    /// The payment's id for a payment; otherwise the ledger transaction's. Lines are in
    /// the order of their ids, newest first.
    pub id: Uuid,
    pub kind: StatementKind,
    pub at: Timestamp,
    /// Fen: what the payment, refund, top-up or subsidy came to, or what was owed, repaid
    /// or written off. Positive; signed only for an `adjustment`.
    pub amount: i64,
    /// `payment`: the payment as it stands now (its status, breakdown and refunded sum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentView>,
    /// `refund` and `arrears_opened`: the payment they belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// `payment` and `refund`: where the payment was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<NamedRef<Uuid>>)]
    pub merchant: Option<NamedRef<MerchantId>>,
    /// `refund`: where the money went back. `balance` to the cash balance, `subsidy` to
    /// subsidy accounts still valid, `deferred` back through the payment provider,
    /// `coupon` the coupon's share (the coupon itself comes back when its whole payment is
    /// refunded while it is valid; never money).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returned: Option<Breakdown>,
    /// `refund`: fen of a subsidy account past its expiry, not revived (the tenant's
    /// `refund_expired_to_cash` is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_revived: Option<i64>,
    /// `subsidy`: the subsidy account credited.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<NamedRef<Uuid>>)]
    pub subsidy_account: Option<NamedRef<SubsidyId>>,
}

async fn page(
    state: &AppState,
    tenant: TenantId,
    user: UserId,
    params: ListParams,
) -> Result<web::Json<Paged<StatementLineView>>, ApiError> {
    let req = params.page(|id| id)?;
    let page = state.store.statement(tenant, user, req).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for l in page.items {
        let merchant = match l.merchant_id {
            // The tenant's merchants are cached: a lookup, not a read.
            Some(id) => Some(NamedRef {
                id,
                name: state.merchant_name(tenant, id).await?,
            }),
            None => None,
        };
        items.push(StatementLineView {
            id: l.id,
            kind: l.kind,
            at: l.at,
            amount: l.amount.0,
            payment: l.payment.as_ref().map(PaymentView::from),
            payment_id: l.payment_id,
            merchant,
            not_revived: l.returned.map(|_| l.not_revived.0),
            returned: l.returned,
            subsidy_account: l.subsidy_account.map(|(id, name)| NamedRef { id, name }),
        });
    }
    Ok(web::Json(Paged::new(items, page.next)))
}

/// The caller's own statement: every movement of their money, newest first.
#[utoipa::path(tag = "me", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<StatementLineView>), Problems))]
#[get("/me/statement")]
pub async fn get_my_statement(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<StatementLineView>>, ApiError> {
    page(&state, caller.tenant()?, UserId(caller.subject()?), params).await
}

/// A cardholder's statement (admins who may read payments).
#[utoipa::path(tag = "wallets", params(("id" = String, Path), ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<StatementLineView>), Problems))]
#[get("/users/{id}/statement")]
pub async fn get_statement(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<StatementLineView>>, ApiError> {
    let tenant = caller.tenant()?;
    let user = state.store.get_user(tenant, path_id(&id)?).await?;
    page(&state, tenant, user.id, params).await
}
