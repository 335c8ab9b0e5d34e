//! Paying at the till, reading payments, refunds.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::code::{self, CodeError};
use onecard_actors::domain::validate::Checks;
use onecard_actors::wallet::{CodeCheck, Op, Outcome, WalletError};
use onecard_actors::wire::{to_json_bytes, PaymentView};
use onecard_schema::ids::{EventId, MerchantId, PaymentId, TerminalId, UserId};
use onecard_schema::model::TokenKind;
use onecard_schema::money::Money;
use onecard_schema::money_store::PaymentFilter;
use onecard_schema::wallet::{
    Breakdown, DeclineReason, OutboxEvent, Payload, Payment, PaymentStatus, PendingEvent,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::merchants::subtree;
use super::money::{idem, respond, wallet_call};
use super::sheet::{check_export_window, ExportWindow, Sheet, SheetFormat, EXPORT_ROWS_MAX};
use super::wallets::amount;
use super::{checked, query_id, too_many_rows, ListParams, Paged};
use crate::auth::{Auth, PaymentsManager, PaymentsViewer, PaymentsViewerOrTerminal, Terminal};
use crate::extract::{path_id, required_idempotency_key, HashedJson, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pay {
    /// The cardholder's payment code, as scanned.
    #[schema(max_length = 128)]
    pub code: String,
    /// Fen, at least 1.
    #[schema(minimum = 1)]
    pub amount: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Fen; default everything still refundable.
    #[schema(minimum = 1)]
    pub amount: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentQuery {
    pub user_id: Option<String>,
    pub merchant_id: Option<String>,
    pub status: Option<PaymentStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Take a payment at a till (terminal token; Idempotency-Key required). A declined
/// attempt is still 201, recorded, with its `decline_reason`.
#[utoipa::path(tag = "payments", params(("Idempotency-Key" = String, Header)), request_body = Pay,
    security(("bearer" = [])), responses((status = 201, body = PaymentView), Problems))]
#[post("/payments")]
pub async fn create_payment(
    state: web::Data<AppState>,
    caller: Auth<Terminal>,
    req: HttpRequest,
    HashedJson(body, hash): HashedJson<Pay>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    let amount = amount(&mut c, "amount", body.amount);
    if body.code.is_empty() || body.code.len() > code::CODE_CHARS_MAX {
        c.fail(
            "code",
            "length",
            format!("1 to {} characters", code::CODE_CHARS_MAX),
        );
    }
    checked(c)?;
    let terminal = state
        .terminal(tenant, TerminalId(caller.subject()?))
        .await?;
    if terminal.collection.is_some() {
        return Err(ApiError::forbidden(
            "not_a_till",
            "this terminal is a collection code: cardholders pay it from their phones",
        ));
    }
    let merchant = state.merchant_info(tenant, terminal.merchant_id).await?;
    let idem = idem(&caller, key, hash);
    let now = state.clock.now();
    let check = match code::verify(&state.keys, &body.code, now) {
        Ok(v) => (
            v.user,
            CodeCheck::Valid {
                nonce: v.nonce,
                reused: false,
            },
        ),
        Err(CodeError::Expired(v)) => (v.user, CodeCheck::Expired),
        Err(CodeError::Invalid) => {
            return decline_orphan(&state, tenant, terminal.id, merchant.id, amount, idem).await
        }
    };
    let (user, code) = check;
    let merchant_id = merchant.id;
    // Taken to be active: the commit checks the card in its own transaction, and the
    // wallet decides again as `card_inactive` if it is not.
    let op = Op::Pay {
        payment_id: PaymentId::new(),
        terminal_id: terminal.id,
        merchant,
        amount,
        code,
        card_active: true,
    };
    let policy = state.policy(tenant).await?;
    match state
        .wallets
        .call(tenant, user, op, policy, Some(idem.clone()))
        .await
    {
        Ok(outcome) => respond(outcome, StatusCode::CREATED),
        // The code names a user of another tenant (or one removed): it is not ours.
        Err(WalletError::NotFound) => {
            decline_orphan(&state, tenant, terminal.id, merchant_id, amount, idem).await
        }
        Err(e) => Err(e.into()),
    }
}

/// How often each node purges used codes, and how many go per statement.
pub const USED_CODE_PURGE_S: u64 = 60;
const USED_CODE_PURGE_BATCH: usize = 10_000;

/// Forgets the used codes that can no longer be accepted (`code::USED_CODE_KEEP`), a
/// batch per statement, so that the table holds minutes of payments, not years.
pub async fn purge_used_codes(state: &AppState) -> Result<u64, ApiError> {
    let Ok(before) = state.clock.now().checked_sub(code::USED_CODE_KEEP) else {
        return Ok(0);
    };
    crate::tasks::drain(USED_CODE_PURGE_BATCH, || {
        state.store.purge_used_codes(before, USED_CODE_PURGE_BATCH)
    })
    .await
}

/// The purge loop, every `USED_CODE_PURGE_S` on each node.
pub fn spawn_used_code_purge(state: std::sync::Arc<AppState>) {
    crate::tasks::every(
        state,
        std::time::Duration::from_secs(USED_CODE_PURGE_S),
        "used code purge",
        |state| async move { purge_used_codes(&state).await.map(|_| ()) },
    );
}

/// A code that does not verify belongs to no wallet: record the declined attempt alone.
async fn decline_orphan(
    state: &AppState,
    tenant: onecard_schema::ids::TenantId,
    terminal: TerminalId,
    merchant: MerchantId,
    amount: Money,
    idem: onecard_actors::wallet::IdemKey,
) -> Result<HttpResponse, ApiError> {
    if let Some(prev) = state
        .store
        .find_money_request(idem.scope.clone(), idem.key.clone())
        .await?
    {
        if prev.request_hash != idem.hash {
            return Err(ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was used with another request",
            ));
        }
        return respond(
            Outcome::Replay {
                status: prev.status,
                body: prev.body,
            },
            StatusCode::CREATED,
        );
    }
    let now = state.clock.now();
    let p = Payment {
        id: PaymentId::new(),
        tenant_id: tenant,
        user_id: None,
        merchant_id: merchant,
        terminal_id: terminal,
        amount,
        status: PaymentStatus::Declined,
        decline_reason: Some(DeclineReason::CodeInvalid),
        coupon_id: None,
        breakdown: Breakdown::default(),
        subsidy_parts: Vec::new(),
        refunded: Money::ZERO,
        created_at: now,
        updated_at: now,
    };
    let view = PaymentView::from(&p);
    let payload = Payload::of(&view);
    let event = OutboxEvent {
        id: EventId::new(),
        topics: vec![
            format!("terminal:{terminal}"),
            format!("merchant:{merchant}"),
            "tenant".to_string(),
        ],
        kind: "payment.declined".into(),
        payload,
    };
    let body = to_json_bytes(&view);
    let request = onecard_schema::wallet::MoneyRequest {
        scope: idem.scope,
        key: idem.key,
        request_hash: idem.hash,
        status: 201,
        body: body.clone(),
    };
    let created_at = p.created_at;
    state
        .store
        .insert_orphan_payment(p, vec![event.clone()], request)
        .await?;
    state
        .relay
        .submit(PendingEvent::of_page(tenant, vec![event], created_at));
    Ok(HttpResponse::Created()
        .content_type("application/json")
        .body(body))
}

/// One payment (an admin, or the till that took it).
#[utoipa::path(tag = "payments", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = PaymentView), Problems))]
#[get("/payments/{id}")]
pub async fn get_payment(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewerOrTerminal>,
    id: web::Path<String>,
) -> Result<web::Json<PaymentView>, ApiError> {
    let p = state
        .store
        .get_payment(caller.tenant()?, path_id(&id)?)
        .await?;
    if caller.kind == TokenKind::Terminal && Some(p.terminal_id.0) != caller.subject {
        return Err(ApiError::NotFound);
    }
    Ok(web::Json(PaymentView::from(&p)))
}

/// Payments, newest first.
#[utoipa::path(tag = "payments", params(PaymentQuery), security(("bearer" = [])),
    responses((status = 200, body = Paged<PaymentView>), Problems))]
#[get("/payments")]
pub async fn list_payments(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(q): Query<PaymentQuery>,
) -> Result<web::Json<Paged<PaymentView>>, ApiError> {
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page(PaymentId)?;
    let filter = PaymentFilter {
        user_id: query_id("user_id", &q.user_id, UserId)?,
        merchant_id: query_id("merchant_id", &q.merchant_id, MerchantId)?,
        status: q.status,
    };
    let result = state
        .store
        .list_payments(caller.tenant()?, filter, page)
        .await?;
    let items = result.items.iter().map(PaymentView::from).collect();
    Ok(web::Json(Paged::new(items, result.next.map(|p| p.0))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentExportParams {
    /// A merchant, with everything under it; every merchant when absent.
    pub merchant_id: Option<MerchantId>,
    /// At or after this.
    pub from: Timestamp,
    /// Before this; at most 31 days after `from`.
    pub to: Timestamp,
    /// `csv` (default; money in fen) or `xlsx` (money in yuan, with totals).
    pub format: Option<SheetFormat>,
}

const PAYMENT_COLUMNS: &[&str] = &[
    "at",
    "merchant",
    "terminal",
    "number",
    "name",
    "amount",
    "coupon",
    "subsidy",
    "balance",
    "deferred",
    "refunded",
    "status",
    "payment_id",
    "terminal_id",
];

/// The transaction detail: every payment that moved money (all but the declined, which
/// `GET /payments?status=declined` lists) in a window of at most 31 days, oldest first,
/// as CSV or XLSX, times in the tenant's zone, with where it was paid, by whom and from
/// which funds. Its `amount` total is the window's sales, as the reports count them. 422
/// `too_many_rows` past 200,000 payments: narrow it.
#[utoipa::path(tag = "payments", params(PaymentExportParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/payments/export")]
pub async fn export_payments(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<PaymentExportParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    check_export_window(params.from, params.to)?;
    let all = state.merchants_of(tenant).await?;
    let merchants: Vec<MerchantId> = match params.merchant_id {
        None => all.iter().map(|m| m.id).collect(),
        Some(root) => {
            state.check_merchants(tenant, &[root]).await?;
            subtree(&all, root).unwrap_or_default()
        }
    };
    let lines = state
        .store
        .payments_in_window(
            tenant,
            merchants.clone(),
            params.from,
            params.to,
            EXPORT_ROWS_MAX + 1,
        )
        .await?;
    if lines.len() > EXPORT_ROWS_MAX {
        return Err(too_many_rows(EXPORT_ROWS_MAX));
    }
    let terminals: HashMap<TerminalId, String> = state
        .store
        .list_terminals(tenant, merchants)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    let names: HashMap<MerchantId, &str> = all.iter().map(|m| (m.id, m.name.as_str())).collect();
    let window = ExportWindow {
        from: params.from,
        to: params.to,
        tz: state.policy(tenant).await?.tz,
    };
    let rows = lines
        .into_iter()
        .map(|l| {
            let p = l.payment;
            vec![
                window.at(p.created_at),
                names
                    .get(&p.merchant_id)
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                terminals.get(&p.terminal_id).cloned().unwrap_or_default(),
                l.number,
                l.name,
                p.amount.0.to_string(),
                p.breakdown.coupon.0.to_string(),
                p.breakdown.subsidy.0.to_string(),
                p.breakdown.balance.0.to_string(),
                p.breakdown.deferred.0.to_string(),
                p.refunded.0.to_string(),
                p.status.as_str().to_string(),
                p.id.to_string(),
                p.terminal_id.to_string(),
            ]
        })
        .collect();
    let of = params
        .merchant_id
        .and_then(|m| names.get(&m).map(|n| format!(" at {n}")))
        .unwrap_or_default();
    let sheet = Sheet {
        title: window.title(&format!("Payments{of}")),
        name: "payments",
        columns: PAYMENT_COLUMNS,
        money_columns: &[5, 6, 7, 8, 9, 10],
        rows,
        noun: "payments",
    };
    sheet
        .download(
            params.format.unwrap_or(SheetFormat::Csv),
            &window.stem("payments"),
        )
        .await
}

/// Refund a payment, whole or in part, back to where its money came from (admin;
/// Idempotency-Key required).
#[utoipa::path(tag = "payments", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = RefundRequest, security(("bearer" = [])), responses((status = 201, body = PaymentView), Problems))]
#[post("/payments/{id}/refunds")]
pub async fn create_refund(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    req: HttpRequest,
    id: web::Path<String>,
    HashedJson(body, hash): HashedJson<RefundRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    let refund = body.amount.map(|a| amount(&mut c, "amount", a));
    checked(c)?;
    let payment = state.store.get_payment(tenant, path_id(&id)?).await?;
    let Some(user) = payment.user_id else {
        return Err(ApiError::conflict(
            "not_refundable",
            "a declined payment cannot be refunded",
        ));
    };
    let op = Op::Refund {
        payment: Box::new(payment),
        amount: refund,
    };
    let idem = Some(idem(&caller, key, hash));
    let res = wallet_call(&state, tenant, user, op, idem, StatusCode::CREATED).await?;
    let audit = caller.audit(
        &state,
        "payment.refund",
        "payment",
        id.as_str(),
        serde_json::json!({ "amount": refund.map(|m| m.0) }),
    );
    state.record_audit(audit).await;
    Ok(res)
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Holder {
    /// The cardholder's name with all but the first letter of each word masked.
    pub name: String,
}

/// Who paid, masked, for a till's customer display (an admin, or the till that took it).
#[utoipa::path(tag = "payments", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Holder), Problems))]
#[get("/payments/{id}/holder")]
pub async fn get_payment_holder(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewerOrTerminal>,
    id: web::Path<String>,
) -> Result<web::Json<Holder>, ApiError> {
    let tenant = caller.tenant()?;
    let p = state.store.get_payment(tenant, path_id(&id)?).await?;
    if caller.kind == TokenKind::Terminal && Some(p.terminal_id.0) != caller.subject {
        return Err(ApiError::NotFound);
    }
    let user = p.user_id.ok_or(ApiError::NotFound)?;
    let user = state.store.get_user(tenant, user).await?;
    Ok(web::Json(Holder {
        name: mask_name(&user.name),
    }))
}

/// `张三丰` → `张**`, `Ada Lovelace` → `A** L*******`.
pub fn mask_name(name: &str) -> String {
    name.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => std::iter::once(first)
                    .chain(chars.map(|_| '*'))
                    .collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::mask_name;

    #[test]
    fn names_keep_only_the_first_letter_of_each_word() {
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("Ada Lovelace"), "A** L*******");
        assert_eq!(mask_name("X"), "X");
        assert_eq!(mask_name(""), "");
    }
}
