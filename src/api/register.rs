//! The two registers of cash that enters or leaves the platform outside a payment
//! (docs/OPERATIONS.md "Withdrawals", "The top-up register"): each line a movement with
//! its person, amount, reference and who made it. Both are read the same way, as pages
//! or as a file of a window; the withdrawal and top-up endpoints name which.

use actix_web::HttpResponse;
use jiff::Timestamp;
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{TenantId, UserId};
use onecard_schema::wallet::{RegisterFilter, RegisterKind, RegisterLine};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::sheet::{check_export_window, ExportWindow, Sheet, SheetFormat, EXPORT_ROWS_MAX};
use super::{pages_up_to, ListParams, Paged};
use crate::problem::ApiError;
use crate::state::AppState;

/// A movement's reference, as the office gives it: 1 to 64 characters.
pub fn check_reference(c: &mut Checks, reference: &Option<String>) {
    if let Some(r) = reference {
        c.text("reference", r, 1, 64);
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RegisterParams {
    pub user_id: Option<UserId>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
    /// Exactly this reference (was this transfer credited, or paid?).
    #[param(min_length = 1, max_length = 64)]
    pub reference: Option<String>,
    /// Top-ups: only those taken back (`true`) or only those that stand (`false`). No
    /// withdrawal is ever reversed.
    pub reversed: Option<bool>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One page of a register, oldest first.
pub async fn register_page<T: ToSchema>(
    state: &AppState,
    tenant: TenantId,
    kind: RegisterKind,
    params: RegisterParams,
    line: fn(RegisterLine) -> T,
) -> Result<Paged<T>, ApiError> {
    let mut c = Checks::new();
    check_reference(&mut c, &params.reference);
    super::checked(c)?;
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(|id| id)?;
    let filter = RegisterFilter {
        user: params.user_id,
        from: params.from,
        to: params.to,
        reference: params.reference,
        reversed: params.reversed,
    };
    let found = state
        .store
        .list_register(tenant, kind, filter, page)
        .await?;
    Ok(Paged::new(
        found.items.into_iter().map(line).collect(),
        found.next,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RegisterExportParams {
    /// At or after this.
    pub from: Timestamp,
    /// Before this; at most 31 days after `from`.
    pub to: Timestamp,
    /// `csv` (default; money in fen) or `xlsx` (money in yuan, with a total).
    pub format: Option<SheetFormat>,
}

/// A register's window of at most 31 days as CSV or XLSX, times in the tenant's zone,
/// with the columns `at, number, name, amount, reference, {by}, {id}, user_id` (`by` and
/// `id` the register's own names for who made the movement and its id), and for top-ups
/// `reversed_at, reversal_reason`. 422 `too_many_rows` past 200,000 lines.
pub async fn register_export(
    state: &AppState,
    tenant: TenantId,
    kind: RegisterKind,
    params: RegisterExportParams,
) -> Result<HttpResponse, ApiError> {
    check_export_window(params.from, params.to)?;
    let filter = RegisterFilter {
        from: Some(params.from),
        to: Some(params.to),
        ..RegisterFilter::default()
    };
    let store = &state.store;
    let found = pages_up_to(EXPORT_ROWS_MAX, |page| {
        store.list_register(tenant, kind, filter.clone(), page)
    })
    .await?;
    let window = ExportWindow {
        from: params.from,
        to: params.to,
        tz: state.policy(tenant).await?.tz,
    };
    let rows = found
        .into_iter()
        .map(|w| {
            let mut row = vec![
                window.at(w.at),
                w.number,
                w.name,
                w.amount.0.to_string(),
                w.reference.unwrap_or_default(),
                w.by.unwrap_or_default(),
                w.id.to_string(),
                w.user_id.to_string(),
            ];
            // A top-up taken back says when and why, whenever that was.
            if kind == RegisterKind::TopUp {
                let (at, reason) = match w.reversal {
                    Some(r) => (window.at(r.at), r.reason),
                    None => Default::default(),
                };
                row.extend([at, reason]);
            }
            row
        })
        .collect();
    let (title, name, noun, columns): (_, _, _, &'static [&'static str]) = match kind {
        RegisterKind::Withdrawal => (
            "Withdrawals",
            "withdrawals",
            "withdrawals",
            WITHDRAWAL_COLUMNS,
        ),
        RegisterKind::TopUp => ("Top-ups", "topups", "top-ups", TOPUP_COLUMNS),
    };
    let sheet = Sheet {
        title: window.title(title),
        name,
        columns,
        money_columns: &[3],
        rows,
        noun,
    };
    sheet
        .download(
            params.format.unwrap_or(SheetFormat::Csv),
            &window.stem(name),
        )
        .await
}

const WITHDRAWAL_COLUMNS: &[&str] = &[
    "at",
    "number",
    "name",
    "amount",
    "reference",
    "paid_by",
    "withdrawal_id",
    "user_id",
];

const TOPUP_COLUMNS: &[&str] = &[
    "at",
    "number",
    "name",
    "amount",
    "reference",
    "credited_by",
    "topup_id",
    "user_id",
    "reversed_at",
    "reversal_reason",
];
