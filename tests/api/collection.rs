//! Canteen collection codes (SPEC §13): a merchant's static code that cardholders scan
//! with their phones, to pay an amount they enter from their wallet (the same checks and
//! deduction order as at a till) or to be counted without moving money; both live on the
//! code's, the merchant's and the tenant's topics.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{
    approved_rule, code as payment_code, keyed, ledger_balances, pay, person, shop, top_up, Shop,
};
use crate::on_both_engines;
use crate::realtime::Ws;

on_both_engines!(
    a_pay_code_takes_payments_from_the_wallet_as_a_till_does,
    a_count_code_counts_each_visit_once_and_moves_no_money,
    who_may_make_read_and_use_collection_codes,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// A collection code of `merchant` in `mode`: the terminal as created (with its token).
async fn collection_code(app: &TestApp, admin: &str, merchant: &str, mode: &str) -> Value {
    let (s, t) = app
        .post(
            &format!("/api/v1/merchants/{merchant}/terminals"),
            admin,
            json!({"name": format!("Window {mode}"), "kind": "collection", "mode": mode}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    t
}

fn code_of(terminal: &Value) -> String {
    terminal["collection"]["code"]
        .as_str()
        .expect("a collection code")
        .to_string()
}

async fn pay_code(app: &TestApp, me: &str, code: &str, key: &str, amount: i64) -> (u16, Value) {
    keyed(
        app,
        &format!("/api/v1/collection-codes/{code}/payments"),
        me,
        key,
        json!({ "amount": amount }),
    )
    .await
}

async fn visit(app: &TestApp, me: &str, code: &str) -> (u16, Value) {
    app.post(
        &format!("/api/v1/collection-codes/{code}/visits"),
        me,
        json!({}),
    )
    .await
}

async fn balance(app: &TestApp, me: &str) -> i64 {
    let (s, w) = app.get("/api/v1/me/wallet", me).await;
    assert_eq!(s, 200, "{w}");
    w["balance"].as_i64().unwrap()
}

async fn a_pay_code_takes_payments_from_the_wallet_as_a_till_does(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let m = &shop.merchant;

    // What a collection code is made of.
    for (body, field) in [
        (json!({"name": "W", "kind": "collection"}), "mode"),
        (json!({"name": "W", "mode": "pay"}), "mode"),
        (
            json!({"name": "", "kind": "collection", "mode": "pay"}),
            "name",
        ),
    ] {
        let (s, p) = app
            .post(&format!("/api/v1/merchants/{m}/terminals"), admin, body)
            .await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (s, p) = app
        .post(
            &format!("/api/v1/merchants/{m}/terminals"),
            admin,
            json!({"name": "W", "kind": "collection", "mode": "barter"}),
        )
        .await;
    assert!(s == 400 || s == 422, "{s} {p}");
    let (s, p) = app
        .get(&format!("/api/v1/merchants/{m}/terminals"), admin)
        .await;
    assert_eq!(
        (s, p.as_array().unwrap().len()),
        (200, 1),
        "only the till: {p}"
    );

    let window = collection_code(&app, admin, m, "pay").await;
    let code = code_of(&window);
    assert_eq!(window["kind"], "collection");
    assert_eq!(window["collection"]["mode"], "pay");
    assert_eq!(code.len(), 8);
    assert!(
        window["collection"]["pay_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/pay?code={code}")),
        "{window}"
    );
    let (s, list) = app
        .get(&format!("/api/v1/merchants/{m}/terminals"), admin)
        .await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["till", "collection"]);
    // The code's QR is printable; a till has none.
    let res = app
        .client
        .get(app.url(&format!("/api/v1/terminals/{}/qr", id(&window))))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(res.text().await.unwrap().starts_with("<?xml"));
    let (s, p) = app
        .get(&format!("/api/v1/terminals/{}/qr", shop.terminal_id), admin)
        .await;
    assert_problem(s, &p, 409, "not_a_collection_code");

    // A cardholder with 1,000 in cash, a 400 meal subsidy here and a 100 coupon.
    let (user, me) = person(&app, admin, "C-1").await;
    top_up(&app, &shop, &user, 1_000).await;
    let rule = json!({"name": "Meal", "amount": 400, "targets": {"user_ids": [user]},
                      "merchant_ids": [m]});
    assert_eq!(approved_rule(&app, admin, rule).await, 1);
    let later = (app.clock_now() + SignedDuration::from_hours(48)).to_string();
    let (s, _) = app
        .post(
            &format!("/api/v1/users/{user}/wallet/coupons"),
            admin,
            json!({"name": "Lunch", "discount": 100, "threshold": 500, "expires_at": later}),
        )
        .await;
    assert_eq!(s, 201);

    // The phone shows whom it pays, from the code however it was typed.
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let (s, shown) = app
        .get(&format!("/api/v1/collection-codes/{typed}"), &me)
        .await;
    assert_eq!(s, 200, "{shown}");
    assert_eq!(
        (&shown["code"], &shown["mode"], &shown["merchant_name"]),
        (&json!(code), &json!("pay"), &json!("North Hall")),
    );
    let (s, p) = app.get("/api/v1/collection-codes/ZZZZZZZZ", &me).await;
    assert_problem(s, &p, 404, "not_found");

    // The code's screen (its token) and the merchant's dashboard see the payment live.
    let mut screen = Ws::connect(&app.base, window["token"].as_str().unwrap()).await;
    screen
        .subscribe(&format!("terminal:{}", id(&window)), None)
        .await;
    let mut office = Ws::connect(&app.base, admin).await;
    office.subscribe(&format!("merchant:{m}"), None).await;

    // Bad input changes nothing.
    let path = format!("/api/v1/collection-codes/{code}/payments");
    let (s, p) = app.post(&path, &me, json!({"amount": 100})).await;
    assert_problem(s, &p, 400, "idempotency_key_required");
    let (s, p) = pay_code(&app, &me, &code, "k-0", 0).await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = keyed(&app, &path, &me, "k-0", json!({"amount": 1, "tip": 5})).await;
    assert!(s == 400 || s == 422, "{s} {p}");
    assert_eq!(balance(&app, &me).await, 1_000);

    // 1,200 = coupon 100 + subsidy 400 + cash 700, as at a till.
    let (s, paid) = pay_code(&app, &me, &code, "k-1", 1_200).await;
    assert_eq!(s, 201, "{paid}");
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(
        paid["breakdown"],
        json!({"coupon": 100, "subsidy": 400, "balance": 700, "deferred": 0})
    );
    assert_eq!(paid["terminal_id"], window["id"]);
    assert_eq!(paid["merchant_id"], json!(m));
    assert_eq!(paid["user_id"], json!(user));
    assert_eq!(balance(&app, &me).await, 300);
    for ws in [&mut screen, &mut office] {
        let e = ws.next_event().await;
        assert_eq!(e["type"], "payment.succeeded", "{e}");
        assert_eq!(e["data"]["id"], paid["id"]);
    }

    // A retry answers the same payment; the key with another amount is refused.
    let (s, again) = pay_code(&app, &me, &code, "k-1", 1_200).await;
    assert_eq!((s, &again["id"]), (200, &paid["id"]), "{again}");
    let (s, p) = pay_code(&app, &me, &code, "k-1", 1_300).await;
    assert_problem(s, &p, 409, "idempotency_conflict");
    assert_eq!(balance(&app, &me).await, 300);

    // Declines are recorded, as at a till: over the merchant's single limit, and more than
    // the wallet holds once the deferred debit is not allowed.
    let (s, over) = pay_code(&app, &me, &code, "k-2", 5_001).await;
    assert_eq!(
        (s, &over["status"], &over["decline_reason"]),
        (201, &json!("declined"), &json!("over_limit"))
    );
    app.patch(
        "/api/v1/tenant",
        admin,
        json!({"settings": {"require_agreement": false}}),
    )
    .await;
    let poor = app.user(admin, "C-2").await;
    let (_, t) = app
        .post(
            &format!("/api/v1/users/{}/tokens", id(&poor)),
            admin,
            json!({}),
        )
        .await;
    let poor_token = t["token"].as_str().unwrap().to_string();
    let (s, short) = pay_code(&app, &poor_token, &code, "k-3", 100).await;
    assert_eq!(
        (s, &short["decline_reason"]),
        (201, &json!("insufficient_funds")),
        "{short}"
    );
    // While the tenant requires the agreement, an unsigned wallet is refused outright.
    app.patch(
        "/api/v1/tenant",
        admin,
        json!({"settings": {"require_agreement": true}}),
    )
    .await;
    let (s, p) = pay_code(&app, &poor_token, &code, "k-4", 100).await;
    assert_problem(s, &p, 403, "agreement_required");
    // A frozen wallet is declined.
    app.post(&format!("/api/v1/users/{user}/freeze"), admin, json!({}))
        .await;
    let (s, frozen) = pay_code(&app, &me, &code, "k-5", 100).await;
    assert_eq!((s, &frozen["decline_reason"]), (201, &json!("frozen")));
    app.post(&format!("/api/v1/users/{user}/unfreeze"), admin, json!({}))
        .await;
    // A suspended member's payment is declined card_inactive.
    app.patch(
        &format!("/api/v1/users/{user}"),
        admin,
        json!({"status": "suspended"}),
    )
    .await;
    let (s, inactive) = pay_code(&app, &me, &code, "k-6", 100).await;
    assert_eq!(
        (s, &inactive["decline_reason"]),
        (201, &json!("card_inactive"))
    );
    app.patch(
        &format!("/api/v1/users/{user}"),
        admin,
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(balance(&app, &me).await, 300);

    // A count-only code takes no payment, and its token takes none at a till either.
    let door = collection_code(&app, admin, m, "count").await;
    let (s, p) = pay_code(&app, &me, &code_of(&door), "k-7", 100).await;
    assert_problem(s, &p, 409, "collection_mode");
    let (s, p) = keyed(
        &app,
        "/api/v1/payments",
        window["token"].as_str().unwrap(),
        "k-8",
        json!({"code": payment_code(&app, &me).await, "amount": 100}),
    )
    .await;
    assert_problem(s, &p, 403, "not_a_till");
    // Another tenant's cardholder does not find the code at all.
    let elsewhere = shop_elsewhere(&app).await;
    let (s, p) = pay_code(&app, &elsewhere.1, &code, "k-9", 100).await;
    assert_problem(s, &p, 404, "not_found");

    // The till still works, and the merchant's totals count both kinds of payment.
    pay(&app, &shop, &payment_code(&app, &me).await, 50).await;
    // (Merchant actors are fed by committed events, off the payment's path.)
    let totals = app
        .wait_for(&format!("/api/v1/merchants/{m}/totals"), admin, |t| {
            t["count"] == 2
        })
        .await;
    assert_eq!(totals["gross"], 1_250, "{totals}");
    assert_eq!(totals["count"], 2, "{totals}");
    assert_eq!(totals["by_source"]["subsidy"], 400, "{totals}");
    let (s, listed) = app
        .get(
            &format!("/api/v1/payments?merchant_id={m}&status=succeeded"),
            admin,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    ledger_balances(&app, admin).await;
}

/// A cardholder of another tenant: (their admin, their token).
async fn shop_elsewhere(app: &TestApp) -> (String, String) {
    let other: Shop = shop(app, 5_000).await;
    let (_, token) = person(app, &other.admin, "X-1").await;
    (other.admin, token)
}

async fn a_count_code_counts_each_visit_once_and_moves_no_money(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    // A canteen (the shop) with a stall under it; a count code at each.
    let (s, stall) = app
        .post(
            "/api/v1/merchants",
            admin,
            json!({"name": "Noodles", "parent_id": shop.merchant}),
        )
        .await;
    assert_eq!(s, 201, "{stall}");
    let hall_door = collection_code(&app, admin, &shop.merchant, "count").await;
    let stall_door = collection_code(&app, admin, &id(&stall), "count").await;
    let pay_window = collection_code(&app, admin, &shop.merchant, "pay").await;
    let (user, me) = person(&app, admin, "V-1").await;
    top_up(&app, &shop, &user, 500).await;
    let (other_user, other) = person(&app, admin, "V-2").await;

    let mut office = Ws::connect(&app.base, admin).await;
    office.subscribe("tenant", None).await;

    // The first scan counts; a second within a minute is the same visit.
    let (s, first) = visit(&app, &me, &code_of(&hall_door)).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        (&first["user_id"], &first["number"], &first["terminal_id"]),
        (&json!(user), &json!("V-1"), &hall_door["id"])
    );
    let e = office.next_event().await;
    assert_eq!(e["type"], "collection.visit", "{e}");
    assert_eq!(e["data"]["id"], first["id"]);
    assert_eq!(
        (&e["data"]["name"], &e["data"]["number"]),
        (&json!("U*** V**"), &Value::Null),
        "the queue sees a masked name: {e}"
    );
    let (s, again) = visit(&app, &me, &code_of(&hall_door).to_lowercase()).await;
    assert_eq!((s, &again["id"]), (200, &first["id"]), "{again}");
    assert!(
        office.next_within(300).await.is_none(),
        "a repeat is no event"
    );
    app.clock.advance(SignedDuration::from_secs(61));
    let (s, second) = visit(&app, &me, &code_of(&hall_door)).await;
    assert_eq!(s, 201, "{second}");
    assert_ne!(second["id"], first["id"]);

    // Ten taps at once by one person count once.
    let stall_code = code_of(&stall_door);
    let taps = (0..10).map(|_| visit(&app, &other, &stall_code));
    let answers = futures::future::join_all(taps).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let repeated = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 9), "{answers:?}");
    let ids: std::collections::HashSet<&Value> = answers.iter().map(|(_, v)| &v["id"]).collect();
    assert_eq!(ids.len(), 1);

    // No money moved, and no payment was made.
    assert_eq!(balance(&app, &me).await, 500);
    let (_, listed) = app
        .get(&format!("/api/v1/payments?user_id={user}"), admin)
        .await;
    assert_eq!(listed["items"], json!([]), "{listed}");

    // A paying code takes no visit; a suspended member is not counted; nor is an unknown
    // code, nor one of another tenant.
    let (s, p) = visit(&app, &me, &code_of(&pay_window)).await;
    assert_problem(s, &p, 409, "collection_mode");
    let (s, p) = visit(&app, &me, "NOT-A-CODE").await;
    assert_problem(s, &p, 404, "not_found");
    let (_, stranger) = shop_elsewhere(&app).await;
    let (s, p) = visit(&app, &stranger, &code_of(&hall_door)).await;
    assert_problem(s, &p, 404, "not_found");
    let (gone, gone_token) = person(&app, admin, "V-3").await;
    app.patch(
        &format!("/api/v1/users/{gone}"),
        admin,
        json!({"status": "left"}),
    )
    .await;
    let (s, p) = visit(&app, &gone_token, &code_of(&hall_door)).await;
    assert_problem(s, &p, 403, "card_inactive");

    // Lists: by merchant (with those under it), code, person and time.
    let count = |v: &Value| v["items"].as_array().unwrap().len();
    let (s, all) = app
        .get(
            &format!("/api/v1/visits?merchant_id={}", shop.merchant),
            admin,
        )
        .await;
    assert_eq!((s, count(&all)), (200, 3), "{all}");
    let (_, at_stall) = app
        .get(&format!("/api/v1/visits?merchant_id={}", id(&stall)), admin)
        .await;
    assert_eq!(count(&at_stall), 1);
    assert_eq!(at_stall["items"][0]["user_id"], json!(other_user));
    let (_, by_code) = app
        .get(
            &format!("/api/v1/visits?terminal_id={}", id(&hall_door)),
            admin,
        )
        .await;
    assert_eq!(count(&by_code), 2);
    let (_, mine) = app.get("/api/v1/me/visits", &me).await;
    assert_eq!(count(&mine), 2);
    let after_first = second["at"].as_str().unwrap();
    let (_, since) = app
        .get(
            &format!("/api/v1/visits?user_id={user}&from={after_first}"),
            admin,
        )
        .await;
    assert_eq!(count(&since), 1);
    assert_eq!(since["items"][0]["id"], second["id"]);
    let (_, paged) = app.get("/api/v1/visits?limit=2", admin).await;
    assert_eq!(count(&paged), 2);
    let cursor = paged["next_cursor"].as_str().expect("a next page");
    let (_, rest) = app
        .get(&format!("/api/v1/visits?limit=2&cursor={cursor}"), admin)
        .await;
    assert_eq!((count(&rest), &rest["next_cursor"]), (1, &Value::Null));
    let (s, p) = app.get("/api/v1/visits?from=yesterday", admin).await;
    assert!(s == 400 || s == 422, "{s} {p}");

    // The day's figures: the hall and the stall under it, each code's count.
    let (s, day) = app
        .get(
            &format!("/api/v1/merchants/{}/visits", shop.merchant),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{day}");
    assert_eq!(day["count"], 3, "{day}");
    let codes: Vec<(Value, u64)> = day["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["terminal_id"].clone(), c["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [(hall_door["id"].clone(), 2), (stall_door["id"].clone(), 1)]
    );
    let yesterday = (app.clock_now() - SignedDuration::from_hours(48))
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date();
    let (_, before) = app
        .get(
            &format!(
                "/api/v1/merchants/{}/visits?date={yesterday}",
                shop.merchant
            ),
            admin,
        )
        .await;
    assert_eq!(before["count"], 0, "{before}");
    assert_eq!(before["codes"].as_array().unwrap().len(), 2, "{before}");
    let (s, p) = app
        .get(
            &format!("/api/v1/merchants/{}/visits?date=31-12-2026", shop.merchant),
            admin,
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    ledger_balances(&app, admin).await;
}

async fn who_may_make_read_and_use_collection_codes(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let door = collection_code(&app, admin, &shop.merchant, "count").await;
    let (_, me) = person(&app, admin, "W-1").await;
    let m = &shop.merchant;

    // A sub-admin who may view payments reads codes and visits but makes no code; one
    // without the grant does neither.
    let cashiers = group(
        &app,
        admin,
        json!({"name": "Cashiers", "features": {"payments": "view"}}),
    )
    .await;
    let viewer = sub_admin(&app, admin, &app.user(admin, "W-2").await, &cashiers).await;
    let (s, _) = app
        .get(&format!("/api/v1/merchants/{m}/terminals"), &viewer)
        .await;
    assert_eq!(s, 200);
    let (s, _) = app.get("/api/v1/visits", &viewer).await;
    assert_eq!(s, 200);
    let (s, p) = app
        .post(
            &format!("/api/v1/merchants/{m}/terminals"),
            &viewer,
            json!({"name": "W", "kind": "collection", "mode": "pay"}),
        )
        .await;
    assert_problem(s, &p, 403, "not_granted");
    let clerks = group(
        &app,
        admin,
        json!({"name": "Clerks", "features": {"notifications": "manage"}}),
    )
    .await;
    let stranger = sub_admin(&app, admin, &app.user(admin, "W-3").await, &clerks).await;
    for path in [
        format!("/api/v1/merchants/{m}/terminals"),
        "/api/v1/visits".to_string(),
        format!("/api/v1/merchants/{m}/visits"),
        format!("/api/v1/terminals/{}/qr", id(&door)),
    ] {
        let (s, p) = app.get(&path, &stranger).await;
        assert_problem(s, &p, 403, "not_granted");
    }

    // Cardholders use codes and read their own visits, not everyone's; admins and tills do
    // not pay or visit as cardholders.
    let (s, p) = app.get("/api/v1/visits", &me).await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, p) = app
        .get(&format!("/api/v1/merchants/{m}/terminals"), &me)
        .await;
    assert_problem(s, &p, 403, "forbidden");
    for token in [admin.as_str(), shop.terminal.as_str()] {
        let (s, p) = visit(&app, token, &code_of(&door)).await;
        assert_problem(s, &p, 403, "forbidden");
    }
    let (s, p) = app
        .get(&format!("/api/v1/merchants/{m}/terminals"), "not-a-token")
        .await;
    assert_problem(s, &p, 401, "unauthorized");

    // A lost till's token is replaced: the old one stops at once, the new one works.
    let path = format!("/api/v1/terminals/{}/token", shop.terminal_id);
    let (s, p) = app.post(&path, &viewer, json!({})).await;
    assert_problem(s, &p, 403, "not_granted");
    let (other_admin, _) = shop_elsewhere(&app).await;
    let (s, p) = app.post(&path, &other_admin, json!({})).await;
    assert_problem(s, &p, 404, "not_found");
    let (s, p) = app.get("/api/v1/terminal", &shop.terminal).await;
    assert_eq!(s, 200, "the till still works before: {p}");
    let (s, t) = app.post(&path, admin, json!({})).await;
    assert_eq!(s, 201, "{t}");
    let fresh = t["token"].as_str().unwrap();
    let (s, p) = app.get("/api/v1/terminal", &shop.terminal).await;
    assert_problem(s, &p, 401, "unauthorized");
    let (s, till) = app.get("/api/v1/terminal", fresh).await;
    assert_eq!((s, &till["id"]), (200, &json!(shop.terminal_id)), "{till}");
    let (s, log) = app
        .get(
            &format!(
                "/api/v1/audit?action=terminal.token&target_id={}",
                shop.terminal_id
            ),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{log}");
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");

    // A closed door's code is retired: it answers 410, its screen's token is revoked, and
    // it stays listed (with what it counted). Retiring again changes nothing.
    let code = code_of(&door);
    let retire = format!("/api/v1/terminals/{}/retire", id(&door));
    let (s, p) = app.post(&retire, &viewer, json!({})).await;
    assert_problem(s, &p, 403, "not_granted");
    let (s, p) = app.post(&retire, &other_admin, json!({})).await;
    assert_problem(s, &p, 404, "not_found");
    let (s, p) = visit(&app, &me, &code).await;
    assert_eq!(s, 201, "counted while in use: {p}");
    let (s, retired) = app.post(&retire, admin, json!({})).await;
    assert_eq!(s, 200, "{retired}");
    assert!(retired["retired_at"].is_string(), "{retired}");
    app.clock.advance(SignedDuration::from_secs(5));
    let (s, again) = app.post(&retire, admin, json!({})).await;
    assert_eq!((s, &again["retired_at"]), (200, &retired["retired_at"]));
    let (s, p) = visit(&app, &me, &code).await;
    assert_problem(s, &p, 410, "terminal_retired");
    let (s, p) = app
        .get(&format!("/api/v1/collection-codes/{code}"), &me)
        .await;
    assert_problem(s, &p, 410, "terminal_retired");
    let (s, p) = app
        .get("/api/v1/terminal", door["token"].as_str().unwrap())
        .await;
    assert_problem(s, &p, 401, "unauthorized");
    let (s, p) = app
        .post(
            &format!("/api/v1/terminals/{}/token", id(&door)),
            admin,
            json!({}),
        )
        .await;
    assert_problem(s, &p, 410, "terminal_retired");
    let (_, list) = app
        .get(&format!("/api/v1/merchants/{m}/terminals"), admin)
        .await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == door["id"])
        .expect("a retired terminal stays listed");
    assert_eq!(listed["retired_at"], retired["retired_at"]);
    let (_, day) = app
        .get(&format!("/api/v1/merchants/{m}/visits"), admin)
        .await;
    assert_eq!(day["count"], 1, "{day}");
}
