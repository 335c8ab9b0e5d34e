//! Top-ups from a file (docs/OPERATIONS.md "Top-ups from a file"): the finance office
//! credits what the bank received for each cardholder (parents' transfers, a payroll
//! deduction) in one upload. The file is checked whole before anything moves; each row
//! then goes through its cardholder's wallet actor under a key made from the upload's, so
//! an upload cut short is sent again with the same key and credits no row twice. A row may
//! carry the bank's reference for its transfer: a reference is credited once in the
//! tenant, so a bank file uploaded again (or a month's file that repeats last week's
//! lines) credits only the transfers not credited before.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::validate::Checks;
use onecard_actors::wallet::{Op, WalletError};
use onecard_actors::wire::TopUpReversalView;
use onecard_schema::ids::{TenantId, UserId};
use onecard_schema::money::{Money, MONEY_JSON_MAX};
use onecard_schema::wallet::{RegisterKind, RegisterLine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::checked;
use super::money::{batch_calls, idem, item_idem, wallet_call};
use super::register::{register_export, register_page, RegisterExportParams, RegisterParams};
use super::Paged;
use crate::auth::{Auth, PaymentsManager, PaymentsViewer};
use crate::extract::{path_id, read_file, required_idempotency_key, HashedJson, Query};
use crate::import::{self, Row, XLSX_MIME};
use crate::limits::IMPORT_BYTES_MAX;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// Rows one top-up file carries at most.
pub const TOPUP_ROWS_MAX: usize = 10_000;

/// The file: a header row naming the columns `number` and `amount_fen`, and optionally
/// `reference` (in any order, other columns ignored), then a row a top-up.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TopUpFile {
    /// CSV (UTF-8) or XLSX, as the request's body.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// One row of a top-up file, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct TopUpRow {
    /// The spreadsheet's row (1-based, as it shows it).
    pub row: u32,
    pub number: String,
    pub amount: i64,
    pub reference: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToppedUp {
    pub row: u32,
    pub number: String,
    pub user_id: UserId,
    /// Fen credited to the cash balance.
    pub amount: i64,
    pub reference: Option<String>,
}

/// A row whose reference was credited before this request, to the same person with the
/// same amount: not credited again.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlreadyCredited {
    pub row: u32,
    pub number: String,
    pub user_id: UserId,
    pub amount: i64,
    pub reference: String,
    /// The top-up that credited it, in the top-up register.
    pub topup_id: Uuid,
    pub at: Timestamp,
}

impl AlreadyCredited {
    /// Whether the register's `line` is the row's transfer: the same person (`user`,
    /// the row number's) and the same amount.
    fn is_same(row: &TopUpRow, user: UserId, line: &RegisterLine) -> bool {
        line.user_id == user && line.amount.0 == row.amount
    }

    fn of(row: &TopUpRow, line: &RegisterLine) -> Self {
        AlreadyCredited {
            row: row.row,
            number: row.number.clone(),
            user_id: line.user_id,
            amount: row.amount,
            reference: line.reference.clone().unwrap_or_default(),
            topup_id: line.id,
            at: line.at,
        }
    }
}

/// The tenant's standing top-ups that carry one of `references`, by reference.
async fn standing_by_reference(
    state: &AppState,
    tenant: TenantId,
    references: Vec<String>,
) -> Result<HashMap<String, RegisterLine>, ApiError> {
    if references.is_empty() {
        return Ok(HashMap::new());
    }
    let lines = state.store.topups_by_reference(tenant, references).await?;
    Ok(lines
        .into_iter()
        .filter_map(|l| Some((l.reference.clone()?, l)))
        .collect())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpBatchResult {
    pub rows: u64,
    /// Fen credited by this request.
    pub total: i64,
    /// Each row credited by this request, in the file's order.
    pub topped_up: Vec<ToppedUp>,
    /// Each row whose reference had been credited before (an earlier upload of the same
    /// transfers, or this upload's own first attempt, cut short) or was credited by
    /// another upload of it at the same moment, in the file's order.
    pub already_credited: Vec<AlreadyCredited>,
}

/// The rows of a top-up file, or every reason it is refused: a missing column, too many
/// rows, a row without a number or with an amount that is not a whole number of fen from
/// 1 up, a reference longer than 64 characters or given in two rows.
pub fn parse_topups(rows: Vec<Row>) -> Result<Vec<TopUpRow>, ApiError> {
    let mut c = Checks::new();
    let mut rows = rows.into_iter();
    let Some((_, header)) = rows.next() else {
        c.fail("file", "empty", "the file has no header row");
        return Err(ApiError::invalid(c.violations));
    };
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(number_at), Some(amount_at)) = (column("number"), column("amount_fen")) else {
        c.at_row(Some(1));
        c.fail(
            "header",
            "column_missing",
            "the header row names the columns number and amount_fen",
        );
        return Err(ApiError::invalid(c.violations));
    };
    let reference_at = column("reference");
    let rows: Vec<Row> = rows.collect();
    if rows.len() > TOPUP_ROWS_MAX {
        return Err(ApiError::Invalid {
            code: "too_many_rows",
            detail: format!("at most {TOPUP_ROWS_MAX} rows a file"),
            errors: Vec::new(),
        });
    }
    let mut out = Vec::with_capacity(rows.len());
    // Each reference's first row.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (row, cells) in rows {
        c.at_row(Some(row));
        let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
        let number = cell(number_at);
        let reference = reference_at.map(cell).filter(|r| !r.is_empty());
        if let Some(r) = reference {
            if r.chars().count() > 64 {
                c.fail(
                    "reference",
                    "max_length",
                    "a reference has at most 64 characters",
                );
            } else if let Some(first) = seen.insert(r.to_string(), row) {
                let message = format!("the reference {r} is also in row {first}");
                c.fail("reference", "unique", message);
            }
        }
        if number.is_empty() || number.chars().count() > 64 {
            c.fail(
                "number",
                "required",
                "a cardholder's number, 1 to 64 characters",
            );
        }
        match cell(amount_at).parse::<i64>() {
            Ok(amount) if (1..=MONEY_JSON_MAX).contains(&amount) => out.push(TopUpRow {
                row,
                number: number.to_string(),
                amount,
                reference: reference.map(str::to_string),
            }),
            _ => c.fail(
                "amount_fen",
                "range",
                format!("a whole number of fen, 1 to {MONEY_JSON_MAX}"),
            ),
        }
    }
    checked(c)?;
    Ok(out)
}

/// Credit the cash balances a file lists (Idempotency-Key required; the file as the
/// body, `text/csv` or the XLSX type, so that a retry sends the same bytes). Its header
/// row names `number` and `amount_fen`, and optionally `reference`: the bank's reference
/// for each transfer. The whole file is checked first: a bad row, a number no active
/// cardholder has, or a reference credited before to someone else or with another amount,
/// refuses it whole (422, every reason with its row). A row whose reference was credited
/// before, to the same person with the same amount, is not credited again: the answer
/// lists it under `already_credited`.
/// Each row is then its own top-up through the cardholder's wallet actor, under a key
/// made from the upload's and the row's: an upload cut short (a 503, a lost answer) is
/// sent again with its key, and rows already credited are answered as they were.
#[utoipa::path(tag = "wallets", params(("Idempotency-Key" = String, Header)),
    request_body(content = TopUpFile, content_type = "text/csv"),
    security(("bearer" = [])), responses((status = 200, body = TopUpBatchResult), Problems))]
#[post("/wallets/topups")]
pub async fn create_topups(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<TopUpBatchResult>, ApiError> {
    let key = required_idempotency_key(&req)?;
    let tenant = caller.tenant()?;
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("multipart/") {
        // A multipart body's boundary differs at every sending: a retry's key would not
        // match it.
        return Err(ApiError::UnsupportedMedia {
            detail: "send the file itself as the body, as text/csv or XLSX".into(),
        });
    }
    let bytes = read_file(
        &req,
        payload,
        IMPORT_BYTES_MAX,
        &["text/csv", XLSX_MIME],
        "the file",
        "text/csv or XLSX",
    )
    .await?;
    let file_hash: [u8; 32] = Sha256::digest(&bytes).into();
    let upload_bytes = bytes.len();
    let rows = web::block(move || import::read_rows(&bytes).and_then(parse_topups))
        .await
        .map_err(ApiError::internal)??;
    let numbers: Vec<String> = rows.iter().map(|r| r.number.clone()).collect();
    let found: HashMap<String, UserId> = state
        .store
        .users_by_number(tenant, numbers)
        .await?
        .into_iter()
        .collect();
    let mut c = Checks::new();
    for r in rows.iter().filter(|r| !found.contains_key(&r.number)) {
        c.at_row(Some(r.row));
        let message = format!("no active cardholder has the number {}", r.number);
        c.fail("number", "unknown", message);
    }
    checked(c)?;
    let references: Vec<String> = rows.iter().filter_map(|r| r.reference.clone()).collect();
    let credited = standing_by_reference(&state, tenant, references).await?;
    let mut result = TopUpBatchResult {
        rows: rows.len() as u64,
        total: 0,
        topped_up: Vec::with_capacity(rows.len()),
        already_credited: Vec::new(),
    };
    let mut fresh = Vec::with_capacity(rows.len());
    let mut c = Checks::new();
    for r in rows {
        let before = r.reference.as_ref().and_then(|x| credited.get(x));
        match before {
            None => fresh.push(r),
            Some(l) if AlreadyCredited::is_same(&r, found[&r.number], l) => {
                result.already_credited.push(AlreadyCredited::of(&r, l));
            }
            Some(l) => {
                c.at_row(Some(r.row));
                let message = format!(
                    "the reference was credited on {} to {} ({} fen), not to this row",
                    l.at, l.number, l.amount.0
                );
                c.fail("reference", "reference_used", message);
            }
        }
    }
    checked(c)?;
    let rows = fresh;
    let policy = state.policy(tenant).await?;
    let credited_by = caller.actor().as_string();
    let calls = rows
        .iter()
        .map(|r| {
            let op = Op::TopUp {
                amount: Money(r.amount),
                reference: r.reference.clone(),
                credited_by: credited_by.clone(),
            };
            let idem = item_idem(
                &caller,
                &key,
                file_hash,
                format_args!("row-{}", r.row),
                &r.row.to_be_bytes(),
            );
            (found[&r.number], op, idem)
        })
        .collect();
    // The answers in the file's order (a person in two rows is credited twice).
    let outcomes = batch_calls(&state, tenant, policy, calls).await;
    let mut failed = None;
    // Rows whose reference another request credited meanwhile (two clerks uploading the
    // same bank file at once): looked at again below.
    let mut raced = Vec::new();
    for (r, outcome) in rows.iter().zip(outcomes) {
        match outcome {
            Ok(_) => {
                result.total += r.amount;
                result.topped_up.push(ToppedUp {
                    row: r.row,
                    number: r.number.clone(),
                    user_id: found[&r.number],
                    amount: r.amount,
                    reference: r.reference.clone(),
                });
            }
            Err(WalletError::Refused(refusal)) if refusal.code == "reference_used" => {
                raced.push((r, WalletError::Refused(refusal)))
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if !raced.is_empty() {
        let references = raced
            .iter()
            .filter_map(|(r, _)| r.reference.clone())
            .collect();
        let now = standing_by_reference(&state, tenant, references).await?;
        for (r, refusal) in raced {
            let line = r.reference.as_ref().and_then(|x| now.get(x));
            match line {
                // The same transfer, to the same person: credited once, by the other.
                Some(l) if AlreadyCredited::is_same(r, found[&r.number], l) => {
                    result.already_credited.push(AlreadyCredited::of(r, l));
                }
                _ => failed = failed.or(Some(refusal)),
            }
        }
        result.already_credited.sort_by_key(|a| a.row);
    }
    // Rows credited stay credited; the upload sent again with its key finishes the rest.
    if let Some(e) = failed {
        return Err(e.into());
    }
    let audit = caller.audit(
        &state,
        "wallet.topup_batch",
        "tenant",
        tenant,
        serde_json::json!({
            "rows": result.rows, "total": result.total, "bytes": upload_bytes,
            "already_credited": result.already_credited.len(),
        }),
    );
    state.record_audit(audit).await;
    Ok(web::Json(result))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReversal {
    /// Why it is taken back (the wrong person, a transfer credited twice), 1–200
    /// characters: kept on the top-up's line and in the audit log.
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
}

/// Take back a top-up credited in error (Idempotency-Key required): the wrong person, or
/// one transfer credited twice under two references. The cash it credited leaves the
/// balance again (409 `insufficient_balance` if the balance no longer holds it: what was
/// spent is not taken back), the top-up's line records the reversal, and its reference
/// is free again, to be credited to the right person. Once only (409
/// `already_reversed`). On the statement it is a `top_up_reversal` line.
#[utoipa::path(tag = "wallets", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = NewReversal, security(("bearer" = [])),
    responses((status = 201, body = TopUpReversalView), Problems))]
#[post("/wallets/topups/{id}/reversal")]
pub async fn reverse_topup(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    req: HttpRequest,
    id: web::Path<String>,
    HashedJson(body, hash): HashedJson<NewReversal>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let tenant = caller.tenant()?;
    let id: Uuid = path_id(&id)?;
    let mut c = Checks::new();
    c.text("reason", &body.reason, 1, 200);
    checked(c)?;
    let topup = state.store.get_topup(tenant, id).await?;
    let user = topup.user_id;
    let op = Op::ReverseTopUp {
        topup: Box::new(topup),
        by: caller.actor().as_string(),
        reason: body.reason.clone(),
    };
    let idem = Some(idem(&caller, key, hash));
    let res = wallet_call(&state, tenant, user, op, idem, StatusCode::CREATED).await?;
    let audit = caller.audit(
        &state,
        "wallet.topup_reverse",
        "user",
        user,
        serde_json::json!({ "topup_id": id, "reason": body.reason }),
    );
    state.record_audit(audit).await;
    Ok(res)
}

/// A top-up in the register.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpLine {
    /// Its id (UUIDv7), also its ledger transaction's: the register is in its order.
    pub id: Uuid,
    pub user_id: UserId,
    /// The person's name and number now.
    pub name: String,
    pub number: String,
    /// Fen credited.
    pub amount: i64,
    /// The bank's reference, as given.
    pub reference: Option<String>,
    /// Who credited it (`admin:<id>`, `app:<id>`, ...); null for a top-up made before
    /// the register.
    pub credited_by: Option<String>,
    pub at: Timestamp,
    /// Once it was taken back (`POST /wallets/topups/{id}/reversal`): when, by whom, why,
    /// and the reversal's ledger transaction. A reversed top-up's reference may be
    /// credited again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversal: Option<ReversalView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReversalView {
    pub id: Uuid,
    pub at: Timestamp,
    pub by: String,
    pub reason: String,
}

impl From<RegisterLine> for TopUpLine {
    fn from(l: RegisterLine) -> Self {
        TopUpLine {
            id: l.id,
            user_id: l.user_id,
            name: l.name,
            number: l.number,
            amount: l.amount.0,
            reference: l.reference,
            credited_by: l.by,
            at: l.at,
            reversal: l.reversal.map(|r| ReversalView {
                id: r.id,
                at: r.at,
                by: r.by,
                reason: r.reason,
            }),
        }
    }
}

/// The top-up register, oldest first, by person, time and reference: was this transfer
/// credited, and to whom? (Admins who may read payments.)
#[utoipa::path(tag = "wallets", params(RegisterParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<TopUpLine>), Problems))]
#[get("/wallets/topups")]
pub async fn list_topups(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<RegisterParams>,
) -> Result<web::Json<Paged<TopUpLine>>, ApiError> {
    let kind = RegisterKind::TopUp;
    let page = register_page(&state, caller.tenant()?, kind, params, TopUpLine::from);
    Ok(web::Json(page.await?))
}

/// The top-up register of a window of at most 31 days as CSV or XLSX, times in the
/// tenant's zone: what the office reconciles the bank's statement with. 422
/// `too_many_rows` past 200,000 top-ups: narrow it.
#[utoipa::path(tag = "wallets", params(RegisterExportParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/wallets/topups/export")]
pub async fn export_topups(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<RegisterExportParams>,
) -> Result<HttpResponse, ApiError> {
    register_export(&state, caller.tenant()?, RegisterKind::TopUp, params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: &[&[&str]]) -> Vec<Row> {
        lines
            .iter()
            .enumerate()
            .map(|(i, cells)| (i as u32 + 1, cells.iter().map(|c| c.to_string()).collect()))
            .collect()
    }

    fn rules(e: ApiError) -> Vec<(Option<u32>, String, String)> {
        match e {
            ApiError::Invalid { errors, .. } => errors
                .into_iter()
                .map(|v| (v.row, v.field, v.rule))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_is_read_by_its_header_in_any_column_order() {
        let parsed = parse_topups(rows(&[
            &["Amount_Fen", "name", " number "],
            &["1500", "Li Lei", "S-1"],
            &["20", "", "S-2 "],
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            [
                TopUpRow {
                    row: 2,
                    number: "S-1".into(),
                    amount: 1500,
                    reference: None,
                },
                TopUpRow {
                    row: 3,
                    number: "S-2".into(),
                    amount: 20,
                    reference: None,
                },
            ]
        );
    }

    #[test]
    fn every_bad_row_is_named_and_nothing_is_kept() {
        let e = parse_topups(rows(&[
            &["number", "amount_fen"],
            &["S-1", "0"],
            &["", "100"],
            &["S-3", "12.50"],
            &["S-4", "-5"],
            &["S-5", "100"],
        ]))
        .unwrap_err();
        assert_eq!(
            rules(e),
            [
                (Some(2), "amount_fen".into(), "range".into()),
                (Some(3), "number".into(), "required".into()),
                (Some(4), "amount_fen".into(), "range".into()),
                (Some(5), "amount_fen".into(), "range".into()),
            ]
        );
    }

    #[test]
    fn references_are_kept_and_one_given_twice_or_too_long_is_named() {
        let parsed = parse_topups(rows(&[
            &["number", "amount_fen", "Reference"],
            &["S-1", "100", " TX-1 "],
            &["S-2", "200", ""],
        ]))
        .unwrap();
        let refs: Vec<_> = parsed.iter().map(|r| r.reference.as_deref()).collect();
        assert_eq!(refs, [Some("TX-1"), None]);
        let long = "X".repeat(65);
        let e = parse_topups(rows(&[
            &["number", "amount_fen", "reference"],
            &["S-1", "100", "TX-1"],
            &["S-2", "200", "TX-2"],
            &["S-3", "300", "TX-1"],
            &["S-4", "400", &long],
        ]))
        .unwrap_err();
        assert_eq!(
            rules(e),
            [
                (Some(4), "reference".into(), "unique".into()),
                (Some(5), "reference".into(), "max_length".into()),
            ]
        );
    }

    #[test]
    fn a_file_without_its_columns_or_with_too_many_rows_is_refused() {
        let e = parse_topups(rows(&[&["number", "amount"], &["S-1", "100"]])).unwrap_err();
        assert_eq!(
            rules(e),
            [(Some(1), "header".into(), "column_missing".into())]
        );
        assert!(parse_topups(Vec::new()).is_err());
        let mut many = vec![(1, vec!["number".to_string(), "amount_fen".to_string()])];
        many.extend(
            (0..=TOPUP_ROWS_MAX as u32).map(|i| (i + 2, vec![format!("S-{i}"), "1".into()])),
        );
        match parse_topups(many) {
            Err(ApiError::Invalid { code, .. }) => assert_eq!(code, "too_many_rows"),
            other => panic!("{other:?}"),
        }
    }
}
