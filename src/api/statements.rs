//! Statements: every movement of a cardholder's money, newest first (SPEC §6; docs/
//! OPERATIONS.md "Statements"): payments, refunds, top-ups, subsidies, arrears. The
//! cardholder reads their own; an admin who may read payments reads anyone's.

use std::collections::HashMap;

use actix_web::{get, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::wire::PaymentView;
use onecard_schema::ids::{MerchantId, PaymentId, SubsidyId, TenantId, UserId};
use onecard_schema::model::{PageReq, User};
use onecard_schema::statement::{StatementKind, StatementLine};
use onecard_schema::wallet::{Breakdown, RegisterNote};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::sheet::{check_period, ExportWindow, Sheet, SheetFormat, EXPORT_ROWS_MAX};
use super::{too_many_rows, ListParams, Paged};
use crate::auth::{Auth, Cardholder, PaymentsViewer};
use crate::extract::{path_id, Query};
use crate::limits::LIST_LIMIT_MAX;
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
    /// What the line did to the cash balance, signed fen (0 for arrears, owed beside it,
    /// and for a declined payment). The lines' sum is the balance.
    pub cash: i64,
    /// What it did to the subsidy accounts, signed fen.
    pub subsidy: i64,
    /// `top_up`, `withdrawal` and `top_up_reversal`: the bank's reference the finance
    /// office gave for it (a transfer's serial number), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `top_up_reversal`: the top-up it takes back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topup_id: Option<Uuid>,
}

/// Lines as the API shows them, with their merchants' names, their top-ups' and
/// withdrawals' references, and top-up reversals named as such (the ledger alone reads a
/// reversal as a withdrawal: cash out, no payment).
async fn views(
    state: &AppState,
    tenant: TenantId,
    lines: Vec<StatementLine>,
) -> Result<Vec<StatementLineView>, ApiError> {
    let registered: Vec<Uuid> = lines
        .iter()
        .filter(|l| matches!(l.kind, StatementKind::TopUp | StatementKind::Withdrawal))
        .map(|l| l.id)
        .collect();
    let mut notes: HashMap<Uuid, RegisterNote> = if registered.is_empty() {
        HashMap::new()
    } else {
        let found = state.store.register_notes(tenant, registered).await?;
        found.into_iter().map(|n| (n.id, n)).collect()
    };
    let mut items = Vec::with_capacity(lines.len());
    for l in lines {
        let merchant = match l.merchant_id {
            // The tenant's merchants are cached: a lookup, not a read.
            Some(id) => Some(NamedRef {
                id,
                name: state.merchant_name(tenant, id).await?,
            }),
            None => None,
        };
        let note = notes.remove(&l.id);
        let reverses = note.as_ref().and_then(|n| n.reverses);
        items.push(StatementLineView {
            id: l.id,
            kind: match reverses {
                Some(_) => StatementKind::TopUpReversal,
                None => l.kind,
            },
            at: l.at,
            amount: l.amount.0,
            payment: l.payment.as_ref().map(PaymentView::from),
            payment_id: l.payment_id,
            merchant,
            not_revived: l.returned.map(|_| l.not_revived.0),
            returned: l.returned,
            subsidy_account: l.subsidy_account.map(|(id, name)| NamedRef { id, name }),
            cash: l.cash,
            subsidy: l.subsidy,
            reference: note.and_then(|n| n.reference),
            topup_id: reverses,
        });
    }
    Ok(items)
}

async fn page(
    state: &AppState,
    tenant: TenantId,
    user: UserId,
    params: ListParams,
) -> Result<web::Json<Paged<StatementLineView>>, ApiError> {
    let req = params.page(|id| id)?;
    let page = state.store.statement(tenant, user, req).await?;
    let items = views(state, tenant, page.items).await?;
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

/// The longest window one statement file covers: a year (an academic year, a tax year).
pub const STATEMENT_EXPORT_DAYS_MAX: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatementExportParams {
    /// At or after this.
    pub from: Timestamp,
    /// Before this; at most 366 days after `from`.
    pub to: Timestamp,
    /// `csv` (default; money in fen) or `xlsx` (money in yuan, with totals).
    pub format: Option<SheetFormat>,
}

const STATEMENT_COLUMNS: &[&str] = &[
    "at", "kind", "amount", "cash", "subsidy", "merchant", "detail", "id",
];

/// What a line says beyond its kind and amounts, for a file.
fn detail(view: &StatementLineView) -> String {
    if let Some(p) = &view.payment {
        let status = p.status.as_str();
        return match &p.decline_reason {
            Some(reason) => format!("{status}: {}", reason.as_str()),
            None => format!(
                "{status}; coupon {}, subsidy {}, balance {}, deferred {}",
                p.breakdown.coupon.0,
                p.breakdown.subsidy.0,
                p.breakdown.balance.0,
                p.breakdown.deferred.0
            ),
        };
    }
    if let Some(r) = &view.returned {
        return format!(
            "to coupon {}, subsidy {}, balance {}, deferred {}; not revived {}",
            r.coupon.0,
            r.subsidy.0,
            r.balance.0,
            r.deferred.0,
            view.not_revived.unwrap_or(0)
        );
    }
    if let Some(a) = &view.subsidy_account {
        return a.name.clone();
    }
    match (&view.topup_id, &view.reference) {
        (Some(t), Some(r)) => return format!("reverses top-up {t}, reference {r}"),
        (Some(t), None) => return format!("reverses top-up {t}"),
        (None, Some(r)) => return format!("reference {r}"),
        (None, None) => {}
    }
    view.payment_id
        .map(|p| format!("payment {p}"))
        .unwrap_or_default()
}

/// A statement's window as a file, oldest first, times in the tenant's zone.
async fn export(
    state: &AppState,
    tenant: TenantId,
    user: &User,
    params: StatementExportParams,
) -> Result<HttpResponse, ApiError> {
    check_period(params.from, params.to, STATEMENT_EXPORT_DAYS_MAX)?;
    let (from, to) = (params.from, params.to);
    // Newest first, page by page, until a page reaches back past `from`.
    let mut lines = Vec::new();
    let mut after = None;
    loop {
        let page = PageReq {
            limit: LIST_LIMIT_MAX,
            after,
        };
        let page = state.store.statement(tenant, user.id, page).await?;
        let past = page.items.last().is_some_and(|l| l.at < from);
        lines.extend(page.items.into_iter().filter(|l| from <= l.at && l.at < to));
        if lines.len() > EXPORT_ROWS_MAX {
            return Err(too_many_rows(EXPORT_ROWS_MAX));
        }
        match page.next {
            Some(next) if !past => after = Some(next),
            _ => break,
        }
    }
    lines.reverse();
    let window = ExportWindow {
        from,
        to,
        tz: state.policy(tenant).await?.tz,
    };
    let rows = views(state, tenant, lines)
        .await?
        .iter()
        .map(|v| {
            let kind = serde_json::to_value(v.kind).unwrap_or_default();
            vec![
                window.at(v.at),
                kind.as_str().unwrap_or_default().to_string(),
                v.amount.to_string(),
                v.cash.to_string(),
                v.subsidy.to_string(),
                v.merchant
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                detail(v),
                v.id.to_string(),
            ]
        })
        .collect();
    let sheet = Sheet {
        title: window.title(&format!("Statement of {} ({}),", user.name, user.number)),
        name: "statement",
        columns: STATEMENT_COLUMNS,
        money_columns: &[3, 4],
        rows,
        noun: "lines",
    };
    // The number in the file's name as letters, digits, `-` and `_` alone (a header's
    // quoted string).
    let number: String = user
        .number
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let stem = window.stem(&format!("statement-{number}"));
    sheet
        .download(params.format.unwrap_or(SheetFormat::Csv), &stem)
        .await
}

/// The caller's own statement over a window of at most 366 days, as CSV or XLSX, oldest
/// first: `cash` and `subsidy` say what each line did to the balance and the subsidy
/// accounts.
#[utoipa::path(tag = "me", params(StatementExportParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/me/statement/export")]
pub async fn export_my_statement(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<StatementExportParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let user = state
        .store
        .get_user(tenant, UserId(caller.subject()?))
        .await?;
    export(&state, tenant, &user, params).await
}

/// A cardholder's statement as a file (admins who may read payments), as the cardholder
/// downloads their own: for the card office's counter, or a person who asks by letter.
#[utoipa::path(tag = "wallets", params(("id" = String, Path), StatementExportParams),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/users/{id}/statement/export")]
pub async fn export_statement(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
    Query(params): Query<StatementExportParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let user = state.store.get_user(tenant, path_id(&id)?).await?;
    export(&state, tenant, &user, params).await
}
