//! The money core end to end: payments with the deduction order, every decline reason,
//! idempotency, concurrency, refunds, subsidies, arrears, freezes, busy wallets, and the
//! ledger check after each scenario.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_with, Engine, PgDatabase, TestApp};
use crate::on_both_engines;
use crate::realtime::Ws;

pub(crate) struct Shop {
    pub admin: String,
    pub merchant: String,
    pub terminal: String,
    pub terminal_id: String,
}

pub(crate) async fn shop(app: &TestApp, single_limit: i64) -> Shop {
    shop_in(app, "standard", single_limit).await
}

/// A shop of a new university tenant of `edition`.
pub(crate) async fn shop_in(app: &TestApp, edition: &str, single_limit: i64) -> Shop {
    let (_, admin) = app.tenant("university", edition).await;
    let (s, m) = app
        .post(
            "/api/v1/merchants",
            &admin,
            json!({"name": "North Hall", "single_limit": single_limit}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let merchant = m["id"].as_str().unwrap().to_string();
    let (s, t) = app
        .post(
            &format!("/api/v1/merchants/{merchant}/terminals"),
            &admin,
            json!({"name": "Till 1"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    Shop {
        admin,
        merchant,
        terminal: t["token"].as_str().unwrap().into(),
        terminal_id: t["id"].as_str().unwrap().into(),
    }
}

/// A cardholder with a signed agreement: (user id, cardholder token).
pub(crate) async fn person(app: &TestApp, admin: &str, number: &str) -> (String, String) {
    let user = app.user(admin, number).await;
    let id = user["id"].as_str().unwrap().to_string();
    let (s, t) = app
        .post(&format!("/api/v1/users/{id}/tokens"), admin, json!({}))
        .await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().unwrap().to_string();
    let (s, _) = app.post("/api/v1/me/agreement", &token, json!({})).await;
    assert_eq!(s, 201);
    (id, token)
}

pub(crate) async fn code(app: &TestApp, cardholder: &str) -> String {
    let (s, c) = app
        .post("/api/v1/me/payment-codes", cardholder, json!({}))
        .await;
    assert_eq!(s, 201, "{c}");
    c["code"].as_str().unwrap().to_string()
}

pub(crate) async fn keyed(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn pay(app: &TestApp, shop: &Shop, code: &str, amount: i64) -> Value {
    let (s, p) = keyed(
        app,
        "/api/v1/payments",
        &shop.terminal,
        &uuid::Uuid::new_v4().to_string(),
        json!({"code": code, "amount": amount}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    p
}

pub(crate) async fn top_up(app: &TestApp, shop: &Shop, user: &str, amount: i64) {
    let (s, w) = keyed(
        app,
        &format!("/api/v1/users/{user}/wallet/topups"),
        &shop.admin,
        &uuid::Uuid::new_v4().to_string(),
        json!({"amount": amount}),
    )
    .await;
    assert_eq!(s, 201, "{w}");
}

/// A shop (`single_limit`) with one cardholder, `number`, whose wallet holds `amount`:
/// the shop, the cardholder's id and their token.
async fn funded(
    app: &TestApp,
    single_limit: i64,
    number: &str,
    amount: i64,
) -> (Shop, String, String) {
    let shop = shop(app, single_limit).await;
    let (user, me) = person(app, &shop.admin, number).await;
    top_up(app, &shop, &user, amount).await;
    (shop, user, me)
}

/// The ledger check passes, from the seal and from every entry alike.
pub(crate) async fn ledger_balances(app: &TestApp, admin: &str) {
    let (s, check) = app.get("/api/v1/ledger/check", admin).await;
    assert_eq!(s, 200, "{check}");
    assert_eq!(check["balanced"], true, "{check}");
    assert_eq!(check["mismatched_wallets"], json!([]), "{check}");
    assert_eq!(check["mismatched_registers"], json!([]), "{check}");
    // Read a moment later, so background work (a deferred debit asked again, say) may
    // have added entries: as many or more, and the same verdict.
    let (s, full) = app.get("/api/v1/ledger/check?full=true", admin).await;
    assert_eq!(s, 200, "{full}");
    assert_eq!(full["sealed_entries"], 0, "{full}");
    assert_eq!(full["balanced"], true, "{full}");
    assert_eq!(full["mismatched_wallets"], json!([]), "{full}");
    assert_eq!(full["mismatched_registers"], json!([]), "{full}");
    assert!(
        full["entries"].as_u64() >= check["entries"].as_u64(),
        "{full} against {check}"
    );
    let (s, bad) = app.get("/api/v1/ledger/check?full=maybe", admin).await;
    assert_eq!(s, 422, "{bad}");
}

on_both_engines!(
    payments_follow_the_deduction_order_and_refund_to_their_sources,
    every_decline_reason_is_recorded_with_its_reason,
    twenty_concurrent_payments_on_a_1000_fen_wallet_let_exactly_ten_through,
    twenty_concurrent_payments_with_wallet_threads_of_their_own,
    a_replayed_payment_request_answers_the_same_payment_and_another_body_is_409,
    arrears_block_payments_are_reminded_daily_and_lift_on_repayment,
    the_month_end_writes_off_earlier_arrears_only_where_the_tenant_says_so,
    subsidy_rules_need_a_second_admin_and_credit_every_target,
    a_checker_lists_pending_rules_and_rejects_one_with_a_reason,
    three_risk_events_freeze_until_local_midnight_and_a_second_freeze_waits_for_an_admin,
    a_full_wallet_mailbox_answers_503_and_loses_nothing,
    merchant_actors_keep_todays_totals_equal_to_the_ledger_up_the_tree,
    another_tenants_code_is_declined_as_invalid_and_moves_nothing,
    a_used_code_is_kept_while_it_could_be_accepted_then_purged,
    idempotency_records_are_kept_for_their_days_then_purged,
    a_live_wallet_shows_a_subsidy_approved_after_it_loaded,
    a_deferred_debit_the_provider_did_not_answer_is_asked_again_until_it_is,
    concurrent_refunds_of_one_payment_never_return_more_than_it_took,
    a_subsidy_or_coupon_past_its_expiry_is_neither_shown_nor_spent_nor_loaded,
);

/// Ten refunds of one payment at once, each of 60 % of it under its own key: exactly one
/// goes through, the others are refused, and the wallet gets back what the payment took
/// once.
async fn concurrent_refunds_of_one_payment_never_return_more_than_it_took(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 100_000, "R-9", 1_000).await;
    let p = pay(&app, &shop, &code(&app, &me).await, 500).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let id = p["id"].as_str().unwrap();
    let path = format!("/api/v1/payments/{id}/refunds");
    let keys: Vec<String> = (0..10).map(|i| format!("refund-{i}")).collect();
    let attempts = keys
        .iter()
        .map(|k| keyed(&app, &path, &shop.admin, k, json!({"amount": 300})));
    let answers = futures_util::future::join_all(attempts).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{answers:?}"
    );
    for (s, body) in &answers {
        if *s != 201 {
            assert_problem(*s, body, 422, "invalid");
        }
    }
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 1_000 - 500 + 300, "{w}");
    let (_, got) = app
        .get(&format!("/api/v1/payments/{id}"), &shop.admin)
        .await;
    assert_eq!(got["refunded"], 300, "{got}");
    ledger_balances(&app, &shop.admin).await;
}

/// Sets how the sandbox provider treats `user`'s deferred debits.
pub(crate) async fn set_sandbox(
    app: &TestApp,
    admin: &str,
    user: &str,
    body: Value,
) -> (u16, Value) {
    let path = format!("/api/v1/sandbox/provider/users/{user}");
    app.send(reqwest::Method::PUT, &path, Some(admin), Some(body))
        .await
}

/// Asks about stale deferred debits until the node takes this one up again, that is once
/// it has let go of its last ask (within 10 s; `why` says what failed otherwise).
async fn asked_again(app: &TestApp, why: &str) {
    let started = std::time::Instant::now();
    while onecard::deferred::ask_again(&app.state).await.unwrap() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{why}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The payment `id` is still `accepted`, and `user` owes nothing.
async fn accepted_without_arrears(app: &TestApp, admin: &str, id: &str, user: &str) {
    let (_, got) = app.get(&format!("/api/v1/payments/{id}"), admin).await;
    assert_eq!(got["status"], "accepted", "{got}");
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), admin)
        .await;
    assert_eq!(w["arrears"], 0, "{w}");
}

/// A deferred debit the provider could not answer (an outage) leaves the payment
/// `accepted`: not settled, and not in arrears either. The node's sweep asks again about
/// payments accepted over a minute ago, and once the provider is back the payment settles.
async fn a_deferred_debit_the_provider_did_not_answer_is_asked_again_until_it_is(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let (user, me) = person(&app, &shop.admin, "D-9").await;
    let sandbox = |body: Value| set_sandbox(&app, &shop.admin, &user, body);
    let (s, v) = sandbox(json!({"available": 1_000, "unavailable": true})).await;
    assert_eq!((s, v["unavailable"].as_bool()), (200, Some(true)), "{v}");
    let p = pay(&app, &shop, &code(&app, &me).await, 300).await;
    assert_eq!(
        (p["status"].as_str(), p["breakdown"]["deferred"].as_i64()),
        (Some("accepted"), Some(300)),
        "{p}"
    );
    let id = p["id"].as_str().unwrap();
    let ask_again = || onecard::deferred::ask_again(&app.state);
    let never = "the payment was never asked about again";
    assert_eq!(ask_again().await.unwrap(), 0, "accepted a moment ago");
    app.clock.advance(SignedDuration::from_secs(61));
    asked_again(&app, never).await;
    // That ask failed too, and let go: the payment is still accepted, with no arrears.
    asked_again(&app, never).await;
    accepted_without_arrears(&app, &shop.admin, id, &user).await;

    sandbox(json!({"available": 1_000})).await;
    asked_again(&app, never).await;
    app.wait_for(&format!("/api/v1/payments/{id}"), &shop.admin, |p| {
        p["status"] == "succeeded"
    })
    .await;
    app.clock.advance(SignedDuration::from_secs(61));
    assert_eq!(ask_again().await.unwrap(), 0, "nothing is left to ask");
    assert_eq!(
        pay(&app, &shop, &code(&app, &me).await, 800).await["status"],
        "accepted",
        "payments go on"
    );
    ledger_balances(&app, &shop.admin).await;
}

/// A provider that hangs instead of answering (a real one without a timeout of its own,
/// say) is given up on after `ONECARD_PROVIDER_TIMEOUT_MS`: the payment stays `accepted`
/// with no arrears, the node lets go of it, and the sweep asks again, so that once the
/// provider answers again the payment settles. Without the timeout the first ask would
/// hold the payment (and one of the node's provider calls) for as long as the provider
/// hangs.
#[actix_web::test]
async fn a_provider_that_hangs_is_given_up_on_and_asked_again() {
    let Some(app) = spawn_with(Engine::Sqlite, |c| {
        c.provider_timeout = std::time::Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let (user, me) = person(&app, &shop.admin, "D-10").await;
    let sandbox = |body: Value| set_sandbox(&app, &shop.admin, &user, body);
    let (s, v) = sandbox(json!({"available": 1_000, "latency_ms": 60_000})).await;
    assert_eq!(s, 200, "{v}");
    let p = pay(&app, &shop, &code(&app, &me).await, 300).await;
    assert_eq!(p["status"], "accepted", "{p}");
    let id = p["id"].as_str().unwrap();

    app.clock.advance(SignedDuration::from_secs(61));
    asked_again(&app, "the hanging ask was never given up on").await;
    accepted_without_arrears(&app, &shop.admin, id, &user).await;

    sandbox(json!({"available": 1_000})).await;
    asked_again(&app, "the second hanging ask was never given up on").await;
    app.wait_for(&format!("/api/v1/payments/{id}"), &shop.admin, |p| {
        p["status"] == "succeeded"
    })
    .await;
    ledger_balances(&app, &shop.admin).await;
}

/// Two nodes on one PostgreSQL (with the database, dropped last).
pub(crate) async fn two_nodes() -> Option<(TestApp, TestApp, PgDatabase)> {
    let (db, url) = PgDatabase::create().await?;
    // `Engine::Sqlite` only so that each node does not make a database of its own: both
    // are pointed at the one made above.
    let node = |url: String| {
        spawn_with(Engine::Sqlite, move |c| {
            c.database_url = url.into();
            c.master_key = Some("two-nodes-test-master-key-0123456789".to_string().into());
        })
    };
    let a = node(url.clone()).await.expect("node A starts");
    let b = node(url).await.expect("node B starts");
    Some((a, b, db))
}

/// Two nodes on one PostgreSQL: what node B writes to a wallet (a top-up, a freeze) is
/// what node A answers at once, though A still holds that wallet's actor from before.
#[actix_web::test]
async fn a_wallet_live_on_one_node_answers_what_another_node_wrote() {
    let Some((a, b, _db)) = two_nodes().await else {
        return;
    };
    let (shop, user, me) = funded(&a, 100_000, "N-1", 1_000).await;
    let (s, w) = a.get("/api/v1/me/wallet", &me).await;
    assert_eq!((s, w["balance"].as_i64()), (200, Some(1_000)), "{w}");

    top_up(&b, &shop, &user, 500).await;
    let (s, w) = b
        .post(
            &format!("/api/v1/users/{user}/freeze"),
            &shop.admin,
            json!({}),
        )
        .await;
    assert_eq!((s, w["frozen"].as_bool()), (200, Some(true)), "{w}");

    let (s, w) = a.get("/api/v1/me/wallet", &me).await;
    assert_eq!(
        (s, w["balance"].as_i64(), w["frozen"].as_bool()),
        (200, Some(1_500), Some(true)),
        "{w}"
    );
    let (s, body) = a.post("/api/v1/me/payment-codes", &me, json!({})).await;
    assert_problem(s, &body, 403, "frozen");
    ledger_balances(&a, &shop.admin).await;
}

/// Refunds of one payment at once through two nodes, each of 60 % of it under its own
/// key: exactly one goes through, whichever node's wallet actor decided it.
#[actix_web::test]
async fn concurrent_refunds_through_two_nodes_return_what_the_payment_took_once() {
    let Some((a, b, _db)) = two_nodes().await else {
        return;
    };
    let (shop, user, me) = funded(&a, 100_000, "N-2", 1_000).await;
    let p = pay(&a, &shop, &code(&a, &me).await, 500).await;
    let path = format!("/api/v1/payments/{}/refunds", p["id"].as_str().unwrap());
    // Both nodes hold a live copy of the wallet before the refunds arrive.
    for node in [&a, &b] {
        let (s, w) = node
            .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
            .await;
        assert_eq!((s, w["balance"].as_i64()), (200, Some(500)), "{w}");
    }
    let keys: Vec<String> = (0..10).map(|i| format!("refund-{i}")).collect();
    let attempts = keys.iter().enumerate().map(|(i, k)| {
        let node = if i % 2 == 0 { &a } else { &b };
        keyed(node, &path, &shop.admin, k, json!({"amount": 300}))
    });
    let answers = futures_util::future::join_all(attempts).await;
    let ok = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(ok, 1, "{answers:?}");
    let (_, w) = b
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 1_000 - 500 + 300, "{w}");
    ledger_balances(&a, &shop.admin).await;
}

/// A subsidy rule's approval credits every target in one store transaction, past the
/// wallet actors; a cardholder whose wallet actor is already live sees the subsidy at
/// once all the same, and pays with it.
async fn a_live_wallet_shows_a_subsidy_approved_after_it_loaded(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 100_000, "G-1", 1_000).await;
    let (s, w) = app.get("/api/v1/me/wallet", &me).await;
    assert_eq!(
        (
            s,
            w["balance"].as_i64(),
            w["subsidies"].as_array().map(Vec::len)
        ),
        (200, Some(1_000), Some(0)),
        "{w}"
    );
    let rule = json!({"name": "Meal", "amount": 400, "targets": {"user_ids": [user]}});
    assert_eq!(approved_rule(&app, &shop.admin, rule).await, 1);
    for (path, token) in [
        ("/api/v1/me/wallet".to_string(), &me),
        (format!("/api/v1/users/{user}/wallet"), &shop.admin),
    ] {
        let (s, w) = app.get(&path, token).await;
        assert_eq!(s, 200, "{w}");
        assert_eq!(
            (w["balance"].as_i64(), w["subsidies"][0]["balance"].as_i64()),
            (Some(1_000), Some(400)),
            "{path}: {w}"
        );
    }
    let p = pay(&app, &shop, &code(&app, &me).await, 1_300).await;
    assert_eq!(
        (p["status"].as_str(), &p["breakdown"]),
        (
            Some("succeeded"),
            &json!({"coupon": 0, "subsidy": 400, "balance": 900, "deferred": 0})
        ),
        "{p}"
    );
    ledger_balances(&app, &shop.admin).await;
}

/// A subsidy account and a coupon that expire leave the cardholder's wallet as they
/// expire: the live actor stops showing and spending them, and a wallet loaded afterwards
/// (a restart, another node) does not carry the account at all, while the ledger still
/// accounts for what it held.
async fn a_subsidy_or_coupon_past_its_expiry_is_neither_shown_nor_spent_nor_loaded(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 100_000, "X-1", 1_000).await;
    let in_an_hour = (app.clock_now() + SignedDuration::from_hours(1)).to_string();
    let rule = json!({"name": "Lunch", "amount": 500, "targets": {"user_ids": [user]},
                      "expires_at": in_an_hour});
    assert_eq!(approved_rule(&app, &shop.admin, rule).await, 1);
    let (s, _) = app
        .post(
            &format!("/api/v1/users/{user}/wallet/coupons"),
            &shop.admin,
            json!({"name": "Today", "discount": 50, "threshold": 0, "expires_at": in_an_hour}),
        )
        .await;
    assert_eq!(s, 201);
    let p = pay(&app, &shop, &code(&app, &me).await, 150).await;
    assert_eq!(
        p["breakdown"],
        json!({"coupon": 50, "subsidy": 100, "balance": 0, "deferred": 0}),
        "{p}"
    );
    let (_, w) = app.get("/api/v1/me/wallet", &me).await;
    assert_eq!(w["subsidies"][0]["balance"], 400, "{w}");

    app.clock.advance(SignedDuration::from_hours(2));
    let (_, w) = app.get("/api/v1/me/wallet", &me).await;
    assert_eq!(
        (&w["subsidies"], w["balance"].as_i64()),
        (&json!([]), Some(1_000)),
        "{w}"
    );
    let p = pay(&app, &shop, &code(&app, &me).await, 150).await;
    assert_eq!(
        p["breakdown"],
        json!({"coupon": 0, "subsidy": 0, "balance": 150, "deferred": 0}),
        "{p}"
    );
    let loaded = app
        .state
        .store
        .load_wallet(
            app.tenant_of(&shop.admin).await,
            onecard_schema::ids::UserId(user.parse().unwrap()),
            app.clock_now(),
        )
        .await
        .unwrap();
    assert!(loaded.subsidies.is_empty(), "{:?}", loaded.subsidies);
    assert!(loaded.coupons.is_empty(), "{:?}", loaded.coupons);
    ledger_balances(&app, &shop.admin).await;
}

/// Idempotency records, of money paths and of every other POST, replay for
/// `ONECARD_IDEMPOTENCY_KEEP_DAYS` (30 by default); the node's purge then forgets them, and
/// a retry with a forgotten key runs as a new request.
async fn idempotency_records_are_kept_for_their_days_then_purged(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, _) = funded(&app, 5_000, "K-1", 1_000).await;
    let topups = format!("/api/v1/users/{user}/wallet/topups");
    let purge = || async { onecard::idempotency::purge(&app.state).await.unwrap() };
    let balance = || async {
        let (_, w) = app
            .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
            .await;
        w["balance"].clone()
    };
    let top_up = |key: &'static str| {
        let topups = topups.clone();
        let admin = shop.admin.clone();
        let app = &app;
        async move {
            keyed(app, &topups, &admin, key, json!({"amount": 10}))
                .await
                .0
        }
    };
    let tag = |key: &'static str, name: &'static str| {
        let admin = shop.admin.clone();
        let app = &app;
        async move {
            keyed(app, "/api/v1/tags", &admin, key, json!({"name": name}))
                .await
                .0
        }
    };
    assert_eq!(top_up("old").await, 201);
    assert_eq!(tag("tag-old", "Old").await, 201);
    app.clock.advance(SignedDuration::from_hours(24 * 20));
    assert_eq!(top_up("recent").await, 201);
    assert_eq!(tag("tag-recent", "Recent").await, 201);
    assert_eq!(
        purge().await,
        onecard::idempotency::Purged::default(),
        "nothing is 30 days old yet"
    );
    assert_eq!(
        (top_up("old").await, tag("tag-old", "Old").await),
        (200, 200)
    );
    assert_eq!(balance().await, json!(1_020));

    app.clock.advance(SignedDuration::from_hours(24 * 11));
    assert_eq!(
        purge().await,
        onecard::idempotency::Purged {
            requests: 1,
            money: 2
        },
        "the first day's records go: the tag's, the setup's top-up and the old top-up"
    );
    assert_eq!(purge().await, onecard::idempotency::Purged::default());
    // A forgotten key runs anew: the tag is refused as a new request for it would be
    // (its name is taken). The old top-up's record is gone from the store, which the
    // store tests show frees its key; its wallet actor, still running, may remember the
    // answer for a while longer, which only replays it. Recent keys still replay.
    assert_eq!(tag("tag-old", "Old").await, 409);
    assert_eq!(
        (top_up("recent").await, tag("tag-recent", "Recent").await),
        (200, 200)
    );
    assert_eq!(balance().await, json!(1_020));
    ledger_balances(&app, &shop.admin).await;
}

/// The store keeps a used code's nonce while the code could still be accepted, and the
/// node's purge forgets it after `USED_CODE_KEEP`; a purged code stays refused, as
/// expired.
async fn a_used_code_is_kept_while_it_could_be_accepted_then_purged(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (at, user, me) = funded(&app, 5_000, "P-1", 1_000).await;
    let c = code(&app, &me).await;
    let purge = || async {
        onecard::api::payments::purge_used_codes(&app.state)
            .await
            .unwrap()
    };
    let reason = |p: Value| (p["status"].clone(), p["decline_reason"].clone());
    assert_eq!(pay(&app, &at, &c, 100).await["status"], "succeeded");
    assert_eq!(purge().await, 0, "a fresh used code stays");
    assert_eq!(
        reason(pay(&app, &at, &c, 100).await),
        (json!("declined"), json!("code_reused"))
    );
    app.clock.advance(SignedDuration::from_mins(3));
    assert_eq!(purge().await, 0, "kept well past the code's life");
    app.clock.advance(SignedDuration::from_mins(8));
    assert_eq!(purge().await, 1, "gone after USED_CODE_KEEP");
    assert_eq!(
        reason(pay(&app, &at, &c, 100).await),
        (json!("declined"), json!("code_expired"))
    );
    let (s, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &at.admin)
        .await;
    assert_eq!((s, &w["balance"]), (200, &json!(900)), "{w}");
    ledger_balances(&app, &at.admin).await;
}

/// A code of another tenant's cardholder verifies (one master key signs every tenant's
/// codes) but names no user of this tenant: the till gets a declined `code_invalid`
/// payment that belongs to no wallet; the code stays usable at its own tenant's tills.
async fn another_tenants_code_is_declined_as_invalid_and_moves_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let here = shop(&app, 5_000).await;
    let there = shop(&app, 5_000).await;
    let (user, me) = person(&app, &there.admin, "X-1").await;
    top_up(&app, &there, &user, 1_000).await;
    let c = code(&app, &me).await;

    let p = pay(&app, &here, &c, 100).await;
    assert_eq!(
        (&p["status"], &p["decline_reason"], &p["user_id"]),
        (&json!("declined"), &json!("code_invalid"), &Value::Null),
        "{p}"
    );
    let (s, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &there.admin)
        .await;
    assert_eq!((s, &w["balance"]), (200, &json!(1_000)), "{w}");
    let p = pay(&app, &there, &c, 100).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    ledger_balances(&app, &here.admin).await;
    ledger_balances(&app, &there.admin).await;
}

/// Payments, declines and refunds at two stalls of one hall, through the live merchant
/// actors; then every merchant's totals (own and roll-up) equal the store's, computed from
/// payments and ledger entries.
async fn merchant_actors_keep_todays_totals_equal_to_the_ledger_up_the_tree(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let hall = shop(&app, 100_000).await;
    let admin = hall.admin.clone();
    let mut stalls = Vec::new();
    for name in ["Noodles", "Rice"] {
        let (s, m) = app
            .post(
                "/api/v1/merchants",
                &admin,
                json!({"name": name, "parent_id": hall.merchant, "single_limit": 100_000}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        let id = m["id"].as_str().unwrap().to_string();
        let (s, t) = app
            .post(
                &format!("/api/v1/merchants/{id}/terminals"),
                &admin,
                json!({"name": "Till"}),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        stalls.push(Shop {
            admin: admin.clone(),
            merchant: id,
            terminal: t["token"].as_str().unwrap().into(),
            terminal_id: t["id"].as_str().unwrap().into(),
        });
    }
    // Ask once first, so the actors load before the payments and then follow events.
    let (s, _) = app
        .get(
            &format!("/api/v1/merchants/{}/totals", hall.merchant),
            &admin,
        )
        .await;
    assert_eq!(s, 200);
    let (user, me) = person(&app, &admin, "MT-1").await;
    top_up(&app, &hall, &user, 50_000).await;
    let mut paid = Vec::new();
    for (i, amount) in [120, 340, 560, 780, 90, 1_000].iter().enumerate() {
        let at = [&hall, &stalls[0], &stalls[1]][i % 3];
        let p = pay(&app, at, &code(&app, &me).await, *amount).await;
        assert_eq!(p["status"], "succeeded");
        paid.push(p["id"].as_str().unwrap().to_string());
    }
    let reused = code(&app, &me).await;
    pay(&app, &stalls[0], &reused, 50).await;
    assert_eq!(
        pay(&app, &stalls[0], &reused, 50).await["status"],
        "declined"
    );
    for (id, body) in [(&paid[1], json!({"amount": 40})), (&paid[2], json!({}))] {
        let (s, r) = keyed(
            &app,
            &format!("/api/v1/payments/{id}/refunds"),
            &admin,
            &uuid::Uuid::new_v4().to_string(),
            body,
        )
        .await;
        assert_eq!(s, 201, "{r}");
    }
    let tenant = app.tenant_of(&admin).await;
    let policy = app.state.policy(tenant).await.unwrap();
    let date = app.clock_now().to_zoned(policy.tz.clone()).date();
    let (from, to) = app.state.local_day(&policy, date);
    let ledger = |m: &str| {
        let id = onecard_schema::ids::MerchantId(m.parse().unwrap());
        let store = app.state.store.clone();
        async move { store.merchant_totals(tenant, id, from, to).await.unwrap() }
    };
    let as_json = |t: &onecard_schema::wallet::Totals| {
        json!({"gross": t.gross.0, "refunds": t.refunds.0, "count": t.count,
               "by_source": {"coupon": t.by_source.coupon.0, "subsidy": t.by_source.subsidy.0,
                             "balance": t.by_source.balance.0, "deferred": t.by_source.deferred.0}})
    };
    let mut rollup = json!({"gross": 0, "refunds": 0, "count": 0});
    for m in [&hall.merchant, &stalls[0].merchant, &stalls[1].merchant] {
        let want = as_json(&ledger(m).await);
        for k in ["gross", "refunds", "count"] {
            rollup[k] = json!(rollup[k].as_i64().unwrap() + want[k].as_i64().unwrap());
        }
        let got = app
            .wait_for(&format!("/api/v1/merchants/{m}/totals"), &admin, |t| {
                ["gross", "refunds", "count", "by_source"]
                    .iter()
                    .all(|k| t[*k] == want[*k])
            })
            .await;
        assert!(want["count"].as_i64().unwrap() >= 2, "{want}");
        assert!(
            got["rollup"]["count"].as_i64() >= got["count"].as_i64(),
            "{got}"
        );
    }
    let hall_totals = app
        .get(
            &format!("/api/v1/merchants/{}/totals", hall.merchant),
            &admin,
        )
        .await
        .1;
    for k in ["gross", "refunds", "count"] {
        assert_eq!(hall_totals["rollup"][k], rollup[k], "{hall_totals}");
    }
    assert_eq!(rollup["gross"], 120 + 340 + 560 + 780 + 90 + 1_000 + 50);
    assert_eq!(rollup["refunds"], 40 + 560);
    ledger_balances(&app, &admin).await;
}

async fn payments_follow_the_deduction_order_and_refund_to_their_sources(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 100_000, "P-1", 1_000).await;
    let soon = (app.clock_now() + SignedDuration::from_hours(24)).to_string();
    let later = (app.clock_now() + SignedDuration::from_hours(48)).to_string();
    // Two coupons: the one expiring sooner wins even though it is smaller.
    let (s, _) = app
        .post(
            &format!("/api/v1/users/{user}/wallet/coupons"),
            &shop.admin,
            json!({"name": "Soon", "discount": 100, "threshold": 500, "expires_at": soon}),
        )
        .await;
    assert_eq!(s, 201);
    app.post(
        &format!("/api/v1/users/{user}/wallet/coupons"),
        &shop.admin,
        json!({"name": "Later", "discount": 300, "threshold": 0, "expires_at": later}),
    )
    .await;
    let rule = json!({"name": "Meal", "amount": 400, "targets": {"user_ids": [user]}, "merchant_ids": [shop.merchant]});
    assert_eq!(approved_rule(&app, &shop.admin, rule).await, 1);

    // 2,000 = coupon 100 + subsidy 400 + cash 1,000 + deferred 500.
    let p = pay(&app, &shop, &code(&app, &me).await, 2_000).await;
    assert_eq!(p["status"], "accepted", "{p}");
    assert_eq!(
        p["breakdown"],
        json!({"coupon": 100, "subsidy": 400, "balance": 1000, "deferred": 500})
    );
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 0);
    let coupons: Vec<(String, bool)> = w["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["used"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        coupons,
        [("Soon".to_string(), true), ("Later".to_string(), false)]
    );

    // The sandbox collects the deferred part: the payment settles.
    let id = p["id"].as_str().unwrap();
    let settled = app
        .wait_for(&format!("/api/v1/payments/{id}"), &shop.admin, |p| {
            p["status"] == "succeeded"
        })
        .await;
    assert_eq!(settled["status"], "succeeded");

    // A partial refund of 700 returns the deferred 500, then 200 of the cash.
    let (s, r) = keyed(
        &app,
        &format!("/api/v1/payments/{id}/refunds"),
        &shop.admin,
        "r-1",
        json!({"amount": 700}),
    )
    .await;
    assert_eq!(
        (s, r["status"].as_str(), r["refunded"].as_i64()),
        (201, Some("partially_refunded"), Some(700)),
        "{r}"
    );
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 200);
    // The rest: cash 800, the subsidy 400 back to its account, and the coupon revived.
    let (s, r) = keyed(
        &app,
        &format!("/api/v1/payments/{id}/refunds"),
        &shop.admin,
        "r-2",
        json!({}),
    )
    .await;
    assert_eq!((s, r["status"].as_str()), (201, Some("refunded")), "{r}");
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 1_000);
    assert_eq!(w["subsidies"][0]["balance"], 400);
    assert!(
        w["coupons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["used"] == false),
        "{w}"
    );
    let (s, body) = keyed(
        &app,
        &format!("/api/v1/payments/{id}/refunds"),
        &shop.admin,
        "r-3",
        json!({}),
    )
    .await;
    assert_problem(s, &body, 409, "not_refundable");

    // Totals for today equal what the ledger says the merchant is owed (the merchant
    // actor follows events, so it catches up a moment after the 201).
    let totals = app
        .wait_for(
            &format!("/api/v1/merchants/{}/totals", shop.merchant),
            &shop.admin,
            |t| t["refunds"] == 2_000,
        )
        .await;
    assert_eq!(
        (
            totals["gross"].as_i64(),
            totals["refunds"].as_i64(),
            totals["count"].as_i64()
        ),
        (Some(2_000), Some(2_000), Some(1)),
        "{totals}"
    );
    assert_eq!(
        totals["by_source"],
        json!({"coupon": 100, "subsidy": 400, "balance": 1000, "deferred": 500})
    );
    assert_eq!(totals["rollup"]["gross"], 2_000);
    ledger_balances(&app, &shop.admin).await;
}

async fn every_decline_reason_is_recorded_with_its_reason(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 5_000, "D-1", 10_000).await;
    let reason = |p: &Value| {
        (
            p["status"].as_str().unwrap().to_string(),
            p["decline_reason"].as_str().unwrap_or("").to_string(),
        )
    };
    let declined = |r: &str| ("declined".to_string(), r.to_string());

    assert_eq!(
        reason(&pay(&app, &shop, "not-a-code", 100).await),
        declined("code_invalid")
    );
    assert_eq!(
        reason(&pay(&app, &shop, &code(&app, &me).await, 5_001).await),
        declined("over_limit")
    );
    let used = code(&app, &me).await;
    assert_eq!(
        reason(&pay(&app, &shop, &used, 100).await),
        ("succeeded".into(), String::new())
    );
    assert_eq!(
        reason(&pay(&app, &shop, &used, 100).await),
        declined("code_reused")
    );
    let old = code(&app, &me).await;
    app.clock.advance(SignedDuration::from_secs(121));
    assert_eq!(
        reason(&pay(&app, &shop, &old, 100).await),
        declined("code_expired")
    );

    // A person without the agreement and without funds: insufficient_funds.
    let (poor, poor_token) = {
        let u = app.user(&shop.admin, "D-2").await;
        let id = u["id"].as_str().unwrap().to_string();
        let (_, t) = app
            .post(
                &format!("/api/v1/users/{id}/tokens"),
                &shop.admin,
                json!({}),
            )
            .await;
        (id, t["token"].as_str().unwrap().to_string())
    };
    let (s, body) = app
        .post("/api/v1/me/payment-codes", &poor_token, json!({}))
        .await;
    assert_problem(s, &body, 403, "agreement_required");
    app.patch(
        "/api/v1/tenant",
        &shop.admin,
        json!({"settings": {"require_agreement": false}}),
    )
    .await;
    assert_eq!(
        reason(&pay(&app, &shop, &code(&app, &poor_token).await, 100).await),
        declined("insufficient_funds")
    );

    // card_inactive: a suspended cardholder's code is declined.
    let c = code(&app, &poor_token).await;
    app.patch(
        &format!("/api/v1/users/{poor}"),
        &shop.admin,
        json!({"status": "suspended"}),
    )
    .await;
    assert_eq!(
        reason(&pay(&app, &shop, &c, 100).await),
        declined("card_inactive")
    );

    // frozen: an admin freeze declines payments and refuses new codes.
    let c = code(&app, &me).await;
    app.post(
        &format!("/api/v1/users/{user}/freeze"),
        &shop.admin,
        json!({}),
    )
    .await;
    assert_eq!(reason(&pay(&app, &shop, &c, 100).await), declined("frozen"));
    let (s, body) = app.post("/api/v1/me/payment-codes", &me, json!({})).await;
    assert_problem(s, &body, 403, "frozen");
    app.post(
        &format!("/api/v1/users/{user}/unfreeze"),
        &shop.admin,
        json!({}),
    )
    .await;

    // arrears: a deferred debit the provider declines.
    let (s, _) = set_sandbox(&app, &shop.admin, &user, json!({"available": 0})).await;
    assert_eq!(s, 200);
    let p = pay(&app, &shop, &code(&app, &me).await, 5_000).await; // balance 9,900: no deferred part
    assert_eq!(p["status"], "succeeded");
    let p = pay(&app, &shop, &code(&app, &me).await, 5_000).await; // 4,900 cash + 100 deferred
    let id = p["id"].as_str().unwrap();
    app.wait_for(&format!("/api/v1/payments/{id}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    assert_eq!(
        reason(&pay(&app, &shop, &code(&app, &me).await, 10).await),
        declined("arrears")
    );

    let (_, list) = app
        .get("/api/v1/payments?status=declined&limit=50", &shop.admin)
        .await;
    let mut reasons: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["decline_reason"].as_str().unwrap().to_string())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "arrears",
            "card_inactive",
            "code_expired",
            "code_invalid",
            "code_reused",
            "frozen",
            "insufficient_funds",
            "over_limit"
        ]
    );
    ledger_balances(&app, &shop.admin).await;
}

async fn twenty_concurrent_payments_on_a_1000_fen_wallet_let_exactly_ten_through(engine: Engine) {
    twenty_concurrent_payments(engine, 0).await;
}

/// The same with the wallet actors on threads of their own instead of the commit thread.
async fn twenty_concurrent_payments_with_wallet_threads_of_their_own(engine: Engine) {
    twenty_concurrent_payments(engine, 2).await;
}

async fn twenty_concurrent_payments(engine: Engine, wallet_threads: usize) {
    let Some(app) = spawn_with(engine, |c| c.wallet_threads = wallet_threads).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let (user, _) = person(&app, &shop.admin, "C-1").await;
    // Without the agreement nothing can be deferred: the wallet's 1,000 fen is all there is.
    let u = app.user(&shop.admin, "C-2").await;
    let plain = u["id"].as_str().unwrap().to_string();
    let (_, t) = app
        .post(
            &format!("/api/v1/users/{plain}/tokens"),
            &shop.admin,
            json!({}),
        )
        .await;
    let plain_token = t["token"].as_str().unwrap().to_string();
    app.patch(
        "/api/v1/tenant",
        &shop.admin,
        json!({"settings": {"require_agreement": false}}),
    )
    .await;
    top_up(&app, &shop, &plain, 1_000).await;
    let _ = user;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(code(&app, &plain_token).await);
    }
    let futures = codes.iter().map(|c| pay(&app, &shop, c, 100));
    let results = futures::future::join_all(futures).await;
    let ok = results
        .iter()
        .filter(|p| p["status"] == "succeeded")
        .count();
    let declined = results
        .iter()
        .filter(|p| p["decline_reason"] == "insufficient_funds")
        .count();
    assert_eq!((ok, declined), (10, 10));
    let (_, w) = app
        .get(&format!("/api/v1/users/{plain}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 0);
    ledger_balances(&app, &shop.admin).await;
}

async fn a_replayed_payment_request_answers_the_same_payment_and_another_body_is_409(
    engine: Engine,
) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 5_000, "I-1", 1_000).await;
    let c = code(&app, &me).await;
    let body = json!({"code": c, "amount": 300});
    let (s1, first) = keyed(
        &app,
        "/api/v1/payments",
        &shop.terminal,
        "till-1-0001",
        body.clone(),
    )
    .await;
    let (s2, again) = keyed(
        &app,
        "/api/v1/payments",
        &shop.terminal,
        "till-1-0001",
        body.clone(),
    )
    .await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first, again);
    assert_eq!(first["status"], "succeeded");
    let (s, conflict) = keyed(
        &app,
        "/api/v1/payments",
        &shop.terminal,
        "till-1-0001",
        json!({"code": c, "amount": 301}),
    )
    .await;
    assert_problem(s, &conflict, 409, "idempotency_conflict");
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 700, "charged once");
    // Top-ups are idempotent too, and a key is required on every money path.
    let path = format!("/api/v1/users/{user}/wallet/topups");
    let (s1, _) = keyed(&app, &path, &shop.admin, "topup-1", json!({"amount": 50})).await;
    let (s2, _) = keyed(&app, &path, &shop.admin, "topup-1", json!({"amount": 50})).await;
    assert_eq!((s1, s2), (201, 200));
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(w["balance"], 750);
    let (s, body) = app.post(&path, &shop.admin, json!({"amount": 50})).await;
    assert_problem(s, &body, 400, "idempotency_key_required");
    let (s, body) = app
        .post(
            "/api/v1/payments",
            &shop.terminal,
            json!({"code": c, "amount": 1}),
        )
        .await;
    assert_problem(s, &body, 400, "idempotency_key_required");
    // An invalid code is recorded once, however often it is retried.
    let (s1, a) = keyed(
        &app,
        "/api/v1/payments",
        &shop.terminal,
        "bad-1",
        json!({"code": "junk", "amount": 5}),
    )
    .await;
    let (s2, b) = keyed(
        &app,
        "/api/v1/payments",
        &shop.terminal,
        "bad-1",
        json!({"code": "junk", "amount": 5}),
    )
    .await;
    assert_eq!((s1, s2, a["id"].clone()), (201, 200, b["id"].clone()));
    ledger_balances(&app, &shop.admin).await;
}

async fn arrears_block_payments_are_reminded_daily_and_lift_on_repayment(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let (user, me) = person(&app, &shop.admin, "A-1").await;
    set_sandbox(&app, &shop.admin, &user, json!({"available": 100})).await;
    let p = pay(&app, &shop, &code(&app, &me).await, 300).await;
    assert_eq!(
        (p["status"].as_str(), p["breakdown"]["deferred"].as_i64()),
        (Some("accepted"), Some(300))
    );
    let id = p["id"].as_str().unwrap();
    app.wait_for(&format!("/api/v1/payments/{id}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    let (_, owed) = app
        .get(&format!("/api/v1/users/{user}/arrears"), &shop.admin)
        .await;
    assert_eq!(
        (
            owed["arrears"].as_i64(),
            owed["payments"].as_array().unwrap().len()
        ),
        (Some(300), 1)
    );
    assert_eq!(
        pay(&app, &shop, &code(&app, &me).await, 10).await["decline_reason"],
        "arrears"
    );

    assert_eq!(
        onecard::api::arrears::remind_arrears(&app.state)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        onecard::api::arrears::remind_arrears(&app.state)
            .await
            .unwrap(),
        0,
        "once a day"
    );
    app.clock.advance(SignedDuration::from_hours(24));
    assert_eq!(
        onecard::api::arrears::remind_arrears(&app.state)
            .await
            .unwrap(),
        1,
        "and again the next day"
    );

    let (s, w) = keyed(&app, "/api/v1/me/arrears/repay", &me, "repay-1", json!({})).await;
    assert_eq!((s, w["arrears"].as_i64()), (200, Some(0)), "{w}");
    let (_, settled) = app
        .get(&format!("/api/v1/payments/{id}"), &shop.admin)
        .await;
    assert_eq!(settled["status"], "succeeded");
    let (s, body) = keyed(&app, "/api/v1/me/arrears/repay", &me, "repay-2", json!({})).await;
    assert_problem(s, &body, 409, "no_arrears");
    // Money history is never deleted with its user.
    let (s, body) = app
        .delete(&format!("/api/v1/users/{user}"), &shop.admin)
        .await;
    assert_problem(s, &body, 409, "user_has_wallet");
    assert_eq!(
        onecard::api::arrears::remind_arrears(&app.state)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        pay(&app, &shop, &code(&app, &me).await, 10).await["status"],
        "accepted",
        "the block is lifted"
    );
    ledger_balances(&app, &shop.admin).await;
}

/// A payment of `amount` that the sandbox provider declines: `user` owes it. Answers its id.
async fn owed(app: &TestApp, shop: &Shop, user: &str, me: &str, amount: i64) -> String {
    set_sandbox(app, &shop.admin, user, json!({"available": 0})).await;
    let p = pay(app, shop, &code(app, me).await, amount).await;
    assert_eq!(p["status"], "accepted", "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{id}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    id
}

async fn arrears_of(app: &TestApp, admin: &str, user: &str) -> i64 {
    let (s, owed) = app
        .get(&format!("/api/v1/users/{user}/arrears"), admin)
        .await;
    assert_eq!(s, 200, "{owed}");
    owed["arrears"].as_i64().unwrap()
}

/// Sets the tenant's `arrears_at_month_end`; the answer.
async fn month_end_policy(app: &TestApp, admin: &str, policy: &str) -> (u16, Value) {
    let body = json!({"settings": {"arrears_at_month_end": policy}});
    app.patch("/api/v1/tenant", admin, body).await
}

/// SPEC §7: at the month-end cut-off (the first local midnight of a month) a tenant that
/// writes arrears off writes off what became owed before it, and the block lifts; what
/// became owed after it waits for the next cut-off. A tenant that carries arrears over
/// (the default) keeps them, and switching to `write_off` takes effect at the next
/// cut-off, not at once.
async fn the_month_end_writes_off_earlier_arrears_only_where_the_tenant_says_so(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let write_off = || onecard::api::arrears::write_off_arrears(&app.state);
    let shop = shop(&app, 5_000).await;
    let (user, me) = person(&app, &shop.admin, "W-1").await;
    let first = owed(&app, &shop, &user, &me, 300).await;

    // Carried over: a month later it is still owed.
    app.clock.advance(SignedDuration::from_hours(24 * 32));
    assert_eq!(write_off().await.unwrap(), 0);
    assert_eq!(arrears_of(&app, &shop.admin, &user).await, 300);

    let (s, body) = month_end_policy(&app, &shop.admin, "forgive").await;
    assert_eq!(s, 422, "{body}");
    let (s, t) = month_end_policy(&app, &shop.admin, "write_off").await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["settings"]["arrears_at_month_end"], "write_off", "{t}");
    let since = t["settings"]["arrears_write_off_since"].clone();
    assert!(since.is_string(), "{t}");
    assert_eq!(write_off().await.unwrap(), 0, "not before the next cut-off");
    assert_eq!(arrears_of(&app, &shop.admin, &user).await, 300);
    let (_, t) = month_end_policy(&app, &shop.admin, "write_off").await;
    assert_eq!(
        t["settings"]["arrears_write_off_since"], since,
        "in force since then"
    );
    app.clock.advance(SignedDuration::from_hours(24 * 32));

    let mut card = Ws::connect(&app.base, &me).await;
    card.subscribe(&format!("user:{user}"), None).await;
    let mut till = Ws::connect(&app.base, &shop.terminal).await;
    till.subscribe(&format!("terminal:{}", shop.terminal_id), None)
        .await;
    assert_eq!(write_off().await.unwrap(), 1);
    assert_eq!(write_off().await.unwrap(), 0, "once");
    assert_eq!(arrears_of(&app, &shop.admin, &user).await, 0);
    let (_, p) = app
        .get(&format!("/api/v1/payments/{first}"), &shop.admin)
        .await;
    assert_eq!(p["status"], "written_off", "{p}");
    let kinds = [card.next().await, card.next().await];
    assert_eq!(
        (kinds[0]["type"].as_str(), kinds[0]["data"]["id"].as_str()),
        (Some("payment.written_off"), Some(first.as_str())),
        "{kinds:?}"
    );
    assert_eq!(kinds[1]["type"], "arrears.written_off", "{kinds:?}");
    assert_eq!(
        (
            kinds[1]["data"]["amount"].as_i64(),
            kinds[1]["data"]["arrears"].as_i64()
        ),
        (Some(300), Some(0))
    );
    assert_eq!(till.next_within(300).await, None, "no receipt at the till");
    assert_eq!(
        onecard::api::arrears::remind_arrears(&app.state)
            .await
            .unwrap(),
        0,
        "nothing left to remind of"
    );

    // Owed again, in the new month: it stays until the next cut-off, and blocks.
    let second = owed(&app, &shop, &user, &me, 200).await;
    assert_eq!(write_off().await.unwrap(), 0);
    assert_eq!(arrears_of(&app, &shop.admin, &user).await, 200);
    assert_eq!(
        pay(&app, &shop, &code(&app, &me).await, 10).await["decline_reason"],
        "arrears"
    );
    app.clock.advance(SignedDuration::from_hours(24 * 32));
    assert_eq!(write_off().await.unwrap(), 1);
    let (_, p) = app
        .get(&format!("/api/v1/payments/{second}"), &shop.admin)
        .await;
    assert_eq!(p["status"], "written_off", "{p}");
    let (s, list) = app
        .get(
            &format!("/api/v1/payments?user_id={user}&status=written_off"),
            &shop.admin,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    // A written-off payment is not refundable; repaying finds nothing owed.
    let (s, body) = keyed(
        &app,
        &format!("/api/v1/payments/{second}/refunds"),
        &shop.admin,
        "refund-w",
        json!({}),
    )
    .await;
    assert_problem(s, &body, 409, "not_refundable");
    let (s, body) = keyed(&app, "/api/v1/me/arrears/repay", &me, "repay-w", json!({})).await;
    assert_problem(s, &body, 409, "no_arrears");
    set_sandbox(&app, &shop.admin, &user, json!({"available": 100_000})).await;
    assert_eq!(
        pay(&app, &shop, &code(&app, &me).await, 10).await["status"],
        "accepted",
        "the block is lifted"
    );
    let (_, t) = month_end_policy(&app, &shop.admin, "carry_over").await;
    assert_eq!(
        t["settings"],
        json!({"require_agreement": true, "refund_expired_to_cash": false,
            "arrears_at_month_end": "carry_over"})
    );
    ledger_balances(&app, &shop.admin).await;
}

async fn subsidy_rules_need_a_second_admin_and_credit_every_target(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let (_, d) = app
        .post(
            "/api/v1/departments",
            &shop.admin,
            json!({"name": "Teaching"}),
        )
        .await;
    let (_, sub) = app
        .post(
            "/api/v1/departments",
            &shop.admin,
            json!({"name": "Maths", "parent_id": d["id"]}),
        )
        .await;
    let mut csv = String::from(
        "onecard-users-template,v1\nname,number,phone,id_number,department,tags,identity\n",
    );
    for i in 0..300 {
        let dept = if i % 3 == 0 { "Teaching/Maths" } else { "" };
        let identity = if i % 3 == 1 { "teacher" } else { "student" };
        csv.push_str(&format!("P{i},N{i:04},,,{dept},,{identity}\n"));
    }
    let (s, _) = app.upload(&shop.admin, "u.csv", csv.into_bytes()).await;
    assert_eq!(s, 201);
    let _ = sub;
    let (s, rule) = app
        .post("/api/v1/subsidy-rules", &shop.admin, json!({"name": "Winter", "amount": 250, "targets": {"department_ids": [d["id"]], "identities": ["teacher"]}}))
        .await;
    assert_eq!(
        (s, rule["status"].as_str()),
        (201, Some("pending")),
        "{rule}"
    );
    let rule_id = rule["id"].as_str().unwrap();
    let (s, body) = app
        .post(
            &format!("/api/v1/subsidy-rules/{rule_id}/approve"),
            &shop.admin,
            json!({}),
        )
        .await;
    assert_problem(s, &body, 403, "maker_checker");
    let second = second_admin(&app, &shop.admin).await;
    let (s, done) = app
        .post(
            &format!("/api/v1/subsidy-rules/{rule_id}/approve"),
            &second,
            json!({}),
        )
        .await;
    // Members of Teaching's subtree (100) and the teachers (100).
    assert_eq!(
        (s, done["credited_users"].as_u64()),
        (200, Some(200)),
        "{done}"
    );
    let (s, body) = app
        .post(
            &format!("/api/v1/subsidy-rules/{rule_id}/approve"),
            &second,
            json!({}),
        )
        .await;
    assert_problem(s, &body, 409, "not_pending");
    ledger_balances(&app, &shop.admin).await;
}

async fn a_checker_lists_pending_rules_and_rejects_one_with_a_reason(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let person = app.user(&shop.admin, "SUB-1").await;
    let checker = second_admin(&app, &shop.admin).await;
    let propose = |name: &'static str| {
        let (app, admin, user) = (&app, shop.admin.clone(), person["id"].clone());
        async move {
            let (s, r) = app
                .post(
                    "/api/v1/subsidy-rules",
                    &admin,
                    json!({"name": name, "amount": 300, "targets": {"user_ids": [user]}}),
                )
                .await;
            assert_eq!(s, 201, "{r}");
            r["id"].as_str().unwrap().to_string()
        }
    };
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r["name"].as_str().unwrap(),
                    r["status"].as_str().unwrap()
                )
            })
            .collect()
    };
    let (a, b, c) = (propose("A").await, propose("B").await, propose("C").await);

    // The checker's queue, newest first.
    let (s, list) = app
        .get("/api/v1/subsidy-rules?status=pending", &checker)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(names(&list), ["C:pending", "B:pending", "A:pending"]);

    // A checker rejects with a reason; the maker withdraws another the same way.
    let reject = |id: String, token: String, reason: &'static str| {
        let app = &app;
        async move {
            app.post(
                &format!("/api/v1/subsidy-rules/{id}/reject"),
                &token,
                json!({"reason": reason}),
            )
            .await
        }
    };
    let (s, r) = reject(a.clone(), checker.clone(), "300 is per term, not per month").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (
            r["status"].as_str(),
            r["reject_reason"].as_str(),
            r["credited_users"].as_u64()
        ),
        (
            Some("rejected"),
            Some("300 is per term, not per month"),
            Some(0)
        ),
        "{r}"
    );
    assert!(
        r["rejected_by"].is_string() && r["rejected_at"].is_string(),
        "{r}"
    );
    let (s, r) = reject(b.clone(), shop.admin.clone(), "proposed twice").await;
    assert_eq!((s, r["status"].as_str()), (200, Some("rejected")), "{r}");
    let (s, r) = app
        .get(&format!("/api/v1/subsidy-rules/{a}"), &shop.admin)
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("rejected")), "{r}");

    // A rejected rule is never approved, nor rejected again; bad input changes nothing.
    let (s, p) = app
        .post(
            &format!("/api/v1/subsidy-rules/{a}/approve"),
            &checker,
            json!({}),
        )
        .await;
    assert_problem(s, &p, 409, "not_pending");
    let (s, p) = reject(a.clone(), checker.clone(), "again").await;
    assert_problem(s, &p, 409, "not_pending");
    let (s, p) = app
        .post(
            &format!("/api/v1/subsidy-rules/{c}/reject"),
            &checker,
            json!({"reason": ""}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app
        .post(
            &format!("/api/v1/subsidy-rules/{c}/reject"),
            &checker,
            json!({}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, _) = reject(uuid::Uuid::now_v7().to_string(), checker.clone(), "no such").await;
    assert_eq!(s, 404);
    let (s, p) = app.get("/api/v1/subsidy-rules?status=lost", &checker).await;
    assert_problem(s, &p, 422, "invalid");

    // C is approved; the lists by state, and all of them a page at a time.
    let (s, done) = app
        .post(
            &format!("/api/v1/subsidy-rules/{c}/approve"),
            &checker,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, done["credited_users"].as_u64()),
        (200, Some(1)),
        "{done}"
    );
    for (status, want) in [
        ("pending", vec![]),
        ("effective", vec!["C:effective"]),
        ("rejected", vec!["B:rejected", "A:rejected"]),
    ] {
        let (_, list) = app
            .get(&format!("/api/v1/subsidy-rules?status={status}"), &checker)
            .await;
        assert_eq!(names(&list), want, "{status}");
    }
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = app
            .get(&format!("/api/v1/subsidy-rules?limit=1{cursor}"), &checker)
            .await;
        assert_eq!(s, 200, "{page}");
        all.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(all, ["C:effective", "B:rejected", "A:rejected"]);
    let (_, wallet) = app
        .get(
            &format!("/api/v1/users/{}/wallet", person["id"].as_str().unwrap()),
            &shop.admin,
        )
        .await;
    assert_eq!(
        wallet["subsidies"].as_array().map(Vec::len),
        Some(1),
        "only C credited: {wallet}"
    );

    // An approval and a rejection at once: exactly one of them happens.
    let mut rejections = 2;
    for round in 0..4 {
        let id = propose("Race").await;
        let approve_path = format!("/api/v1/subsidy-rules/{id}/approve");
        let (approved, rejected) = tokio::join!(
            app.post(&approve_path, &checker, json!({})),
            reject(id.clone(), shop.admin.clone(), "withdrawn")
        );
        let statuses = (approved.0, rejected.0);
        assert!(
            statuses == (200, 409) || statuses == (409, 200),
            "round {round}: {approved:?} {rejected:?}"
        );
        let (_, r) = app
            .get(&format!("/api/v1/subsidy-rules/{id}"), &checker)
            .await;
        let want = if approved.0 == 200 {
            "effective"
        } else {
            rejections += 1;
            "rejected"
        };
        assert_eq!(r["status"], want, "round {round}: {r}");
    }
    let (s, audit) = app
        .get(
            "/api/v1/audit?action=subsidy_rule.reject&limit=50",
            &shop.admin,
        )
        .await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        rejections,
        "{audit}"
    );
    ledger_balances(&app, &shop.admin).await;
}

/// Proposes `rule` as `admin` and has a second admin approve it: how many it credited.
pub(crate) async fn approved_rule(app: &TestApp, admin: &str, rule: Value) -> u64 {
    let (s, created) = app.post("/api/v1/subsidy-rules", admin, rule).await;
    assert_eq!(s, 201, "{created}");
    let second = second_admin(app, admin).await;
    let id = created["id"].as_str().unwrap();
    let (s, done) = app
        .post(
            &format!("/api/v1/subsidy-rules/{id}/approve"),
            &second,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    done["credited_users"].as_u64().unwrap()
}

async fn second_admin(app: &TestApp, admin: &str) -> String {
    let u = app
        .user(
            admin,
            &format!("ADM-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        )
        .await;
    let (_, b) = app
        .post(
            "/api/v1/admins",
            admin,
            json!({"user_id": u["id"], "role": "super_admin"}),
        )
        .await;
    let (_, bound) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": b["binding_token"]})),
        )
        .await;
    bound["token"].as_str().unwrap().to_string()
}

async fn three_risk_events_freeze_until_local_midnight_and_a_second_freeze_waits_for_an_admin(
    engine: Engine,
) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (shop, user, me) = funded(&app, 5_000, "F-1", 1_000).await;
    // Pin the clock to 10:00 in Shanghai so "next midnight" is known.
    let now = app.clock_now();
    let target: jiff::Timestamp = "2030-03-01T02:00:00Z".parse().unwrap();
    app.clock.advance(target.duration_since(now));
    let c = code(&app, &me).await;
    pay(&app, &shop, &c, 10).await;
    for _ in 0..3 {
        assert_eq!(
            pay(&app, &shop, &c, 10).await["decline_reason"],
            "code_reused"
        );
    }
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(
        (w["frozen"].as_bool(), w["frozen_until"].as_str()),
        (Some(true), Some("2030-03-01T16:00:00Z")),
        "{w}"
    );
    let (s, body) = app.post("/api/v1/me/payment-codes", &me, json!({})).await;
    assert_problem(s, &body, 403, "frozen");
    app.clock.advance(SignedDuration::from_hours(14)); // 16:00 UTC = midnight in Shanghai
    let c = code(&app, &me).await;
    assert_eq!(
        pay(&app, &shop, &c, 10).await["status"],
        "succeeded",
        "the first freeze lifted itself"
    );
    for _ in 0..3 {
        pay(&app, &shop, &c, 10).await;
    }
    app.clock.advance(SignedDuration::from_hours(30));
    let (s, body) = app.post("/api/v1/me/payment-codes", &me, json!({})).await;
    assert_problem(s, &body, 403, "frozen");
    let (_, w) = app
        .post(
            &format!("/api/v1/users/{user}/unfreeze"),
            &shop.admin,
            json!({}),
        )
        .await;
    assert_eq!(w["frozen"], false);
    code(&app, &me).await;
    ledger_balances(&app, &shop.admin).await;
}

async fn a_full_wallet_mailbox_answers_503_and_loses_nothing(engine: Engine) {
    let Some(app) = spawn_with(engine, |c| c.wallet_mailbox = 1).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let (user, _) = person(&app, &shop.admin, "B-1").await;
    let path = format!("/api/v1/users/{user}/wallet/topups");
    let futures = (0..100).map(|i| {
        keyed(
            &app,
            &path,
            &shop.admin,
            Box::leak(format!("busy-{i}").into_boxed_str()),
            json!({"amount": 10}),
        )
    });
    let results = futures::future::join_all(futures).await;
    let accepted = results.iter().filter(|(s, _)| *s == 201).count() as i64;
    let busy: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "some requests must find the mailbox full");
    assert!(busy.iter().all(|(_, b)| b["code"] == "busy"));
    assert_eq!(accepted + busy.len() as i64, 100);
    let (_, w) = app
        .get(&format!("/api/v1/users/{user}/wallet"), &shop.admin)
        .await;
    assert_eq!(
        w["balance"].as_i64(),
        Some(10 * accepted),
        "every 201 counted once, every 503 not at all"
    );
    ledger_balances(&app, &shop.admin).await;
}

impl TestApp {
    pub fn clock_now(&self) -> jiff::Timestamp {
        use onecard_actors::clock::Clock;
        self.clock.now()
    }

    /// Polls a resource until `done` holds (asynchronous provider answers), for 5 s at most.
    pub async fn wait_for(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..250 {
            let (_, v) = self.get(path, token).await;
            if done(&v) {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{path} never reached the expected state");
    }
}
