//! Online top-ups: a cardholder pays the provider from their phone and the wallet is
//! credited once, however the provider's answer arrives (its notice, the phone asking, the
//! sweep), and an order left unpaid closes.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{keyed, ledger_balances, person, set_sandbox, shop};
use crate::on_both_engines;
use crate::statements::all_lines;

on_both_engines!(
    a_cardholder_tops_up_online_and_is_credited_once,
    a_lost_notice_is_credited_once_by_the_phone_or_the_sweep_and_an_unpaid_order_closes
);

/// Opens an online top-up of `amount` under a fresh key.
async fn open(app: &TestApp, me: &str, amount: i64) -> (u16, Value) {
    let key = uuid::Uuid::new_v4().to_string();
    keyed(
        app,
        "/api/v1/me/wallet/charges",
        me,
        &key,
        json!({ "amount": amount }),
    )
    .await
}

/// Opens one that must be accepted: its id.
async fn opened(app: &TestApp, me: &str, amount: i64) -> String {
    let (s, c) = open(app, me, amount).await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["status"], "pending", "{c}");
    c["id"].as_str().unwrap().to_string()
}

async fn sandbox_pay(app: &TestApp, me: &str, id: &str, notify: bool) -> (u16, Value) {
    app.post(
        &format!("/api/v1/sandbox/provider/charges/{id}/pay"),
        me,
        json!({ "notify": notify }),
    )
    .await
}

async fn balance(app: &TestApp, me: &str) -> i64 {
    let (s, w) = app.get("/api/v1/me/wallet", me).await;
    assert_eq!(s, 200, "{w}");
    w["balance"].as_i64().unwrap()
}

/// The top-up register's lines under `reference`.
async fn register_lines(app: &TestApp, admin: &str, reference: &str) -> Vec<Value> {
    let (s, page) = app
        .get(
            &format!("/api/v1/wallets/topups?reference={reference}"),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// One round of the node's sweep.
async fn sweep(app: &TestApp) -> onecard::charges::Swept {
    onecard::charges::settle_pending(&app.state).await.unwrap()
}

async fn turn_on(app: &TestApp, admin: &str, limits: Value) {
    let (s, t) = app
        .patch(
            "/api/v1/tenant",
            admin,
            json!({ "settings": { "online_topups": limits } }),
        )
        .await;
    assert_eq!(s, 200, "{t}");
}

async fn a_cardholder_tops_up_online_and_is_credited_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let admin = shop.admin.clone();
    let (user, me) = person(&app, &admin, "S-1").await;
    let (_, other) = person(&app, &admin, "S-2").await;

    // Off until the tenant turns it on.
    let (s, o) = app.get("/api/v1/me/wallet/online-topups", &me).await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(
        o,
        json!({"enabled": false, "min": 100, "max": 50_000, "provider": "sandbox"})
    );
    let (s, body) = open(&app, &me, 1_000).await;
    assert_problem(s, &body, 403, "online_topups_disabled");

    // Bad limits are refused and change nothing.
    for (limits, field) in [
        (
            json!({"enabled": true, "min": 0}),
            "settings.online_topups.min",
        ),
        (
            json!({"enabled": true, "max": 1_000_001}),
            "settings.online_topups.max",
        ),
        (
            json!({"enabled": true, "min": 600, "max": 500}),
            "settings.online_topups.min",
        ),
    ] {
        let (s, body) = app
            .patch(
                "/api/v1/tenant",
                &admin,
                json!({ "settings": { "online_topups": limits } }),
            )
            .await;
        assert_problem(s, &body, 422, "invalid");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let (s, body) = app
        .patch(
            "/api/v1/tenant",
            &admin,
            json!({ "settings": { "online_topups": {"enabled": true, "most": 5} } }),
        )
        .await;
    assert!(s == 400 || s == 422, "{s} {body}");
    let (_, o) = app.get("/api/v1/me/wallet/online-topups", &me).await;
    assert_eq!(o["enabled"], false, "{o}");

    turn_on(
        &app,
        &admin,
        json!({"enabled": true, "min": 500, "max": 20_000}),
    )
    .await;
    let (_, o) = app.get("/api/v1/me/wallet/online-topups", &me).await;
    assert_eq!(
        o,
        json!({"enabled": true, "min": 500, "max": 20_000, "provider": "sandbox"})
    );

    // Bad requests open nothing.
    let (s, body) = app
        .post("/api/v1/me/wallet/charges", &me, json!({"amount": 1_000}))
        .await;
    assert_problem(s, &body, 400, "idempotency_key_required");
    for amount in [499, 20_001, 0, -5] {
        let (s, body) = open(&app, &me, amount).await;
        assert_problem(s, &body, 422, "invalid");
        assert_eq!(body["errors"][0]["field"], "amount", "{body}");
    }
    for bad in [
        json!({"amount": "1000"}),
        json!({"amount": 12.5}),
        json!({}),
    ] {
        let key = uuid::Uuid::new_v4().to_string();
        let (s, body) = keyed(&app, "/api/v1/me/wallet/charges", &me, &key, bad).await;
        assert!(s == 400 || s == 422, "{s} {body}");
    }
    let (s, body) = keyed(
        &app,
        "/api/v1/me/wallet/charges",
        &admin,
        "admin-key",
        json!({"amount": 1_000}),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, mine) = app.get("/api/v1/me/wallet/charges", &me).await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(mine["items"], json!([]), "{mine}");

    // An order, its retry under the same key, and the key with another body.
    let (s, first) = keyed(
        &app,
        "/api/v1/me/wallet/charges",
        &me,
        "order-1",
        json!({"amount": 3_000}),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["amount"], 3_000);
    assert_eq!(first["user_id"], user.as_str());
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(
        first["pay"]["sandbox_pay_url"],
        format!("/api/v1/sandbox/provider/charges/{id}/pay")
    );
    let (s, again) = keyed(
        &app,
        "/api/v1/me/wallet/charges",
        &me,
        "order-1",
        json!({"amount": 3_000}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    let (s, body) = keyed(
        &app,
        "/api/v1/me/wallet/charges",
        &me,
        "order-1",
        json!({"amount": 4_000}),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    let (_, mine) = app.get("/api/v1/me/wallet/charges", &me).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");

    // Not paid yet: nothing credited.
    let (s, c) = app
        .get(&format!("/api/v1/me/wallet/charges/{id}"), &me)
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "pending", "{c}");
    assert_eq!(balance(&app, &me).await, 0);

    // Someone else's order is nobody's business.
    let (s, body) = app
        .get(&format!("/api/v1/me/wallet/charges/{id}"), &other)
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = sandbox_pay(&app, &other, &id, true).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app.get("/api/v1/me/wallet/charges/not-an-id", &me).await;
    assert_eq!(s, 404, "{body}");

    // Paid in the provider's app: its notice credits the wallet.
    let (s, paid) = sandbox_pay(&app, &me, &id, true).await;
    assert_eq!(s, 200, "{paid}");
    assert_eq!(paid["status"], "paid", "{paid}");
    let transaction = paid["transaction"].as_str().unwrap().to_string();
    let topup = paid["topup_id"].as_str().unwrap().to_string();
    assert!(paid["settled_at"].is_string(), "{paid}");
    assert_eq!(balance(&app, &me).await, 3_000);

    // A second notice, and the phone asking, credit nothing more.
    let (s, again) = sandbox_pay(&app, &me, &id, true).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["topup_id"], topup.as_str());
    let (_, c) = app
        .get(&format!("/api/v1/me/wallet/charges/{id}"), &me)
        .await;
    assert_eq!(c["status"], "paid");
    assert_eq!(c["transaction"], transaction.as_str());
    assert_eq!(balance(&app, &me).await, 3_000);

    // The register has the top-up under the provider's transaction.
    let lines = register_lines(&app, &admin, &transaction).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["id"], topup.as_str());
    assert_eq!(lines[0]["amount"], 3_000);
    assert_eq!(lines[0]["user_id"], user.as_str());
    assert_eq!(lines[0]["credited_by"], "provider:sandbox");

    // The cardholder's statement shows it with its reference.
    let (lines, _) = all_lines(&app, "/api/v1/me/statement", &me, 50).await;
    let top_ups: Vec<(i64, Value)> = lines
        .iter()
        .filter(|l| l["kind"] == "top_up")
        .map(|l| (l["amount"].as_i64().unwrap(), l["reference"].clone()))
        .collect();
    assert_eq!(top_ups, vec![(3_000, json!(transaction))]);

    // The finance office's list, by status and person; not for a cardholder.
    let (s, page) = app.get("/api/v1/wallets/charges?status=paid", &admin).await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], id.as_str());
    let (_, page) = app
        .get("/api/v1/wallets/charges?status=pending", &admin)
        .await;
    assert_eq!(page["items"], json!([]), "{page}");
    let (_, page) = app
        .get(&format!("/api/v1/wallets/charges?user_id={user}"), &admin)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    for bad in ["status=spent", "user_id=nope", "limit=0", "colour=red"] {
        let (s, body) = app
            .get(&format!("/api/v1/wallets/charges?{bad}"), &admin)
            .await;
        assert!(s == 400 || s == 422, "{bad}: {s} {body}");
    }
    let (s, body) = app.get("/api/v1/wallets/charges", &me).await;
    assert_eq!(s, 403, "{body}");
    // Another tenant sees none of it.
    let elsewhere = crate::money::shop(&app, 100_000).await;
    let (_, page) = app.get("/api/v1/wallets/charges", &elsewhere.admin).await;
    assert_eq!(page["items"], json!([]), "{page}");

    ledger_balances(&app, &admin).await;
}

async fn a_lost_notice_is_credited_once_by_the_phone_or_the_sweep_and_an_unpaid_order_closes(
    engine: Engine,
) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let admin = shop.admin.clone();
    let (_, me) = person(&app, &admin, "S-1").await;
    let (down_user, down) = person(&app, &admin, "S-2").await;
    turn_on(&app, &admin, json!({"enabled": true})).await;

    // Paid, but the provider's notice is lost: nothing credited yet.
    let a = opened(&app, &me, 1_000).await;
    let (s, c) = sandbox_pay(&app, &me, &a, false).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "pending", "{c}");
    assert_eq!(balance(&app, &me).await, 0);

    // The phone asks eight times at once while two sweeps run: credited once.
    app.clock.advance(SignedDuration::from_mins(2));
    let asks = (0..8).map(|_| {
        let (app, me, a) = (&app, &me, &a);
        async move { app.get(&format!("/api/v1/me/wallet/charges/{a}"), me).await }
    });
    let (answers, sweeps) = tokio::join!(futures_util::future::join_all(asks), async {
        tokio::join!(
            onecard::charges::settle_pending(&app.state),
            onecard::charges::settle_pending(&app.state)
        )
    });
    sweeps.0.unwrap();
    sweeps.1.unwrap();
    let topups: Vec<&Value> = answers
        .iter()
        .map(|(s, c)| {
            assert_eq!(*s, 200, "{c}");
            assert_eq!(c["status"], "paid", "{c}");
            &c["topup_id"]
        })
        .collect();
    assert!(topups.iter().all(|t| *t == topups[0]), "{topups:?}");
    assert_eq!(balance(&app, &me).await, 1_000);
    let (_, c) = app
        .get(&format!("/api/v1/me/wallet/charges/{a}"), &me)
        .await;
    let lines = register_lines(&app, &admin, c["transaction"].as_str().unwrap()).await;
    assert_eq!(lines.len(), 1, "{lines:?}");

    // Nobody asks: the sweep credits it once it has waited a minute.
    let b = opened(&app, &me, 2_000).await;
    sandbox_pay(&app, &me, &b, false).await;
    assert_eq!(sweep(&app).await.ended, 0);
    assert_eq!(balance(&app, &me).await, 1_000);
    app.clock.advance(SignedDuration::from_mins(2));
    assert_eq!(sweep(&app).await.ended, 1);
    assert_eq!(balance(&app, &me).await, 3_000);
    assert_eq!(sweep(&app).await.ended, 0);

    // Three unpaid orders at most.
    let unpaid = opened(&app, &me, 500).await;
    let paid_late = opened(&app, &me, 700).await;
    let third = opened(&app, &me, 900).await;
    let (s, body) = open(&app, &me, 100).await;
    assert_problem(s, &body, 409, "too_many_pending_charges");

    // Still pending before they expire; one is paid just in time, its notice lost.
    app.clock.advance(SignedDuration::from_mins(10));
    assert_eq!(sweep(&app).await.ended, 0);
    sandbox_pay(&app, &me, &paid_late, false).await;
    app.clock.advance(SignedDuration::from_mins(6));
    // Expired: the unpaid two close, the one paid is credited, not closed.
    assert_eq!(sweep(&app).await.ended, 3);
    let status = |id: String| {
        let (app, me) = (&app, &me);
        async move {
            let (_, c) = app
                .get(&format!("/api/v1/me/wallet/charges/{id}"), me)
                .await;
            c["status"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(status(unpaid.clone()).await, "closed");
    assert_eq!(status(third.clone()).await, "closed");
    assert_eq!(status(paid_late.clone()).await, "paid");
    assert_eq!(balance(&app, &me).await, 3_700);
    // A closed order can no longer be paid.
    let (s, body) = sandbox_pay(&app, &me, &unpaid, true).await;
    assert_problem(s, &body, 409, "charge_closed");
    assert_eq!(balance(&app, &me).await, 3_700);
    // Room for new ones again.
    let room = opened(&app, &me, 100).await;

    // The provider out of reach: 503, and the order is closed at once.
    let (s, body) = set_sandbox(
        &app,
        &admin,
        &down_user,
        json!({"available": 0, "unavailable": true}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = open(&app, &down, 1_000).await;
    assert_problem(s, &body, 503, "unavailable");
    let (_, mine) = app.get("/api/v1/me/wallet/charges", &down).await;
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{mine}");
    assert_eq!(items[0]["status"], "closed", "{mine}");

    // Out of reach after an order was opened: it stays pending past its expiry, counted
    // stuck once five minutes past it, and closes when the provider answers again.
    let (late_user, late) = person(&app, &admin, "S-3").await;
    let stuck = opened(&app, &late, 800).await;
    let (s, body) = set_sandbox(
        &app,
        &admin,
        &late_user,
        json!({"available": 0, "unavailable": true}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    app.clock.advance(SignedDuration::from_mins(18));
    let swept = sweep(&app).await;
    assert_eq!((swept.ended, swept.stuck), (1, 0), "{swept:?}");
    assert_eq!(status(room).await, "closed");
    let (s, body) = app
        .get(&format!("/api/v1/me/wallet/charges/{stuck}"), &late)
        .await;
    assert_problem(s, &body, 503, "unavailable");
    app.clock.advance(SignedDuration::from_mins(3));
    let swept = sweep(&app).await;
    assert_eq!((swept.ended, swept.stuck), (0, 1), "{swept:?}");
    set_sandbox(&app, &admin, &late_user, json!({"available": 0})).await;
    let swept = sweep(&app).await;
    assert_eq!((swept.ended, swept.stuck), (1, 0), "{swept:?}");
    let (_, c) = app
        .get(&format!("/api/v1/me/wallet/charges/{stuck}"), &late)
        .await;
    assert_eq!(c["status"], "closed", "{c}");
    assert_eq!(balance(&app, &late).await, 0);

    let (_, page) = app
        .get("/api/v1/wallets/charges?status=closed", &admin)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5, "{page}");
    ledger_balances(&app, &admin).await;
}
