//! Withdrawals: a leaving person's balance paid out, a whole class's in one batch (of
//! those who have left, or of anyone), never twice, and the register the finance office
//! reconciles its transfers with.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{department, member};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{
    approved_rule, code, keyed, ledger_balances, pay, person, set_sandbox, shop, top_up,
};
use crate::on_both_engines;
use crate::reports::{download, report};
use crate::statements::all_lines;

on_both_engines!(
    a_leaving_persons_balance_is_paid_out_once_and_never_past_what_is_owed,
    a_class_is_paid_out_in_one_batch_and_a_batch_sent_again_pays_no_one_twice,
);

async fn withdraw(app: &TestApp, token: &str, user: &str, key: &str, body: Value) -> (u16, Value) {
    keyed(
        app,
        &format!("/api/v1/users/{user}/wallet/withdrawals"),
        token,
        key,
        body,
    )
    .await
}

/// SPEC §6 keeps a cardholder's cash theirs: when they leave, the finance office pays out
/// what their balance holds (never subsidies, which are the tenant's), and the income
/// summary, the statement, the audit log and the ledger all say so.
async fn a_leaving_persons_balance_is_paid_out_once_and_never_past_what_is_owed(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let (user, me) = person(&app, &shop.admin, "L-1").await;
    let day = app
        .clock_now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    top_up(&app, &shop, &user, 1_000).await;
    let rule = json!({"name": "Meal", "amount": 400, "targets": {"user_ids": [user]}});
    assert_eq!(approved_rule(&app, &shop.admin, rule).await, 1);
    // 1,500 = subsidy 400 + cash 1,000 + deferred 100, which the provider declines.
    set_sandbox(&app, &shop.admin, &user, json!({"available": 0})).await;
    let p = pay(&app, &shop, &code(&app, &me).await, 1_500).await;
    let pid = p["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{pid}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    top_up(&app, &shop, &user, 900).await;
    let (s, w) = app
        .patch(
            &format!("/api/v1/users/{user}"),
            &shop.admin,
            json!({"status": "left"}),
        )
        .await;
    assert_eq!(s, 200, "{w}");

    // Nothing while something is owed.
    let (s, body) = withdraw(&app, &shop.admin, &user, "w-0", json!({})).await;
    assert_problem(s, &body, 409, "in_arrears");
    let (s, w) = keyed(&app, "/api/v1/me/arrears/repay", &me, "repay-1", json!({})).await;
    assert_eq!((s, w["arrears"].as_i64()), (200, Some(0)), "{w}");

    // Bad input is refused and changes nothing.
    for (body, status) in [
        (json!({"amount": 0}), 422),
        (json!({"amount": -5}), 422),
        (json!({"amount": "all"}), 422),
        (json!({"reference": ""}), 422),
        (json!({"reference": "x".repeat(65)}), 422),
        (json!({"amount": 10, "why": "leaving"}), 422),
    ] {
        let (s, answer) = withdraw(
            &app,
            &shop.admin,
            &user,
            &uuid::Uuid::new_v4().to_string(),
            body.clone(),
        )
        .await;
        assert!(
            s == status || (s == 400 && status == 422),
            "{body}: {s} {answer}"
        );
    }
    let (s, body) = withdraw(&app, &shop.admin, &user, "w-1", json!({"amount": 901})).await;
    assert_problem(s, &body, 409, "insufficient_balance");
    assert!(body["detail"].as_str().unwrap().contains("900"), "{body}");
    // Who may: a payments manager of this tenant, not a cardholder, not another tenant.
    let (s, _) = withdraw(&app, &me, &user, "w-2", json!({"amount": 1})).await;
    assert_eq!(s, 403);
    let (_, stranger) = app.tenant("university", "standard").await;
    let (s, body) = withdraw(&app, &stranger, &user, "w-3", json!({"amount": 1})).await;
    assert_problem(s, &body, 404, "not_found");
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 900, "nothing moved: {w}");

    // Part of it, then the rest; a replay answers the same and pays nothing more.
    let (s, w) = withdraw(
        &app,
        &shop.admin,
        &user,
        "w-4",
        json!({"amount": 300, "reference": "BT-2026-0042"}),
    )
    .await;
    assert_eq!((s, w["balance"].as_i64()), (201, Some(600)), "{w}");
    let first_id = w["id"].as_str().unwrap().to_string();
    let (s, again) = withdraw(
        &app,
        &shop.admin,
        &user,
        "w-4",
        json!({"amount": 300, "reference": "BT-2026-0042"}),
    )
    .await;
    assert_eq!(
        (s, again),
        (200, w),
        "a replay (API.md: 200, the first answer)"
    );
    let (s, body) = withdraw(&app, &shop.admin, &user, "w-4", json!({"amount": 200})).await;
    assert_problem(s, &body, 409, "idempotency_conflict");
    let (s, w) = withdraw(&app, &shop.admin, &user, "w-5", json!({})).await;
    assert_eq!((s, w["balance"].as_i64()), (201, Some(0)), "{w}");
    assert_eq!(w["withdrawn"], 600, "{w}");
    let second_id = w["id"].as_str().unwrap().to_string();
    let live: i64 = w["subsidies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["balance"].as_i64().unwrap())
        .sum();
    assert_eq!(
        live, 0,
        "the subsidy was spent, and is never paid out anyway: {w}"
    );
    let (s, body) = withdraw(&app, &shop.admin, &user, "w-6", json!({})).await;
    assert_problem(s, &body, 409, "insufficient_balance");

    // The statement, the income summary (live, then from its roll-ups), the audit log.
    let (_, st) = app.get("/api/v1/me/statement", &me).await;
    let lines: Vec<(&str, i64)> = st["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["amount"].as_i64().unwrap()))
        .collect();
    let references: Vec<&Value> = st["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["reference"])
        .collect();
    assert_eq!(
        references[..2],
        [&Value::Null, &json!("BT-2026-0042")],
        "a payout shows the reference it was paid by"
    );
    assert_eq!(
        lines,
        [
            ("withdrawal", 600),
            ("withdrawal", 300),
            ("arrears_repaid", 100),
            ("top_up", 900),
            ("arrears_opened", 100),
            ("payment", 1_500),
            ("subsidy", 400),
            ("top_up", 1_000),
        ],
        "{st}"
    );
    let income = report(&app, &shop.admin, "income-summary", &day, &day).await;
    assert_eq!(
        (
            income["totals"]["top_ups"].as_i64(),
            income["totals"]["withdrawals"].as_i64()
        ),
        (Some(1_900), Some(900)),
        "{income}"
    );
    app.clock.advance(SignedDuration::from_hours(2));
    let rolled = app
        .state
        .store
        .roll_up_reports(app.clock_now(), SignedDuration::from_hours(1), 1_000)
        .await
        .unwrap();
    assert!(rolled > 0);
    let again = report(&app, &shop.admin, "income-summary", &day, &day).await;
    assert_eq!(
        again["totals"], income["totals"],
        "the roll-ups keep withdrawals"
    );
    let (_, audit) = app
        .get("/api/v1/audit?action=wallet.withdraw", &shop.admin)
        .await;
    let references: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["detail"]["reference"])
        .collect();
    assert!(references.contains(&&json!("BT-2026-0042")), "{audit}");

    // The register: both payouts, oldest first, with how and by whom.
    let path = format!("/api/v1/wallets/withdrawals?user_id={user}");
    let (lines, _) = all_lines(&app, &path, &shop.admin, 1).await;
    let seen: Vec<(&str, i64, &Value, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap(),
                l["amount"].as_i64().unwrap(),
                &l["reference"],
                l["number"].as_str().unwrap(),
                l["user_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                first_id.as_str(),
                300,
                &json!("BT-2026-0042"),
                "L-1",
                user.as_str()
            ),
            (second_id.as_str(), 600, &Value::Null, "L-1", user.as_str()),
        ],
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l["paid_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("admin:"))),
        "{lines:#?}"
    );
    let (s, theirs) = app.get("/api/v1/wallets/withdrawals", &stranger).await;
    assert_eq!(
        (s, &theirs["items"]),
        (200, &json!([])),
        "another tenant's register"
    );
    let (s, _) = app.get("/api/v1/wallets/withdrawals", &me).await;
    assert_eq!(
        s, 403,
        "a cardholder reads their statement, not the register"
    );
    for bad in [
        "limit=0",
        "cursor=nope",
        "from=yesterday",
        "user_id=42",
        "sort=amount",
    ] {
        let (s, body) = app
            .get(&format!("/api/v1/wallets/withdrawals?{bad}"), &shop.admin)
            .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {body}");
    }
    ledger_balances(&app, &shop.admin).await;
}

/// The summer's graduates: one batch pays out everyone in their department (never the
/// rest of the school), leaves out whoever owes, and sent again with its key pays no one
/// twice.
async fn a_class_is_paid_out_in_one_batch_and_a_batch_sent_again_pays_no_one_twice(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let class = department(&app, &shop.admin, "Class of 2026", None).await;
    let class_id = class["id"].as_str().unwrap();
    let mut people = Vec::new();
    for (number, amount) in [("G-1", 100), ("G-2", 200), ("G-3", 300), ("G-4", 0)] {
        let m = member(&app, &shop.admin, number, &[class_id], &[]).await;
        let id = m["id"].as_str().unwrap().to_string();
        if amount > 0 {
            top_up(&app, &shop, &id, amount).await;
        }
        people.push(id);
    }
    // G-5 owes 300 from a deferred debit the provider declined, and holds 50.
    let debtor = member(&app, &shop.admin, "G-5", &[class_id], &[]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, t) = app
        .post(
            &format!("/api/v1/users/{debtor}/tokens"),
            &shop.admin,
            json!({}),
        )
        .await;
    let debtor_me = t["token"].as_str().unwrap().to_string();
    app.post("/api/v1/me/agreement", &debtor_me, json!({}))
        .await;
    set_sandbox(&app, &shop.admin, &debtor, json!({"available": 0})).await;
    let p = pay(&app, &shop, &code(&app, &debtor_me).await, 300).await;
    let pid = p["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{pid}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    top_up(&app, &shop, &debtor, 50).await;
    // The class has left, all but G-6, who stays on a year and keeps their 70.
    let repeating = member(&app, &shop.admin, "G-6", &[class_id], &[]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    top_up(&app, &shop, &repeating, 70).await;
    for id in people.iter().chain([&debtor]) {
        let (s, u) = app
            .patch(
                &format!("/api/v1/users/{id}"),
                &shop.admin,
                json!({"status": "left"}),
            )
            .await;
        assert_eq!(s, 200, "{u}");
    }
    // Someone staying, outside the class.
    let (staying, staying_me) = person(&app, &shop.admin, "S-9").await;
    top_up(&app, &shop, &staying, 500).await;

    let batch = |key: &'static str, body: Value| {
        let app = &app;
        let admin = shop.admin.clone();
        async move { keyed(app, "/api/v1/wallets/withdrawals", &admin, key, body).await }
    };
    let body = json!({"targets": {"department_ids": [class_id]}, "status": "left",
                      "reference": "GRAD-2026"});
    for bad in [
        json!({"targets": {}}),
        json!({"targets": {"department_ids": [class_id]}, "status": "gone"}),
        json!({"targets": {"department_ids": [class_id]}, "reference": ""}),
        json!({"targets": {"department_ids": [class_id]}, "extra": 1}),
    ] {
        let key = uuid::Uuid::new_v4().to_string();
        let (s, answer) = keyed(
            &app,
            "/api/v1/wallets/withdrawals",
            &shop.admin,
            &key,
            bad.clone(),
        )
        .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {answer}");
    }
    let (s, answer) = app
        .post("/api/v1/wallets/withdrawals", &shop.admin, body.clone())
        .await;
    assert_problem(s, &answer, 400, "idempotency_key_required");
    let (s, answer) = keyed(
        &app,
        "/api/v1/wallets/withdrawals",
        &staying_me,
        "b-me",
        body.clone(),
    )
    .await;
    assert_eq!(s, 403, "{answer}");

    let first_batch_at = app.clock_now();
    let (s, first) = batch("b-1", body.clone()).await;
    assert_eq!(s, 200, "{first}");
    let paid = |r: &Value| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = r["paid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["user_id"].as_str().unwrap().to_string(),
                    p["amount"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut expected = vec![
        (people[0].clone(), 100),
        (people[1].clone(), 200),
        (people[2].clone(), 300),
    ];
    expected.sort();
    assert_eq!(paid(&first), expected, "{first}");
    // The transfer list as the office reads it: by number, with names.
    let listed: Vec<(&str, &str, i64)> = first["paid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["number"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
                p["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("G-1", "User G-1", 100),
            ("G-2", "User G-2", 200),
            ("G-3", "User G-3", 300)
        ]
    );
    assert_eq!(
        (
            first["people"].as_u64(),
            first["total"].as_i64(),
            first["empty"].as_u64()
        ),
        (Some(5), Some(600), Some(1)),
        "{first}"
    );
    assert_eq!(
        first["in_arrears"],
        json!([{"user_id": debtor, "name": "User G-5", "number": "G-5"}])
    );
    for id in &people[..3] {
        let (_, w) = app
            .get(&format!("/api/v1/users/{id}/wallet"), &shop.admin)
            .await;
        assert_eq!(w["balance"], 0, "{w}");
    }
    for (id, kept) in [(&staying, 500), (&repeating, 70)] {
        let (_, w) = app
            .get(&format!("/api/v1/users/{id}/wallet"), &shop.admin)
            .await;
        assert_eq!(w["balance"], kept, "outside the class, or still here: {w}");
    }

    // Sent again with its key: the same payouts, answered from what was stored.
    let (s, again) = batch("b-1", body.clone()).await;
    assert_eq!(
        (s, paid(&again), again["total"].as_i64()),
        (200, expected.clone(), Some(600)),
        "{again}"
    );
    // A batch cut short leaves no answer of its own: with that record gone, the batch runs
    // again, and each person's payout is answered from their own key, not paid twice.
    let forgotten = app
        .state
        .store
        .purge_idempotency(app.clock_now() + SignedDuration::from_hours(1), 1_000)
        .await
        .unwrap();
    assert!(forgotten >= 1, "the batch's own record");
    let (s, rerun) = batch("b-1", body.clone()).await;
    assert_eq!(
        (s, paid(&rerun), rerun["total"].as_i64()),
        (200, expected.clone(), Some(600)),
        "{rerun}"
    );
    for id in &people[..3] {
        let (_, w) = app
            .get(&format!("/api/v1/users/{id}/wallet"), &shop.admin)
            .await;
        assert_eq!(w["balance"], 0, "paid once: {w}");
    }
    let (s, answer) = batch("b-1", json!({"targets": {"department_ids": [class_id]}})).await;
    assert_problem(s, &answer, 409, "idempotency_conflict");
    let register = |from: &str| {
        let (app, admin) = (&app, shop.admin.clone());
        let path = format!("/api/v1/wallets/withdrawals?from={from}");
        async move { all_lines(app, &path, &admin, 2).await.0 }
    };
    let since = first_batch_at.to_string();
    let ids: Vec<&str> = first["paid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["withdrawal_id"].as_str().unwrap())
        .collect();
    let lines = register(&since).await;
    let mut registered: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    registered.sort();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    assert_eq!(
        registered, ids_sorted,
        "each payout once in the register: {lines:#?}"
    );

    // The debtor repays; the next batch pays out their 50 and finds the rest empty.
    let (s, w) = keyed(
        &app,
        "/api/v1/me/arrears/repay",
        &debtor_me,
        "repay-g5",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    let (s, second) = batch("b-2", body.clone()).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(paid(&second), [(debtor.clone(), 50)]);
    assert_eq!(
        (
            second["empty"].as_u64(),
            second["in_arrears"].as_array().map(Vec::len)
        ),
        (Some(4), Some(0))
    );
    // Of every status: G-6's 70 too.
    let (s, third) = batch("b-3", json!({"targets": {"department_ids": [class_id]}})).await;
    assert_eq!(s, 200, "{third}");
    assert_eq!(paid(&third), [(repeating.clone(), 70)]);
    assert_eq!(
        (third["people"].as_u64(), third["empty"].as_u64()),
        (Some(6), Some(5))
    );

    // The register: every payout, with the batch's reference and who paid it out.
    let lines = register(&since).await;
    let amounts: Vec<(&str, i64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["number"].as_str().unwrap(),
                l["amount"].as_i64().unwrap(),
                l["reference"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut sorted = amounts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("G-1", 100, "GRAD-2026"),
            ("G-2", 200, "GRAD-2026"),
            ("G-3", 300, "GRAD-2026"),
            ("G-5", 50, "GRAD-2026"),
            ("G-6", 70, ""),
        ]
    );
    assert_eq!(amounts.last().map(|a| a.0), Some("G-6"), "oldest first");
    let later = app.clock_now() + SignedDuration::from_secs(1);
    assert!(register(&later.to_string()).await.is_empty());

    // As a file for the office: CSV in fen, XLSX in yuan with a total.
    let window = format!(
        "from={}&to={}",
        first_batch_at,
        app.clock_now() + SignedDuration::from_secs(1)
    );
    let (mime, csv) = download(
        &app,
        &shop.admin,
        &format!("/api/v1/wallets/withdrawals/export?{window}"),
    )
    .await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "at,number,name,amount,reference,paid_by,withdrawal_id,user_id"
    );
    assert_eq!(rows.len(), 6, "{csv}");
    assert!(
        rows.iter()
            .any(|r| r.contains(",G-3,User G-3,300,GRAD-2026,admin:")),
        "{csv}"
    );
    let (_, xlsx) = download(
        &app,
        &shop.admin,
        &format!("/api/v1/wallets/withdrawals/export?{window}&format=xlsx"),
    )
    .await;
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("withdrawals").unwrap();
    let cell = |r: u32, c: u32| sheet.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    assert_eq!(cell(2, 3), Data::String("amount".into()));
    let yuan: Vec<Data> = (3..8).map(|r| cell(r, 3)).collect();
    assert!(yuan.contains(&Data::Float(3.0)), "{yuan:?}");
    assert_eq!(cell(8, 0), Data::String("5 withdrawals".into()));
    assert_eq!(cell(8, 3), Data::Float(7.2), "the total, in yuan");
    let long = format!(
        "from={}&to={}",
        first_batch_at,
        first_batch_at + SignedDuration::from_hours(24 * 32)
    );
    let backwards = format!("from={}&to={}", app.clock_now(), first_batch_at);
    for bad in [
        long,
        backwards,
        format!("{window}&format=pdf"),
        "to=2026-01-01T00:00:00Z".into(),
    ] {
        let (s, body) = app
            .get(
                &format!("/api/v1/wallets/withdrawals/export?{bad}"),
                &shop.admin,
            )
            .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {body}");
    }

    let day = app
        .clock_now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    let income = report(&app, &shop.admin, "income-summary", &day, &day).await;
    assert_eq!(income["totals"]["withdrawals"], 720, "{income}");
    let (_, audit) = app
        .get("/api/v1/audit?action=wallet.withdraw_batch", &shop.admin)
        .await;
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(4),
        "three batches, and the first run again once its record was gone (a replay from the \
         record is not audited again): {audit}"
    );
    ledger_balances(&app, &shop.admin).await;
}
