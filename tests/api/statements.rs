//! Statements: a cardholder's every movement of money, newest first, for themselves and
//! for the finance office; pages that neither skip nor repeat a line; and a statement
//! that adds up to the wallet. Withdrawals: a leaving person's balance paid out.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{department, member};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{
    approved_rule, code, keyed, ledger_balances, pay, person, set_sandbox, shop, top_up,
};
use crate::on_both_engines;
use crate::reports::report;

on_both_engines!(
    a_statement_lists_every_movement_and_adds_up_to_the_wallet,
    a_leaving_persons_balance_is_paid_out_once_and_never_past_what_is_owed,
    a_class_is_paid_out_in_one_batch_and_a_batch_sent_again_pays_no_one_twice,
);

/// Every line of `path`, page by page (`limit` a page), and the pages' sizes.
async fn all_lines(app: &TestApp, path: &str, token: &str, limit: u32) -> (Vec<Value>, Vec<usize>) {
    let (mut lines, mut sizes, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let (s, page) = app.get(&url, token).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        lines.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (lines, sizes),
        }
        assert!(sizes.len() < 100, "the pages never end");
    }
}

async fn refund(app: &TestApp, admin: &str, payment: &str, body: Value) -> Value {
    let key = uuid::Uuid::new_v4().to_string();
    let (s, r) = keyed(
        app,
        &format!("/api/v1/payments/{payment}/refunds"),
        admin,
        &key,
        body,
    )
    .await;
    assert_eq!(s, 201, "{r}");
    r
}

fn amount(line: &Value) -> i64 {
    line["amount"].as_i64().unwrap()
}

async fn a_statement_lists_every_movement_and_adds_up_to_the_wallet(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let (user, me) = person(&app, &shop.admin, "S-1").await;
    // Someone else's money never shows on S-1's statement.
    let (other, _) = person(&app, &shop.admin, "S-2").await;
    top_up(&app, &shop, &other, 77).await;

    top_up(&app, &shop, &user, 1_000).await;
    let soon = (app.clock_now() + SignedDuration::from_hours(24)).to_string();
    let (s, c) = app
        .post(
            &format!("/api/v1/users/{user}/wallet/coupons"),
            &shop.admin,
            json!({"name": "Soon", "discount": 100, "threshold": 0, "expires_at": soon}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let rule = json!({"name": "Meal", "amount": 400, "targets": {"user_ids": [user]}, "merchant_ids": [shop.merchant]});
    assert_eq!(approved_rule(&app, &shop.admin, rule).await, 1);

    // 2,000 = coupon 100 + subsidy 400 + cash 1,000 + deferred 500, collected.
    let first_code = code(&app, &me).await;
    let big = pay(&app, &shop, &first_code, 2_000).await;
    let big_id = big["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{big_id}"), &shop.admin, |p| {
        p["status"] == "succeeded"
    })
    .await;
    // 700 back: the deferred 500 through the provider, then 200 to cash.
    refund(&app, &shop.admin, &big_id, json!({"amount": 700})).await;
    // A replayed code: declined, and on the statement with its reason.
    let replay = pay(&app, &shop, &first_code, 10).await;
    assert_eq!(replay["decline_reason"], "code_reused", "{replay}");
    top_up(&app, &shop, &user, 50).await;
    // 300 = cash 250 + deferred 50, which the provider declines: 50 owed, then repaid.
    set_sandbox(&app, &shop.admin, &user, json!({"available": 0})).await;
    let owed = pay(&app, &shop, &code(&app, &me).await, 300).await;
    let owed_id = owed["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{owed_id}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    let (s, w) = keyed(&app, "/api/v1/me/arrears/repay", &me, "repay-1", json!({})).await;
    assert_eq!(s, 200, "{w}");
    // The rest of the first payment: cash 800, the subsidy 400 and the coupon.
    refund(&app, &shop.admin, &big_id, json!({})).await;

    let (lines, sizes) = all_lines(&app, "/api/v1/me/statement", &me, 500).await;
    assert_eq!(sizes, [lines.len()], "one page holds them all");
    let kinds: Vec<(&str, i64)> = lines
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), amount(l)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("refund", 1_300),
            ("arrears_repaid", 50),
            ("arrears_opened", 50),
            ("payment", 300),
            ("top_up", 50),
            ("payment", 10),
            ("refund", 700),
            ("payment", 2_000),
            ("subsidy", 400),
            ("top_up", 1_000),
        ],
        "{lines:#?}"
    );
    let [last_refund, _, opened, owed_line, _, declined, first_refund, big_line, subsidy, _] =
        &lines[..]
    else {
        unreachable!()
    };
    assert_eq!(
        last_refund["returned"],
        json!({"coupon": 100, "subsidy": 400, "balance": 800, "deferred": 0})
    );
    assert_eq!(last_refund["not_revived"], 0);
    assert_eq!(
        first_refund["returned"],
        json!({"coupon": 0, "subsidy": 0, "balance": 200, "deferred": 500})
    );
    for r in [last_refund, first_refund] {
        assert_eq!(r["payment_id"], big_id.as_str(), "{r}");
        assert_eq!(
            r["merchant"],
            json!({"id": shop.merchant, "name": "North Hall"})
        );
    }
    assert_eq!(opened["payment_id"], owed_id.as_str(), "{opened}");
    assert_eq!(
        owed_line["payment"]["status"], "succeeded",
        "repaid: {owed_line}"
    );
    assert_eq!(
        (
            declined["payment"]["status"].as_str(),
            declined["payment"]["decline_reason"].as_str()
        ),
        (Some("declined"), Some("code_reused"))
    );
    assert_eq!(big_line["id"], big_id.as_str());
    assert_eq!(
        (
            big_line["payment"]["status"].as_str(),
            big_line["payment"]["refunded"].as_i64()
        ),
        (Some("refunded"), Some(2_000))
    );
    assert_eq!(big_line["merchant"]["name"], "North Hall");
    assert_eq!(subsidy["subsidy_account"]["name"], "Meal", "{subsidy}");
    assert!(lines.iter().all(|l| l["at"].is_string()), "{lines:#?}");

    // The statement adds up to the wallet: cash in from top-ups and refunds, out by
    // payments; subsidies in from rules and refunds, out by payments.
    let sum = |kind: &str, part: &dyn Fn(&Value) -> i64| -> i64 {
        lines.iter().filter(|l| l["kind"] == kind).map(part).sum()
    };
    let paid = |share: &'static str| {
        move |l: &Value| {
            if l["payment"]["status"] == "declined" {
                0
            } else {
                l["payment"]["breakdown"][share].as_i64().unwrap()
            }
        }
    };
    let cash = sum("top_up", &amount)
        + sum("refund", &|l| l["returned"]["balance"].as_i64().unwrap())
        - sum("payment", &paid("balance"));
    let subsidies = sum("subsidy", &amount)
        + sum("refund", &|l| l["returned"]["subsidy"].as_i64().unwrap())
        - sum("payment", &paid("subsidy"));
    let owed_now = sum("arrears_opened", &amount) - sum("arrears_repaid", &amount);
    let (_, w) = app.get("/api/v1/me/wallet", &me).await;
    assert_eq!(cash, w["balance"].as_i64().unwrap(), "{w}");
    assert_eq!(cash, 800);
    let live: i64 = w["subsidies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["balance"].as_i64().unwrap())
        .sum();
    assert_eq!(
        (subsidies, owed_now, w["arrears"].as_i64()),
        (live, 0, Some(0)),
        "{w}"
    );

    // Pages of 3 neither skip nor repeat a line, and the last says nothing follows.
    let (paged, sizes) = all_lines(&app, "/api/v1/me/statement", &me, 3).await;
    assert_eq!(sizes, [3, 3, 3, 1]);
    let ids = |ls: &[Value]| {
        ls.iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&paged), ids(&lines));
    // A page size that ends exactly at the last line still ends.
    let (_, sizes) = all_lines(&app, "/api/v1/me/statement", &me, 5).await;
    assert_eq!(sizes, [5, 5]);

    // The finance office reads the same statement; nobody reads another tenant's.
    let (admin_lines, _) = all_lines(
        &app,
        &format!("/api/v1/users/{user}/statement"),
        &shop.admin,
        4,
    )
    .await;
    assert_eq!(admin_lines, lines);
    let (_, stranger) = app.tenant("university", "standard").await;
    let (s, body) = app
        .get(&format!("/api/v1/users/{user}/statement"), &stranger)
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app
        .get(&format!("/api/v1/users/{user}/statement"), &me)
        .await;
    assert_eq!(s, 403, "a cardholder reads only their own: {body}");
    for bad in ["limit=0", "limit=501", "cursor=nope"] {
        let (s, body) = app.get(&format!("/api/v1/me/statement?{bad}"), &me).await;
        assert_eq!(s, 422, "{bad}: {body}");
    }
    let (_, other_lines) = app
        .get(&format!("/api/v1/users/{other}/statement"), &shop.admin)
        .await;
    assert_eq!(
        other_lines["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(amount)
            .collect::<Vec<_>>(),
        [77]
    );
    ledger_balances(&app, &shop.admin).await;
}

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
    // Someone staying, outside the class.
    let (staying, staying_me) = person(&app, &shop.admin, "S-9").await;
    top_up(&app, &shop, &staying, 500).await;

    let batch = |key: &'static str, body: Value| {
        let app = &app;
        let admin = shop.admin.clone();
        async move { keyed(app, "/api/v1/wallets/withdrawals", &admin, key, body).await }
    };
    let body = json!({"targets": {"department_ids": [class_id]}, "reference": "GRAD-2026"});
    for bad in [
        json!({"targets": {}}),
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
    assert_eq!(
        (
            first["people"].as_u64(),
            first["total"].as_i64(),
            first["empty"].as_u64()
        ),
        (Some(5), Some(600), Some(1)),
        "{first}"
    );
    assert_eq!(first["in_arrears"], json!([debtor]));
    for id in &people[..3] {
        let (_, w) = app
            .get(&format!("/api/v1/users/{id}/wallet"), &shop.admin)
            .await;
        assert_eq!(w["balance"], 0, "{w}");
    }
    let (_, w) = app
        .get(&format!("/api/v1/users/{staying}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 500, "outside the class: {w}");

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

    let day = app
        .clock_now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    let income = report(&app, &shop.admin, "income-summary", &day, &day).await;
    assert_eq!(income["totals"]["withdrawals"], 650, "{income}");
    let (_, audit) = app
        .get("/api/v1/audit?action=wallet.withdraw_batch", &shop.admin)
        .await;
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(3),
        "two batches, and the first run again once its record was gone (a replay from the \
         record is not audited again): {audit}"
    );
    ledger_balances(&app, &shop.admin).await;
}
