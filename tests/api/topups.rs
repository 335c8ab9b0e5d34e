//! Top-ups from a file: what the bank received, credited row by row through the wallets,
//! refused whole when a row is wrong, and never credited twice when sent again.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{ledger_balances, person, shop};
use crate::on_both_engines;
use crate::reports::report;
use crate::statements::all_lines;

on_both_engines!(a_bank_file_credits_each_row_once_and_a_bad_file_credits_no_one);

/// POSTs `bytes` as the body of `/wallets/topups` with `content_type` and `key`.
async fn send(
    app: &TestApp,
    token: &str,
    key: Option<&str>,
    content_type: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/api/v1/wallets/topups"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn balance(app: &TestApp, admin: &str, user: &str) -> i64 {
    let (s, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), admin)
        .await;
    assert_eq!(s, 200, "{w}");
    w["balance"].as_i64().unwrap()
}

async fn a_bank_file_credits_each_row_once_and_a_bad_file_credits_no_one(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let admin = shop.admin.clone();
    let (s1, me1) = person(&app, &admin, "S-1").await;
    let (s2, _) = person(&app, &admin, "S-2").await;
    let (gone, _) = person(&app, &admin, "S-3").await;
    let (s, u) = app
        .patch(
            &format!("/api/v1/users/{gone}"),
            &admin,
            json!({"status": "left"}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let csv = |text: &str| text.as_bytes().to_vec();

    // A bad file is refused whole, every row named, and nothing moves.
    let bad = csv("number,amount_fen\nS-1,1500\nS-9,10\nS-3,10\nS-2,12.50\n");
    let (s, body) = send(&app, &admin, Some("bad-1"), "text/csv", bad).await;
    assert_problem(s, &body, 422, "invalid");
    let named: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(named, [(5, "amount_fen")], "the rules first: {body}");
    let unknown = csv("number,amount_fen\nS-1,1500\nS-9,10\nS-3,10\n");
    let (s, body) = send(&app, &admin, Some("bad-2"), "text/csv", unknown).await;
    assert_problem(s, &body, 422, "invalid");
    let named: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [(3, "unknown"), (4, "unknown")],
        "no one, and no active cardholder: {body}"
    );
    let (s, body) = send(
        &app,
        &admin,
        Some("bad-3"),
        "text/csv",
        csv("number,amount\nS-1,1\n"),
    )
    .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["rule"], "column_missing", "{body}");
    assert_eq!(balance(&app, &admin, &s1).await, 0, "nothing moved");

    // Who and how: a payments manager, with a key, the file as the body.
    let file = csv("Number,Amount_fen,Name\nS-1,1500,Li Lei\nS-2,20,\nS-1,5,again\n");
    let (s, body) = send(&app, &admin, None, "text/csv", file.clone()).await;
    assert_problem(s, &body, 400, "idempotency_key_required");
    let (s, _) = send(&app, &me1, Some("me"), "text/csv", file.clone()).await;
    assert_eq!(s, 403);
    let (s, body) = send(
        &app,
        &admin,
        Some("multi"),
        "multipart/form-data; boundary=x",
        b"--x--".to_vec(),
    )
    .await;
    assert_eq!(s, 415, "{body}");

    let (s, first) = send(&app, &admin, Some("bank-1"), "text/csv", file.clone()).await;
    assert_eq!(s, 200, "{first}");
    let rows: Vec<(u64, &str, i64)> = first["topped_up"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["row"].as_u64().unwrap(),
                t["number"].as_str().unwrap(),
                t["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(2, "S-1", 1_500), (3, "S-2", 20), (4, "S-1", 5)]);
    assert_eq!(
        (first["rows"].as_u64(), first["total"].as_i64()),
        (Some(3), Some(1_525))
    );
    assert_eq!(first["topped_up"][1]["user_id"], s2.as_str());
    assert_eq!(
        (
            balance(&app, &admin, &s1).await,
            balance(&app, &admin, &s2).await
        ),
        (1_505, 20)
    );

    // The same file again: the same answer, nothing more; another file under its key: 409.
    let (s, again) = send(&app, &admin, Some("bank-1"), "text/csv", file.clone()).await;
    assert_eq!((s, &again), (200, &first));
    let other = csv("number,amount_fen\nS-1,1\n");
    let (s, body) = send(&app, &admin, Some("bank-1"), "text/csv", other).await;
    assert_problem(s, &body, 409, "idempotency_conflict");
    // Cut short (its own record gone, as when a node stops mid-upload): sent again, each
    // row is answered from its own key and none is credited twice.
    let forgotten = app
        .state
        .store
        .purge_idempotency(app.clock_now() + SignedDuration::from_hours(1), 1_000)
        .await
        .unwrap();
    assert!(forgotten >= 1);
    let (s, rerun) = send(&app, &admin, Some("bank-1"), "text/csv", file).await;
    assert_eq!((s, &rerun["total"]), (200, &json!(1_525)), "{rerun}");
    assert_eq!(
        (
            balance(&app, &admin, &s1).await,
            balance(&app, &admin, &s2).await
        ),
        (1_505, 20),
        "credited once"
    );

    // An XLSX, its amounts typed as numbers.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write_string(0, 0, "number").unwrap();
    sheet.write_string(0, 1, "amount_fen").unwrap();
    sheet.write_string(1, 0, "S-2").unwrap();
    sheet.write_number(1, 1, 300.0).unwrap();
    let xlsx = book.save_to_buffer().unwrap();
    let (s, body) = send(
        &app,
        &admin,
        Some("bank-2"),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        xlsx,
    )
    .await;
    assert_eq!((s, &body["total"]), (200, &json!(300)), "{body}");
    assert_eq!(balance(&app, &admin, &s2).await, 320);

    // Each row is a top-up like any other: on the statement, in the income summary.
    let (lines, _) = all_lines(&app, "/api/v1/me/statement", &me1, 50).await;
    let top_ups: Vec<i64> = lines
        .iter()
        .filter(|l| l["kind"] == "top_up")
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    let mut sorted = top_ups.clone();
    sorted.sort();
    assert_eq!(sorted, [5, 1_500], "{lines:#?}");
    let day = app
        .clock_now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    let income = report(&app, &admin, "income-summary", &day, &day).await;
    assert_eq!(income["totals"]["top_ups"], 1_825, "{income}");
    let (_, audit) = app
        .get("/api/v1/audit?action=wallet.topup_batch", &admin)
        .await;
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(3),
        "two files, and the first sent again once its record was gone: {audit}"
    );
    ledger_balances(&app, &admin).await;
}
