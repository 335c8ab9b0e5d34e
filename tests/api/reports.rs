//! The financial reports (SPEC §9) end to end: two days of top-ups, a subsidy rule,
//! payments at three merchants of a tree, a refund, a deferred debit the provider declines
//! and its repayment; then each report, in JSON, CSV and XLSX, against what happened, and
//! the five against one another.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use jiff::{SignedDuration, ToSpan};
use onecard_actors::clock::Clock;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{
    approved_rule, code, keyed, ledger_balances, pay, person, set_sandbox, top_up, Shop,
};
use crate::on_both_engines;

on_both_engines!(the_five_reports_tell_what_happened_and_agree_with_one_another);

/// PostgreSQL: a writing transaction held open (a lock taken by hand, a stuck commit) keeps
/// the report roll-ups five minutes behind the moment it began, so that what it writes,
/// dated when its payments were decided, is not left out of a rolled-up quarter hour.
#[actix_web::test]
async fn a_writing_transaction_held_open_keeps_the_report_roll_ups_behind_it() {
    let Some(app) = spawn_app(Engine::Postgres).await else {
        return;
    };
    let _ = app.tenant("university", "standard").await;
    // To a minute past a quarter hour, an hour or more after the tenant began.
    let b = onecard_schema::wallet::REPORT_BUCKET_MS;
    let now = app.clock.now().as_millisecond();
    let target = (now / b + 5) * b + 60_000;
    app.clock.advance(SignedDuration::from_millis(target - now));
    let url = app.database_url.clone().expect("a PostgreSQL test");
    let (held, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    held.batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    let roll = || {
        app.state
            .store
            .roll_up_reports(app.clock.now(), SignedDuration::ZERO, 1_000)
    };
    assert!(roll().await.unwrap() >= 4);
    assert_eq!(
        roll().await.unwrap(),
        0,
        "held back by the open transaction"
    );
    held.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        roll().await.unwrap(),
        1,
        "the quarter hour that began four minutes before it, once it is gone"
    );
}

const KINDS: [&str; 5] = [
    "income-summary",
    "merchant-clearing",
    "merchant-summary",
    "merchant-split",
    "merchant-receipts",
];

pub(crate) async fn merchant(app: &TestApp, admin: &str, body: Value) -> String {
    let (s, m) = app.post("/api/v1/merchants", admin, body).await;
    assert_eq!(s, 201, "{m}");
    m["id"].as_str().unwrap().to_string()
}

pub(crate) async fn till(
    app: &TestApp,
    admin: &str,
    merchant: &str,
    name: &str,
) -> (String, String) {
    let (s, t) = app
        .post(
            &format!("/api/v1/merchants/{merchant}/terminals"),
            admin,
            json!({ "name": name }),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    (
        t["id"].as_str().unwrap().into(),
        t["token"].as_str().unwrap().into(),
    )
}

pub(crate) async fn report(app: &TestApp, admin: &str, kind: &str, from: &str, to: &str) -> Value {
    let (s, r) = app
        .get(
            &format!("/api/v1/reports/{kind}?from={from}&to={to}"),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["report"].as_str(), r["unit"].as_str()),
        (Some(kind), Some("fen"))
    );
    r
}

pub(crate) async fn download(app: &TestApp, admin: &str, path: &str) -> (String, Vec<u8>) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let kind = res.headers()["content-type"].to_str().unwrap().to_string();
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"onecard-"),
        "{disposition}"
    );
    (kind, res.bytes().await.unwrap().to_vec())
}

/// `(number, field)` of each row of a per-merchant report.
pub(crate) fn by_merchant(r: &Value, field: &str) -> Vec<(String, i64)> {
    r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["merchant_number"].as_str().unwrap().to_string(),
                row[field].as_i64().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(n, x)| (n.to_string(), *x)).collect()
}

/// Moves the clock to the next 09:00 in Shanghai, the tenant's default zone; answers that
/// day and the next, `YYYY-MM-DD`.
pub(crate) fn to_nine(app: &TestApp) -> (String, String) {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let now = app.clock.now().to_zoned(tz.clone());
    let nine = now.date().at(9, 0, 0, 0).to_zoned(tz.clone()).unwrap();
    let nine = if nine.timestamp() > now.timestamp() {
        nine
    } else {
        nine.checked_add(1.day()).unwrap()
    };
    app.clock
        .advance(now.timestamp().duration_until(nine.timestamp()));
    (
        nine.date().to_string(),
        nine.date().tomorrow().unwrap().to_string(),
    )
}

async fn the_five_reports_tell_what_happened_and_agree_with_one_another(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (day1, day2) = to_nine(&app);
    let start = app.clock.now();

    let (_, admin) = app.tenant("university", "standard").await;
    let root = merchant(&app, &admin, json!({"name": "Catering", "number": "C"})).await;
    let site = merchant(
        &app,
        &admin,
        json!({"name": "North", "number": "N", "parent_id": root}),
    )
    .await;
    let stall = merchant(
        &app,
        &admin,
        json!({"name": "Noodles", "number": "N1", "parent_id": site}),
    )
    .await;
    let (till_a, token_a) = till(&app, &admin, &stall, "Till A").await;
    let (till_b, token_b) = till(&app, &admin, &root, "Till B").await;
    let at = |merchant: &str, id: &str, token: &str| Shop {
        admin: admin.clone(),
        merchant: merchant.to_string(),
        terminal: token.to_string(),
        terminal_id: id.to_string(),
    };
    let (stall_shop, root_shop) = (at(&stall, &till_a, &token_a), at(&root, &till_b, &token_b));

    // Day 1: top-ups of 7,000, a subsidy of 300 each (600), four payments.
    let (alice, alice_me) = person(&app, &admin, "A-1").await;
    let (bob, bob_me) = person(&app, &admin, "B-1").await;
    top_up(&app, &root_shop, &alice, 5_000).await;
    top_up(&app, &root_shop, &bob, 2_000).await;
    let rule = json!({"name": "Meal", "amount": 300, "targets": {"user_ids": [alice, bob]}});
    assert_eq!(approved_rule(&app, &admin, rule).await, 2);
    let a1 = pay(&app, &stall_shop, &code(&app, &alice_me).await, 800).await;
    assert_eq!(
        a1["breakdown"],
        json!({"coupon": 0, "subsidy": 300, "balance": 500, "deferred": 0})
    );
    let b1 = pay(&app, &root_shop, &code(&app, &bob_me).await, 400).await;
    assert_eq!(b1["breakdown"]["balance"], 100, "{b1}");
    let (s, r) = keyed(
        &app,
        &format!("/api/v1/payments/{}/refunds", a1["id"].as_str().unwrap()),
        &admin,
        "refund-1",
        json!({"amount": 200}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    // Bob's 2,500 takes his 1,900 and a deferred debit of 600, which the provider declines.
    set_sandbox(&app, &admin, &bob, json!({"available": 0})).await;
    let b2 = pay(&app, &stall_shop, &code(&app, &bob_me).await, 2_500).await;
    assert_eq!(b2["breakdown"]["deferred"], 600, "{b2}");
    let b2_id = b2["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{b2_id}"), &admin, |p| {
        p["status"] == "unsettled"
    })
    .await;

    // Day 2: Bob repays the 600; Alice pays 300 at the root's till.
    app.clock.advance(SignedDuration::from_hours(24));
    let (s, w) = keyed(
        &app,
        "/api/v1/me/arrears/repay",
        &bob_me,
        "repay",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    let a2 = pay(&app, &root_shop, &code(&app, &alice_me).await, 300).await;
    assert_eq!(a2["status"], "succeeded", "{a2}");
    ledger_balances(&app, &admin).await;

    // Income and expense summary, a row a day.
    let income = report(&app, &admin, "income-summary", &day1, &day2).await;
    assert_eq!(income["time_zone"], "Asia/Shanghai");
    let rows = income["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{income}");
    let day = |row: &Value| {
        [
            "receivable",
            "received",
            "refunds",
            "top_ups",
            "subsidies_issued",
            "arrears_opened",
            "arrears_recovered",
            "arrears_written_off",
        ]
        .map(|k| row[k].as_i64().unwrap())
    };
    assert_eq!(rows[0]["date"], day1.as_str());
    assert_eq!(
        day(&rows[0]),
        [3_700, 3_100, 200, 7_000, 600, 600, 0, 0],
        "{income}"
    );
    assert_eq!(rows[1]["date"], day2.as_str());
    assert_eq!(day(&rows[1]), [300, 900, 0, 0, 0, 0, 600, 0], "{income}");
    assert_eq!(
        day(&income["totals"]),
        [4_000, 4_000, 200, 7_000, 600, 600, 600, 0]
    );
    let second = report(&app, &admin, "income-summary", &day2, &day2).await;
    assert_eq!(second["rows"].as_array().unwrap().len(), 1);
    assert_eq!(day(&second["rows"][0]), day(&rows[1]), "a one-day period");

    // Merchant clearing: each merchant's own sales, in tree order.
    let clearing = report(&app, &admin, "merchant-clearing", &day1, &day2).await;
    assert_eq!(
        by_merchant(&clearing, "payments"),
        pairs(&[("C", 2), ("N", 0), ("N1", 2)])
    );
    assert_eq!(
        by_merchant(&clearing, "gross"),
        pairs(&[("C", 700), ("N", 0), ("N1", 3_300)])
    );
    assert_eq!(
        by_merchant(&clearing, "refunds"),
        pairs(&[("C", 0), ("N", 0), ("N1", 200)])
    );
    assert_eq!(
        by_merchant(&clearing, "net"),
        pairs(&[("C", 700), ("N", 0), ("N1", 3_100)])
    );
    assert_eq!(clearing["totals"]["gross"], income["totals"]["receivable"]);
    assert_eq!(clearing["totals"]["refunds"], income["totals"]["refunds"]);
    let day1_only = report(&app, &admin, "merchant-clearing", &day1, &day1).await;
    assert_eq!(
        by_merchant(&day1_only, "gross"),
        pairs(&[("C", 400), ("N", 0), ("N1", 3_300)])
    );

    // Merchant summary: rolled up the tree.
    let summary = report(&app, &admin, "merchant-summary", &day1, &day2).await;
    assert_eq!(
        by_merchant(&summary, "subtree_gross"),
        pairs(&[("C", 4_000), ("N", 3_300), ("N1", 3_300)])
    );
    assert_eq!(
        by_merchant(&summary, "subtree_net"),
        pairs(&[("C", 3_800), ("N", 3_100), ("N1", 3_100)])
    );
    assert_eq!(summary["rows"][2]["parent_number"], "N");
    assert_eq!(summary["totals"]["gross"], 4_000);
    assert!(
        summary["totals"].get("subtree_gross").is_none(),
        "{summary}"
    );

    // Merchant split: how the sales were funded.
    let split = report(&app, &admin, "merchant-split", &day1, &day2).await;
    assert_eq!(
        by_merchant(&split, "subsidy"),
        pairs(&[("C", 300), ("N", 0), ("N1", 300)])
    );
    assert_eq!(
        by_merchant(&split, "balance"),
        pairs(&[("C", 400), ("N", 0), ("N1", 2_400)])
    );
    assert_eq!(
        by_merchant(&split, "deferred"),
        pairs(&[("C", 0), ("N", 0), ("N1", 600)])
    );
    for row in split["rows"].as_array().unwrap() {
        let parts: i64 = ["coupon", "subsidy", "balance", "deferred"]
            .iter()
            .map(|k| row[k].as_i64().unwrap())
            .sum();
        assert_eq!(row["gross"].as_i64(), Some(parts), "{row}");
    }

    // Merchant receipts: by terminal, day and hour.
    let receipts = report(&app, &admin, "merchant-receipts", &day1, &day2).await;
    let lines: Vec<(String, String, String, i64, i64, i64)> = receipts["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["merchant_number"].as_str().unwrap().into(),
                r["terminal_name"].as_str().unwrap().into(),
                r["date"].as_str().unwrap().into(),
                r["hour"].as_i64().unwrap(),
                r["payments"].as_i64().unwrap(),
                r["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    let line =
        |m: &str, t: &str, d: &str, n: i64, a: i64| (m.into(), t.into(), d.to_string(), 9, n, a);
    assert_eq!(
        lines,
        [
            line("C", "Till B", &day1, 1, 400),
            line("C", "Till B", &day2, 1, 300),
            line("N1", "Till A", &day1, 2, 3_300),
        ]
    );
    assert_eq!(receipts["rows"][0]["terminal_id"], till_b.as_str());
    assert_eq!(receipts["totals"]["amount"], income["totals"]["receivable"]);

    // CSV: the JSON's rows, a line each, keyed by the same columns.
    let (mime, csv) = download(
        &app,
        &admin,
        &format!("/api/v1/reports/merchant-clearing?from={day1}&to={day2}&format=csv"),
    )
    .await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let want: Vec<&str> = clearing["rows"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = header.clone();
    sorted.sort();
    assert_eq!(sorted, want, "the JSON's keys");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    for (record, row) in records.iter().zip(clearing["rows"].as_array().unwrap()) {
        for (key, field) in header.iter().zip(record) {
            let json = match &row[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(field, json, "{key}");
        }
    }

    // XLSX: titles, the rows with money in yuan, and a totals line.
    let (mime, xlsx) = download(
        &app,
        &admin,
        &format!("/api/v1/reports/income-summary?from={day1}&to={day2}&format=xlsx"),
    )
    .await;
    assert!(mime.starts_with("application/vnd.openxmlformats"), "{mime}");
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("income-summary").unwrap();
    let cell = |r: u32, c: u32| sheet.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    assert_eq!(cell(2, 1), Data::String("Receivable".into()));
    assert_eq!(cell(3, 0), Data::String(day1.clone()));
    assert_eq!(cell(3, 1), Data::Float(37.0));
    assert_eq!(cell(4, 2), Data::Float(9.0), "received on day 2, in yuan");
    assert_eq!(cell(5, 0), Data::String("Total".into()));
    assert_eq!(cell(5, 4), Data::Float(70.0), "top-ups");

    // Bad requests change nothing and say why.
    for (query, field) in [
        (format!("from={day2}&to={day1}"), "to"),
        ("from=2026-13-01".to_string(), "from"),
        ("from=2024-01-01&to=2025-01-02".to_string(), "to"),
    ] {
        let (s, p) = app
            .get(&format!("/api/v1/reports/income-summary?{query}"), &admin)
            .await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (s, p) = app
        .get("/api/v1/reports/income-summary?format=pdf", &admin)
        .await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = app.get("/api/v1/reports/profit-and-loss", &admin).await;
    assert_problem(s, &p, 404, "not_found");
    let (s, p) = app.get("/api/v1/reports/income-summary", &alice_me).await;
    assert_eq!(s, 403, "{p}");
    let (_, basic) = app.tenant("k12", "basic_edu").await;
    let (s, p) = app.get("/api/v1/reports/income-summary", &basic).await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["capability"], "analytics", "{p}");
    let today = report(&app, &admin, "income-summary", &day2, &day2).await;
    assert_eq!(
        today["rows"], second["rows"],
        "the same figures when asked again"
    );

    // Rolled up: the same five reports from the sums of closed quarter hours, whatever
    // part of the period those hold, and the hour still open read from the payments.
    let five = || async {
        let mut all = Vec::new();
        for kind in KINDS {
            let r = report(&app, &admin, kind, &day1, &day2).await;
            all.push((r["rows"].clone(), r["totals"].clone()));
        }
        all
    };
    let before = five().await;
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let midnight = jiff::civil::Date::strptime("%Y-%m-%d", &day2)
        .unwrap()
        .to_zoned(tz)
        .unwrap();
    let mut added = 0;
    loop {
        let n = app
            .state
            .store
            .roll_up_reports(
                app.clock.now(),
                app.clock.now().duration_since(midnight.timestamp()),
                10,
            )
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        added += n;
    }
    assert_eq!(
        added, 60,
        "from the tenant's first quarter hour (09:00) to midnight"
    );
    assert_eq!(five().await, before, "rolled up to day 2");
    assert_eq!(
        app.state.store.report_rollups_end().await.unwrap(),
        Some(midnight.timestamp()),
        "the least rolled-up tenant ends at midnight (the basic one starts later)"
    );
    app.clock.advance(SignedDuration::from_hours(2));
    // Two at once (two nodes' loops): each quarter hour is added once.
    let (a, b) = futures::join!(
        onecard::api::reports::roll_up(&app.state),
        onecard::api::reports::roll_up(&app.state)
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        40 + 4,
        "midnight to 10:00, and the basic tenant's 09:00 to 10:00"
    );
    assert_eq!(
        onecard::api::reports::roll_up(&app.state).await.unwrap(),
        0,
        "once"
    );
    assert_eq!(five().await, before, "rolled up to an hour ago");
    assert_eq!(
        app.state.store.report_rollups_end().await.unwrap(),
        Some(midnight.timestamp() + SignedDuration::from_hours(10)),
        "both tenants end at 10:00, the lag gauge's figure"
    );
    let metrics = onecard::metrics::install().render();
    assert!(
        metrics.contains("report_rollups_behind_seconds"),
        "a round sets the lag gauge"
    );
    let late = pay(&app, &root_shop, &code(&app, &alice_me).await, 50).await;
    assert_eq!(late["status"], "succeeded", "{late}");
    let after = report(&app, &admin, "income-summary", &day1, &day2).await;
    assert_eq!(
        after["totals"]["receivable"], 4_050,
        "the open hour is read live"
    );

    // The transaction detail: every sale, oldest first, adding up to the reports.
    let late_code = code(&app, &alice_me).await;
    assert_eq!(
        pay(&app, &root_shop, &late_code, 60).await["status"],
        "succeeded"
    );
    let replay = pay(&app, &root_shop, &late_code, 70).await;
    assert_eq!(replay["decline_reason"], "code_reused", "{replay}");
    let window = format!(
        "from={start}&to={}",
        app.clock.now() + SignedDuration::from_secs(1)
    );
    let (mime, csv) = download(&app, &admin, &format!("/api/v1/payments/export?{window}")).await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let mut reader = csv::Reader::from_reader(&csv[..]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let seen: Vec<(&str, &str, &str, i64, i64, &str)> = rows
        .iter()
        .map(|r| {
            (
                &r[1],
                &r[2],
                &r[3],
                r[5].parse().unwrap(),
                r[10].parse().unwrap(),
                &r[11],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Noodles", "Till A", "A-1", 800, 200, "partially_refunded"),
            ("Catering", "Till B", "B-1", 400, 0, "succeeded"),
            ("Noodles", "Till A", "B-1", 2_500, 0, "succeeded"),
            ("Catering", "Till B", "A-1", 300, 0, "succeeded"),
            ("Catering", "Till B", "A-1", 50, 0, "succeeded"),
            ("Catering", "Till B", "A-1", 60, 0, "succeeded"),
        ],
        "the declined attempt is not a sale: {}",
        String::from_utf8_lossy(&csv)
    );
    assert_eq!(
        (&rows[2][8], &rows[2][9]),
        ("1900", "600"),
        "Bob's 2,500: his balance, then the deferred debit"
    );
    let sales: i64 = seen.iter().map(|r| r.3).sum();
    let income = report(&app, &admin, "income-summary", &day1, &day2).await;
    assert_eq!(
        Some(sales),
        income["totals"]["receivable"].as_i64(),
        "{income}"
    );
    // Under North: its stall's sales, as the clearing report counts them.
    let (_, north) = download(
        &app,
        &admin,
        &format!("/api/v1/payments/export?{window}&merchant_id={site}"),
    )
    .await;
    let mut reader = csv::Reader::from_reader(&north[..]);
    let amounts: Vec<i64> = reader
        .records()
        .map(|r| r.unwrap()[5].parse().unwrap())
        .collect();
    assert_eq!(amounts, [800, 2_500]);
    let (_, xlsx) = download(
        &app,
        &admin,
        &format!("/api/v1/payments/export?{window}&format=xlsx"),
    )
    .await;
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("payments").unwrap();
    let cell = |r: u32, c: u32| sheet.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    assert_eq!(cell(3, 5), Data::Float(8.0), "800 fen, in yuan");
    assert_eq!(cell(9, 0), Data::String("6 payments".into()));
    assert_eq!(cell(9, 5), Data::Float(41.1), "the window's sales");
    assert_eq!(cell(9, 10), Data::Float(2.0), "refunded");
    for bad in [
        format!("{window}&merchant_id={}", uuid::Uuid::now_v7()),
        format!(
            "from={start}&to={}",
            start + SignedDuration::from_hours(24 * 32)
        ),
        format!("from={}&to={start}", app.clock.now()),
        format!("{window}&status=declined"),
    ] {
        let (s, p) = app
            .get(&format!("/api/v1/payments/export?{bad}"), &admin)
            .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {p}");
    }
    let (s, _) = app
        .get(&format!("/api/v1/payments/export?{window}"), &alice_me)
        .await;
    assert_eq!(s, 403);
}
