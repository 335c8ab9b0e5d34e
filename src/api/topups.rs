//! Top-ups from a file (docs/OPERATIONS.md "Top-ups from a file"): the finance office
//! credits what the bank received for each cardholder (parents' transfers, a payroll
//! deduction) in one upload. The file is checked whole before anything moves; each row
//! then goes through its cardholder's wallet actor under a key made from the upload's, so
//! an upload cut short is sent again with the same key and credits no row twice.

use std::collections::HashMap;

use actix_web::{post, web, HttpRequest};
use onecard_actors::domain::validate::Checks;
use onecard_actors::wallet::Op;
use onecard_schema::ids::UserId;
use onecard_schema::money::{Money, MONEY_JSON_MAX};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::checked;
use super::money::{batch_calls, item_idem};
use crate::auth::{Auth, PaymentsManager};
use crate::extract::{read_file, required_idempotency_key};
use crate::import::{self, Row, XLSX_MIME};
use crate::limits::IMPORT_BYTES_MAX;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// Rows one top-up file carries at most.
pub const TOPUP_ROWS_MAX: usize = 10_000;

/// The file: a header row naming the columns `number` and `amount_fen` (in any order,
/// other columns ignored), then a row a top-up.
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
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToppedUp {
    pub row: u32,
    pub number: String,
    pub user_id: UserId,
    /// Fen credited to the cash balance.
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpBatchResult {
    pub rows: u64,
    /// Fen credited in all.
    pub total: i64,
    /// Each row, in the file's order.
    pub topped_up: Vec<ToppedUp>,
}

/// The rows of a top-up file, or every reason it is refused: a missing column, too many
/// rows, a row without a number or with an amount that is not a whole number of fen from
/// 1 up.
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
    let rows: Vec<Row> = rows.collect();
    if rows.len() > TOPUP_ROWS_MAX {
        return Err(ApiError::Invalid {
            code: "too_many_rows",
            detail: format!("at most {TOPUP_ROWS_MAX} rows a file"),
            errors: Vec::new(),
        });
    }
    let mut out = Vec::with_capacity(rows.len());
    for (row, cells) in rows {
        c.at_row(Some(row));
        let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
        let number = cell(number_at);
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
/// row names `number` and `amount_fen`. The whole file is checked first: a bad row, or a
/// number no active cardholder has, refuses it whole (422, every reason with its row).
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
    let policy = state.policy(tenant).await?;
    let calls = rows
        .iter()
        .map(|r| {
            let op = Op::TopUp {
                amount: Money(r.amount),
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
    let mut result = TopUpBatchResult {
        rows: rows.len() as u64,
        total: 0,
        topped_up: Vec::with_capacity(rows.len()),
    };
    let mut failed = None;
    for (r, outcome) in rows.iter().zip(outcomes) {
        match outcome {
            Ok(_) => {
                result.total += r.amount;
                result.topped_up.push(ToppedUp {
                    row: r.row,
                    number: r.number.clone(),
                    user_id: found[&r.number],
                    amount: r.amount,
                });
            }
            Err(e) => failed = failed.or(Some(e)),
        }
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
        serde_json::json!({ "rows": result.rows, "total": result.total, "bytes": upload_bytes }),
    );
    state.record_audit(audit).await;
    Ok(web::Json(result))
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
                    amount: 1500
                },
                TopUpRow {
                    row: 3,
                    number: "S-2".into(),
                    amount: 20
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
