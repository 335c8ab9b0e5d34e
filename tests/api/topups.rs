//! Top-ups from a file: what the bank received, credited row by row through the wallets,
//! refused whole when a row is wrong, and never credited twice when sent again.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{code, keyed, ledger_balances, pay, person, shop};
use crate::on_both_engines;
use crate::reports::{download, report};
use crate::statements::all_lines;

on_both_engines!(
    a_bank_file_credits_each_row_once_and_a_bad_file_credits_no_one,
    a_bank_reference_is_credited_once_and_the_register_shows_it,
    a_top_up_credited_to_the_wrong_person_is_reversed_and_its_reference_credited_again,
    two_uploads_of_one_bank_file_at_once_credit_each_transfer_once
);

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

/// `(row, errors[].{key})` of each reason a refused file names.
fn named_rows<'a>(body: &'a Value, key: &str) -> Vec<(u64, &'a str)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e[key].as_str().unwrap()))
        .collect()
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
    let named = named_rows(&body, "field");
    assert_eq!(named, [(5, "amount_fen")], "the rules first: {body}");
    let unknown = csv("number,amount_fen\nS-1,1500\nS-9,10\nS-3,10\n");
    let (s, body) = send(&app, &admin, Some("bad-2"), "text/csv", unknown).await;
    assert_problem(s, &body, 422, "invalid");
    let named = named_rows(&body, "rule");
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

/// `(row, number, amount, reference)` of each row of a file's answer under `list`.
fn answered(body: &Value, list: &str) -> Vec<(u64, String, i64, Value)> {
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|t| {
            (
                t["row"].as_u64().unwrap(),
                t["number"].as_str().unwrap().to_string(),
                t["amount"].as_i64().unwrap(),
                t["reference"].clone(),
            )
        })
        .collect()
}

async fn a_bank_reference_is_credited_once_and_the_register_shows_it(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let admin = shop.admin.clone();
    let (s1, me1) = person(&app, &admin, "S-1").await;
    let (s2, _) = person(&app, &admin, "S-2").await;
    let csv = |text: &str| text.as_bytes().to_vec();
    let top_up = |user: &str, key: &str, body: Value| {
        let path = format!("/api/v1/users/{user}/wallet/topups");
        let (app, admin, key) = (&app, admin.clone(), key.to_string());
        async move { keyed(app, &path, &admin, &key, body).await }
    };

    // One top-up with the bank's reference; its retry is the same answer.
    let (s, first) = top_up(&s1, "k-1", json!({"amount": 500, "reference": "TX-100"})).await;
    assert_eq!(s, 201, "{first}");
    let (s, again) = top_up(&s1, "k-1", json!({"amount": 500, "reference": "TX-100"})).await;
    assert_eq!((s, &again), (200, &first));
    // The same transfer under another key, to anyone, is refused and moves nothing.
    for (user, key) in [(&s2, "k-2"), (&s1, "k-3")] {
        let (s, body) = top_up(user, key, json!({"amount": 500, "reference": "TX-100"})).await;
        assert_problem(s, &body, 409, "reference_used");
        assert!(
            body["detail"].as_str().unwrap().contains("TX-100"),
            "{body}"
        );
    }
    for bad in [json!(""), json!("X".repeat(65)), json!(7)] {
        let (s, body) = top_up(&s2, "k-4", json!({"amount": 5, "reference": bad})).await;
        assert!(s == 422 || s == 400, "{bad}: {s} {body}");
    }
    assert_eq!(
        (
            balance(&app, &admin, &s1).await,
            balance(&app, &admin, &s2).await
        ),
        (500, 0)
    );

    // Eight requests race with one reference, under their own keys, for two people: the
    // store credits it once.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let who = if i % 2 == 0 { s1.clone() } else { s2.clone() };
            let body = json!({"amount": 7, "reference": "TX-RACE"});
            let key = format!("race-{i}");
            let call = top_up(&who, &key, body);
            async move { call.await.0 }
        })
        .collect();
    let mut statuses = futures_util::future::join_all(racers).await;
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);

    // A bank file: a row already credited (same person, same amount) is not credited
    // again; the others are.
    let file = csv("number,amount_fen,reference\nS-1,500,TX-100\nS-2,300,TX-101\nS-1,50,\n");
    let (s, body) = send(&app, &admin, Some("file-1"), "text/csv", file).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        answered(&body, "topped_up"),
        [
            (3, "S-2".into(), 300, json!("TX-101")),
            (4, "S-1".into(), 50, Value::Null)
        ]
    );
    assert_eq!(
        answered(&body, "already_credited"),
        [(2, "S-1".into(), 500, json!("TX-100"))]
    );
    assert_eq!(
        (body["rows"].as_u64(), body["total"].as_i64()),
        (Some(3), Some(350))
    );

    // A reference credited to someone else, or with another amount, refuses the file;
    // so does a reference in two rows.
    let wrong = csv("number,amount_fen,reference\nS-2,9,NEW-1\nS-1,300,TX-101\nS-1,501,TX-100\n");
    let (s, body) = send(&app, &admin, Some("file-2"), "text/csv", wrong).await;
    assert_problem(s, &body, 422, "invalid");
    let named = named_rows(&body, "rule");
    assert_eq!(
        named,
        [(3, "reference_used"), (4, "reference_used")],
        "{body}"
    );
    let twice = csv("number,amount_fen,reference\nS-2,9,NEW-1\nS-1,9,NEW-1\n");
    let (s, body) = send(&app, &admin, Some("file-3"), "text/csv", twice).await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["rule"], "unique", "{body}");

    // The month's file so far, uploaded again with a new line: only the new line moves.
    let month = csv("reference,number,amount_fen\nTX-100,S-1,500\nTX-101,S-2,300\nTX-102,S-2,40\n");
    let (s, body) = send(&app, &admin, Some("file-4"), "text/csv", month).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        answered(&body, "topped_up"),
        [(4, "S-2".into(), 40, json!("TX-102"))]
    );
    let before: Vec<u64> = answered(&body, "already_credited")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(before, [2, 3]);
    let race_winner = if balance(&app, &admin, &s1).await == 557 {
        7
    } else {
        0
    };
    assert_eq!(
        (
            balance(&app, &admin, &s1).await,
            balance(&app, &admin, &s2).await
        ),
        (550 + race_winner, 340 + 7 - race_winner),
        "each transfer credited once"
    );

    // The register: every top-up, oldest first, with its reference and who credited it.
    let (s, reg) = app.get("/api/v1/wallets/topups?limit=2", &admin).await;
    assert_eq!(s, 200, "{reg}");
    let mut lines: Vec<Value> = reg["items"].as_array().unwrap().clone();
    let mut cursor = reg["next_cursor"].clone();
    while let Some(c) = cursor.as_str() {
        let (s, page) = app
            .get(
                &format!("/api/v1/wallets/topups?limit=2&cursor={c}"),
                &admin,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        lines.extend(page["items"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].clone();
    }
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    // A file's rows are credited side by side: its two lines in either order.
    let mut seen: Vec<(&str, i64, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["number"].as_str().unwrap(),
                l["amount"].as_i64().unwrap(),
                l["reference"].clone(),
            )
        })
        .collect();
    seen[2..4].sort_by_key(|l| l.1);
    let racer = if race_winner == 7 { "S-1" } else { "S-2" };
    assert_eq!(
        seen,
        [
            ("S-1", 500, json!("TX-100")),
            (racer, 7, json!("TX-RACE")),
            ("S-1", 50, Value::Null),
            ("S-2", 300, json!("TX-101")),
            ("S-2", 40, json!("TX-102")),
        ]
    );
    assert!(lines.iter().all(|l| l["credited_by"]
        .as_str()
        .is_some_and(|b| b.starts_with("admin:"))));
    let (s, one) = app
        .get("/api/v1/wallets/topups?reference=TX-101", &admin)
        .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["items"][0]["user_id"], s2.as_str());
    let (_, mine) = app
        .get(&format!("/api/v1/wallets/topups?user_id={s1}"), &admin)
        .await;
    let amounts: Vec<i64> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts.iter().sum::<i64>(), 550 + race_winner, "{mine}");
    let (s, _) = app.get("/api/v1/wallets/topups", &me1).await;
    assert_eq!(s, 403, "a cardholder does not read the register");
    let long = "X".repeat(65);
    for bad in [
        format!("reference={long}"),
        "color=red".into(),
        "user_id=x".into(),
    ] {
        let (s, body) = app
            .get(&format!("/api/v1/wallets/topups?{bad}"), &admin)
            .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {body}");
    }
    // Another tenant's register is its own.
    let elsewhere = shop_elsewhere(&app).await;
    let (_, theirs) = app.get("/api/v1/wallets/topups", &elsewhere).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");

    // As a file: CSV in fen, XLSX in yuan with a total.
    let from = app.clock_now() - SignedDuration::from_hours(1);
    let window = format!(
        "from={from}&to={}",
        app.clock_now() + SignedDuration::from_secs(1)
    );
    let (mime, csv_file) = download(
        &app,
        &admin,
        &format!("/api/v1/wallets/topups/export?{window}"),
    )
    .await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let text = String::from_utf8(csv_file).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "at,number,name,amount,reference,credited_by,topup_id,user_id,reversed_at,reversal_reason"
    );
    assert_eq!(rows.len(), 6, "{text}");
    assert!(
        rows.iter()
            .any(|r| r.contains(",S-2,User S-2,300,TX-101,admin:")),
        "{text}"
    );
    let (_, xlsx) = download(
        &app,
        &admin,
        &format!("/api/v1/wallets/topups/export?{window}&format=xlsx"),
    )
    .await;
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(xlsx)).unwrap();
    use calamine::Reader;
    let sheet = book.worksheet_range("topups").unwrap();
    let cell = |r: u32, c: u32| {
        sheet
            .get_value((r, c))
            .cloned()
            .unwrap_or(calamine::Data::Empty)
    };
    assert_eq!(cell(8, 0), calamine::Data::String("5 top-ups".into()));
    assert_eq!(
        cell(8, 3),
        calamine::Data::Float(8.97),
        "the total, in yuan"
    );
    let (s, body) = app
        .get(
            &format!(
                "/api/v1/wallets/topups/export?from={from}&to={}",
                from + SignedDuration::from_hours(24 * 32)
            ),
            &admin,
        )
        .await;
    assert_eq!(s, 422, "{body}");

    // The cardholder's statement shows each top-up's reference, the file's too.
    let (lines, _) = all_lines(&app, "/api/v1/me/statement", &me1, 50).await;
    let mut top_ups: Vec<(i64, Value)> = lines
        .iter()
        .filter(|l| l["kind"] == "top_up")
        .map(|l| (l["amount"].as_i64().unwrap(), l["reference"].clone()))
        .collect();
    top_ups.sort_by_key(|t| t.0);
    let mut expected = vec![(50, Value::Null), (500, json!("TX-100"))];
    if race_winner == 7 {
        expected.insert(0, (7, json!("TX-RACE")));
    }
    assert_eq!(top_ups, expected);
    let (_, statement) =
        download(&app, &me1, &format!("/api/v1/me/statement/export?{window}")).await;
    let statement = String::from_utf8(statement).unwrap();
    assert!(
        statement
            .lines()
            .any(|l| l.contains(",top_up,500,500,0,,reference TX-100,")),
        "{statement}"
    );
    ledger_balances(&app, &admin).await;
}

/// The top-up register's line of `reference` that `user` holds.
async fn line_of(app: &TestApp, admin: &str, reference: &str, user: &str) -> Value {
    let (s, found) = app
        .get(
            &format!("/api/v1/wallets/topups?reference={reference}"),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{found}");
    found["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["user_id"] == user)
        .cloned()
        .unwrap_or_else(|| panic!("{reference} of {user}: {found}"))
}

async fn a_top_up_credited_to_the_wrong_person_is_reversed_and_its_reference_credited_again(
    engine: Engine,
) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let admin = shop.admin.clone();
    let (s1, me1) = person(&app, &admin, "S-1").await;
    let (s2, _) = person(&app, &admin, "S-2").await;
    let top_up = |user: &str, key: &str, body: Value| {
        let path = format!("/api/v1/users/{user}/wallet/topups");
        let (app, admin, key) = (&app, admin.clone(), key.to_string());
        async move { keyed(app, &path, &admin, &key, body).await }
    };
    let reverse = |id: &str, token: &str, key: &str, body: Value| {
        let path = format!("/api/v1/wallets/topups/{id}/reversal");
        let (app, token, key) = (&app, token.to_string(), key.to_string());
        async move { keyed(app, &path, &token, &key, body).await }
    };

    // S-2's parents' transfer TX-9 is credited to S-1 by mistake; S-1 spends 100 of it.
    let (s, _) = top_up(&s1, "t-1", json!({"amount": 500, "reference": "TX-9"})).await;
    assert_eq!(s, 201);
    let wrong = line_of(&app, &admin, "TX-9", &s1).await;
    let wrong_id = wrong["id"].as_str().unwrap().to_string();
    assert!(wrong.get("reversal").is_none(), "{wrong}");
    pay(&app, &shop, &code(&app, &me1).await, 100).await;

    // Who may, and what: a payments manager, with a key and a reason.
    let reason = json!({"reason": "credited to S-1, meant for S-2"});
    let res = app
        .client
        .post(app.url(&format!("/api/v1/wallets/topups/{wrong_id}/reversal")))
        .bearer_auth(&admin)
        .json(&reason)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400, "no key");
    let (s, _) = reverse(&wrong_id, &me1, "r-me", reason.clone()).await;
    assert_eq!(s, 403);
    for bad in [
        json!({}),
        json!({"reason": ""}),
        json!({"reason": "x".repeat(201)}),
    ] {
        let (s, body) = reverse(&wrong_id, &admin, "r-bad", bad.clone()).await;
        assert!(s == 422 || s == 400, "{bad}: {s} {body}");
    }
    let nobody = uuid::Uuid::now_v7().to_string();
    let (s, body) = reverse(&nobody, &admin, "r-none", reason.clone()).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = reverse("not-an-id", &admin, "r-none", reason.clone()).await;
    assert_problem(s, &body, 404, "not_found");
    let elsewhere = shop_elsewhere(&app).await;
    let (s, body) = reverse(&wrong_id, &elsewhere, "r-else", reason.clone()).await;
    assert_problem(s, &body, 404, "not_found");

    // What was spent is not taken back: the balance must hold the whole top-up.
    let (s, body) = reverse(&wrong_id, &admin, "r-1", reason.clone()).await;
    assert_problem(s, &body, 409, "insufficient_balance");
    assert_eq!(balance(&app, &admin, &s1).await, 400, "nothing moved");
    let (s, _) = top_up(&s1, "t-2", json!({"amount": 100})).await;
    assert_eq!(s, 201);
    let (s, done) = reverse(&wrong_id, &admin, "r-2", reason.clone()).await;
    assert_eq!(s, 201, "{done}");
    assert_eq!(
        (done["topup_id"].as_str(), done["reversed"].as_i64()),
        (Some(wrong_id.as_str()), Some(500))
    );
    assert_eq!(done["balance"], 0, "{done}");
    let (s, again) = reverse(&wrong_id, &admin, "r-2", reason.clone()).await;
    assert_eq!((s, &again), (200, &done), "its retry is its answer");
    let (s, body) = reverse(&wrong_id, &admin, "r-3", reason.clone()).await;
    assert_problem(s, &body, 409, "already_reversed");
    assert_eq!(balance(&app, &admin, &s1).await, 0);

    // The transfer's reference is free again: credited to S-2, once.
    let (s, body) = top_up(&s2, "t-3", json!({"amount": 500, "reference": "TX-9"})).await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = top_up(&s2, "t-4", json!({"amount": 500, "reference": "TX-9"})).await;
    assert_problem(s, &body, 409, "reference_used");
    let reversed = line_of(&app, &admin, "TX-9", &s1).await;
    let r = &reversed["reversal"];
    assert_eq!(r["id"], done["reversal_id"], "{reversed}");
    assert_eq!(r["reason"], "credited to S-1, meant for S-2");
    assert!(r["by"].as_str().unwrap().starts_with("admin:"), "{r}");
    let right = line_of(&app, &admin, "TX-9", &s2).await;
    assert!(right.get("reversal").is_none(), "{right}");
    // The register's file says which top-up was taken back, and why.
    let window = format!(
        "from={}&to={}",
        app.clock_now() - SignedDuration::from_hours(1),
        app.clock_now() + SignedDuration::from_secs(1)
    );
    let (_, file) = download(
        &app,
        &admin,
        &format!("/api/v1/wallets/topups/export?{window}"),
    )
    .await;
    let file = String::from_utf8(file).unwrap();
    let tx9: Vec<&str> = file.lines().filter(|l| l.contains(",TX-9,")).collect();
    assert_eq!(tx9.len(), 2, "{file}");
    assert!(
        tx9.iter()
            .any(|l| l.contains(",S-1,") && l.ends_with(",\"credited to S-1, meant for S-2\"")),
        "{file}"
    );
    assert!(
        tx9.iter().any(|l| l.contains(",S-2,") && l.ends_with(",,")),
        "{file}"
    );
    // A bank file sees the top-up that stands, not the reversed one.
    let file = "number,amount_fen,reference\nS-2,500,TX-9\n"
        .as_bytes()
        .to_vec();
    let (s, body) = send(&app, &admin, Some("f-1"), "text/csv", file).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["already_credited"][0]["topup_id"], right["id"],
        "{body}"
    );
    let file = "number,amount_fen,reference\nS-1,500,TX-9\n"
        .as_bytes()
        .to_vec();
    let (s, body) = send(&app, &admin, Some("f-2"), "text/csv", file).await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["rule"], "reference_used", "{body}");

    // Reversals racing on one top-up, under their own keys: one takes it back.
    let (s, _) = top_up(&s2, "t-5", json!({"amount": 300, "reference": "TX-R"})).await;
    assert_eq!(s, 201);
    let race = line_of(&app, &admin, "TX-R", &s2).await;
    let race_id = race["id"].as_str().unwrap().to_string();
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let call = reverse(&race_id, &admin, &format!("race-{i}"), reason.clone());
            async move { call.await.0 }
        })
        .collect();
    let mut statuses = futures_util::future::join_all(racers).await;
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409]);
    assert_eq!(balance(&app, &admin, &s2).await, 500);
    // The register by whether a top-up was taken back.
    let ids = |reversed: &str| {
        let path = format!("/api/v1/wallets/topups?reversed={reversed}");
        let (app, admin) = (&app, admin.clone());
        async move {
            let (s, page) = app.get(&path, &admin).await;
            assert_eq!(s, 200, "{page}");
            let mut ids: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut taken_back = vec![wrong_id.clone(), race_id.clone()];
    taken_back.sort();
    assert_eq!(ids("true").await, taken_back);
    let standing = ids("false").await;
    assert_eq!(
        standing.len(),
        2,
        "TX-9 to S-2, and S-1's 100: {standing:?}"
    );
    assert!(!standing.contains(&wrong_id) && !standing.contains(&race_id));
    let (s, body) = app
        .get("/api/v1/wallets/topups?reversed=maybe", &admin)
        .await;
    assert!(s == 400 || s == 422, "{s} {body}");

    // S-1's statement names the reversal; its cash adds up to the balance.
    let (lines, _) = all_lines(&app, "/api/v1/me/statement", &me1, 50).await;
    let kinds: Vec<(&str, i64, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap(),
                l["amount"].as_i64().unwrap(),
                l["cash"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("top_up_reversal", 500, -500),
            ("top_up", 100, 100),
            ("payment", 100, -100),
            ("top_up", 500, 500),
        ]
    );
    assert_eq!(lines[0]["topup_id"], wrong_id.as_str());
    assert_eq!(lines[0]["reference"], "TX-9");
    let day = app
        .clock_now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    let income = report(&app, &admin, "income-summary", &day, &day).await;
    assert_eq!(
        income["totals"]["top_ups"],
        500 + 100 - 500 + 500 + 300 - 300,
        "top-ups net of their reversals: {income}"
    );
    let (_, audit) = app
        .get("/api/v1/audit?action=wallet.topup_reverse", &admin)
        .await;
    assert!(
        audit["items"].as_array().is_some_and(|a| a.len() >= 2),
        "{audit}"
    );
    ledger_balances(&app, &admin).await;
}

/// Two clerks upload the same bank file at the same moment, under their own keys: each
/// transfer is credited once, by one of them, and each answer accounts for every row
/// (credited by it, or `already_credited` by the other).
async fn two_uploads_of_one_bank_file_at_once_credit_each_transfer_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let admin = shop.admin.clone();
    let mut people = Vec::new();
    for i in 0..8 {
        people.push(person(&app, &admin, &format!("S-{i}")).await.0);
    }
    let mut file = String::from("number,amount_fen,reference\n");
    for i in 0..200 {
        file.push_str(&format!("S-{},{},BANK-{i}\n", i % 8, 1 + i % 3));
    }
    let sum: i64 = (0..200).map(|i| 1 + i % 3).sum();
    for round in 0..3 {
        // A fresh set of transfers each round, so that the uploads race again.
        let file = file.replace("BANK-", &format!("BANK{round}-"));
        let (key_a, key_b) = (format!("clerk-a-{round}"), format!("clerk-b-{round}"));
        let bytes = file.into_bytes();
        let (a, b) = futures_util::join!(
            send(&app, &admin, Some(&key_a), "text/csv", bytes.clone()),
            send(&app, &admin, Some(&key_b), "text/csv", bytes)
        );
        assert_eq!(
            (a.0, b.0),
            (200, 200),
            "{} {}",
            a.1["detail"],
            b.1["detail"]
        );
        let count = |body: &Value, list: &str| body[list].as_array().map_or(0, Vec::len);
        for body in [&a.1, &b.1] {
            assert_eq!(
                count(body, "topped_up") + count(body, "already_credited"),
                200,
                "{body}"
            );
        }
        assert_eq!(
            count(&a.1, "topped_up") + count(&b.1, "topped_up"),
            200,
            "each transfer credited by one upload"
        );
        assert_eq!(
            a.1["total"].as_i64().unwrap() + b.1["total"].as_i64().unwrap(),
            sum
        );
    }
    let mut total = 0;
    for p in &people {
        total += balance(&app, &admin, p).await;
    }
    assert_eq!(total, 3 * sum, "credited once each round");
    ledger_balances(&app, &admin).await;
}

/// Another tenant's payments manager.
async fn shop_elsewhere(app: &TestApp) -> String {
    shop(app, 100_000).await.admin
}
