//! Multi-merchant-entity settlement end to end: entities, merchants' schedules of them by
//! day (by their own entry, their parent's, or the tenant's), and the reports that split
//! sales by them and agree with the merchant clearing.

use jiff::SignedDuration;
use onecard_actors::clock::Clock;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{code, keyed, ledger_balances, pay, person, top_up, Shop};
use crate::on_both_engines;
use crate::reports::{by_merchant, download, merchant, pairs, report, till, to_nine};

on_both_engines!(merchants_settle_to_entities_day_by_day_and_the_reports_split_by_them);

async fn entity(app: &TestApp, admin: &str, body: Value) -> String {
    let (s, e) = app.post("/api/v1/settlement-entities", admin, body).await;
    assert_eq!(s, 201, "{e}");
    assert_eq!(e["merchants_today"], json!([]));
    e["id"].as_str().unwrap().to_string()
}

async fn settle(app: &TestApp, admin: &str, merchant: &str, body: Value) -> Value {
    let (s, v) = app
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/merchants/{merchant}/settlement"),
            Some(admin),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn settles_to(app: &TestApp, admin: &str, merchant: &str) -> (String, Value) {
    let (s, v) = app
        .get(&format!("/api/v1/merchants/{merchant}/settlement"), admin)
        .await;
    assert_eq!(s, 200, "{v}");
    (v["settles_to"].as_str().unwrap().to_string(), v)
}

/// Each entity's id → the merchants settling to it today.
async fn merchants_today(app: &TestApp, admin: &str) -> Vec<(String, Vec<String>)> {
    let (s, list) = app.get("/api/v1/settlement-entities", admin).await;
    assert_eq!(s, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut ids: Vec<String> = e["merchants_today"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            ids.sort();
            (e["id"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

async fn merchants_settle_to_entities_day_by_day_and_the_reports_split_by_them(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (day1, day2) = to_nine(&app);

    // Below the advanced edition the capability is refused, by name.
    let (_, standard) = app.tenant("university", "standard").await;
    let (s, p) = app
        .post(
            "/api/v1/settlement-entities",
            &standard,
            json!({"name": "X"}),
        )
        .await;
    assert_problem(s, &p, 403, "edition");
    assert_eq!(
        (p["capability"].as_str(), p["lowest_edition"].as_str()),
        (Some("multi_merchant_settlement"), Some("advanced"))
    );
    for path in [
        "/api/v1/reports/entity-settlement".to_string(),
        "/api/v1/reports/merchant-clearing?settlement_entity=own".to_string(),
        "/api/v1/reports/income-summary?settlement_entity=nobody".to_string(),
    ] {
        let (s, p) = app.get(&path, &standard).await;
        assert_problem(s, &p, 403, "edition");
    }

    let (_, admin) = app.tenant("university", "advanced").await;
    let north = entity(
        &app,
        &admin,
        json!({"name": "North Catering", "legal_name": "North Catering Co., Ltd.",
               "provider_sub_merchant": "1900000109", "bank_account": "6222 0202 0000 1234"}),
    )
    .await;
    let south = entity(&app, &admin, json!({"name": "South Foods"})).await;
    let (s, p) = app
        .post(
            "/api/v1/settlement-entities",
            &admin,
            json!({"name": "South Foods"}),
        )
        .await;
    assert_problem(s, &p, 409, "settlement_entity_name_taken");
    let (s, p) = app
        .post(
            "/api/v1/settlement-entities",
            &admin,
            json!({"name": "", "provider_sub_merchant": "19 00", "bank_account": "12--34"}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "provider_sub_merchant", "bank_account"]);
    assert_eq!(
        merchants_today(&app, &admin).await.len(),
        2,
        "nothing added"
    );

    // Catering → North (→ Noodles, Tea) and South.
    let c = merchant(&app, &admin, json!({"name": "Catering", "number": "C"})).await;
    let n = merchant(
        &app,
        &admin,
        json!({"name": "North", "number": "N", "parent_id": c}),
    )
    .await;
    let n1 = merchant(
        &app,
        &admin,
        json!({"name": "Noodles", "number": "N1", "parent_id": n}),
    )
    .await;
    let n2 = merchant(
        &app,
        &admin,
        json!({"name": "Tea", "number": "N2", "parent_id": n}),
    )
    .await;
    let so = merchant(
        &app,
        &admin,
        json!({"name": "South", "number": "S", "parent_id": c}),
    )
    .await;

    // From today North settles to North Catering, and Noodles with it; Tea, run by the
    // school, to the school itself.
    let v = settle(&app, &admin, &n, json!({"settles_to": north})).await;
    assert_eq!(
        (v["settles_to"].as_str(), v["decided_by"].as_str()),
        (Some(north.as_str()), Some(n.as_str()))
    );
    assert_eq!(v["today"], day1.as_str());
    assert_eq!(v["schedule"][0]["effective_from"], day1.as_str());
    settle(
        &app,
        &admin,
        &n2,
        json!({"settles_to": "own", "effective_from": day1}),
    )
    .await;
    let (to, v) = settles_to(&app, &admin, &n1).await;
    assert_eq!(to, north);
    assert_eq!(v["decided_by"], n.as_str());
    assert_eq!(
        v["settlement_entity"]["legal_name"],
        "North Catering Co., Ltd."
    );
    assert_eq!(v["schedule"], json!([]));
    let (to, v) = settles_to(&app, &admin, &so).await;
    assert_eq!((to.as_str(), &v["decided_by"]), ("own", &Value::Null));
    assert_eq!(settles_to(&app, &admin, &n2).await.0, "own");

    // From tomorrow North (and Noodles) move to South Foods, and South to North Catering.
    settle(
        &app,
        &admin,
        &n,
        json!({"settles_to": south, "effective_from": day2}),
    )
    .await;
    settle(
        &app,
        &admin,
        &so,
        json!({"settles_to": north, "effective_from": day2}),
    )
    .await;
    assert_eq!(settles_to(&app, &admin, &n1).await.0, north, "still today");
    assert_eq!(
        merchants_today(&app, &admin).await,
        [(north.clone(), sorted(&[&n, &n1])), (south.clone(), vec![])]
    );

    // Bad schedules change nothing and say why.
    let yesterday = jiff::civil::Date::strptime("%Y-%m-%d", &day1)
        .unwrap()
        .yesterday()
        .unwrap()
        .to_string();
    for (body, field) in [
        (
            json!({"settles_to": north, "effective_from": yesterday}),
            "effective_from",
        ),
        (
            json!({"settles_to": north, "effective_from": "2099-01-01"}),
            "effective_from",
        ),
        (json!({"settles_to": "nobody"}), "settles_to"),
        (
            json!({"settles_to": uuid::Uuid::now_v7().to_string()}),
            "settles_to",
        ),
    ] {
        let (s, p) = app
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/merchants/{so}/settlement"),
                Some(&admin),
                Some(body),
            )
            .await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (s, _) = app
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/merchants/{}/settlement", uuid::Uuid::now_v7()),
            Some(&admin),
            Some(json!({"settles_to": "own"})),
        )
        .await;
    assert_eq!(s, 404);
    let (_, v) = settles_to(&app, &admin, &so).await;
    assert_eq!(v["schedule"].as_array().unwrap().len(), 1, "{v}");

    // Day 1: Noodles 800 (a refund of 200), Tea 100, Catering 300, South 400.
    let at = |merchant: &str, (id, token): (String, String)| Shop {
        admin: admin.clone(),
        merchant: merchant.to_string(),
        terminal: token,
        terminal_id: id,
    };
    let noodles = at(&n1, till(&app, &admin, &n1, "Noodles till").await);
    let tea = at(&n2, till(&app, &admin, &n2, "Tea till").await);
    let catering = at(&c, till(&app, &admin, &c, "Catering till").await);
    let south_till = at(&so, till(&app, &admin, &so, "South till").await);
    let (alice, alice_me) = person(&app, &admin, "A-1").await;
    top_up(&app, &catering, &alice, 10_000).await;
    let sale = |shop: &'static str, amount: i64| {
        let (app, me) = (&app, alice_me.clone());
        let shop = match shop {
            "noodles" => &noodles,
            "tea" => &tea,
            "catering" => &catering,
            _ => &south_till,
        };
        async move {
            let p = pay(app, shop, &code(app, &me).await, amount).await;
            assert_eq!(p["status"], "succeeded", "{p}");
            p["id"].as_str().unwrap().to_string()
        }
    };
    let first = sale("noodles", 800).await;
    sale("tea", 100).await;
    sale("catering", 300).await;
    sale("south", 400).await;
    let (s, r) = keyed(
        &app,
        &format!("/api/v1/payments/{first}/refunds"),
        &admin,
        "refund-1",
        json!({"amount": 200}),
    )
    .await;
    assert_eq!(s, 201, "{r}");

    // Day 2: the moves take effect. Noodles 500, South 600; and 100 more of Noodles' day-1
    // sale refunded, which North Catering took: it is counted against them, not against
    // South Foods, who runs Noodles now.
    app.clock.advance(SignedDuration::from_hours(24));
    assert_eq!(settles_to(&app, &admin, &n1).await.0, south);
    assert_eq!(settles_to(&app, &admin, &n2).await.0, "own");
    assert_eq!(
        merchants_today(&app, &admin).await,
        [
            (north.clone(), vec![so.clone()]),
            (south.clone(), sorted(&[&n, &n1]))
        ]
    );
    sale("noodles", 500).await;
    sale("south", 600).await;
    let (s, r) = keyed(
        &app,
        &format!("/api/v1/payments/{first}/refunds"),
        &admin,
        "refund-2",
        json!({"amount": 100}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    ledger_balances(&app, &admin).await;

    // Settlement by entity: the school, then the entities by name.
    let r = report(&app, &admin, "entity-settlement", &day1, &day2).await;
    let line = |row: &Value| {
        (
            row["settlement_entity_id"].as_str().unwrap().to_string(),
            ["payments", "gross", "refunds", "net"].map(|k| row[k].as_i64().unwrap()),
        )
    };
    let lines: Vec<_> = r["rows"].as_array().unwrap().iter().map(line).collect();
    assert_eq!(
        lines,
        [
            ("own".to_string(), [3, 800, 0, 800]),
            (north.clone(), [2, 1_400, 300, 1_100]),
            (south.clone(), [1, 500, 0, 500]),
        ],
        "{r}"
    );
    assert_eq!(r["rows"][0]["settlement_entity"], "Test School");
    assert_eq!(r["rows"][1]["provider_sub_merchant"], "1900000109");
    for row in r["rows"].as_array().unwrap() {
        let parts: i64 = ["coupon", "subsidy", "balance", "deferred"]
            .iter()
            .map(|k| row[k].as_i64().unwrap())
            .sum();
        assert_eq!(row["gross"].as_i64(), Some(parts), "{row}");
    }
    // The same once the period's quarter hours are closed and rolled up (the refunds'
    // roll-ups keep their sales' quarter hours).
    app.clock.advance(SignedDuration::from_mins(20));
    let mut rolled = 0;
    loop {
        let n = app
            .state
            .store
            .roll_up_reports(app.clock.now(), SignedDuration::ZERO, 1_000)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        rolled += n;
    }
    assert!(
        rolled > 96,
        "day 1 and day 2's first quarter hour rolled up: {rolled}"
    );
    let again = report(&app, &admin, "entity-settlement", &day1, &day2).await;
    assert_eq!(again["rows"], r["rows"]);
    let clearing = report(&app, &admin, "merchant-clearing", &day1, &day2).await;
    for k in ["payments", "gross", "refunds", "net"] {
        assert_eq!(r["totals"][k], clearing["totals"][k], "{k}");
    }
    let day2_only = report(&app, &admin, "entity-settlement", &day2, &day2).await;
    let lines: Vec<_> = day2_only["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(line)
        .collect();
    assert_eq!(
        lines,
        [
            ("own".to_string(), [0, 0, 0, 0]),
            (north.clone(), [1, 600, 100, 500]),
            (south.clone(), [1, 500, 0, 500]),
        ]
    );

    // A merchant report narrowed to one entity: its merchants on its days only.
    let narrowed_from = |from: &str, to_whom: &str, field: &'static str| {
        let (app, admin, to_whom) = (&app, &admin, to_whom.to_string());
        let (from, day2) = (from.to_string(), day2.clone());
        async move {
            let (s, r) = app
                .get(
                    &format!(
                        "/api/v1/reports/merchant-clearing?from={from}&to={day2}\
                         &settlement_entity={to_whom}"
                    ),
                    admin,
                )
                .await;
            assert_eq!(s, 200, "{r}");
            by_merchant(&r, field)
        }
    };
    let narrowed = |to_whom: &str| narrowed_from(&day1, to_whom, "gross");
    assert_eq!(
        narrowed(&north).await,
        pairs(&[("N", 0), ("N1", 800), ("S", 600)])
    );
    assert_eq!(narrowed(&south).await, pairs(&[("N", 0), ("N1", 500)]));
    assert_eq!(
        narrowed("own").await,
        pairs(&[("C", 300), ("S", 400), ("N2", 100)])
    );
    assert_eq!(
        narrowed_from(&day1, &north, "refunds").await,
        pairs(&[("N", 0), ("N1", 300), ("S", 0)])
    );
    // On day 2 alone Noodles settles to South Foods, but the refund of its day-1 sale
    // still shows on North Catering's statement.
    assert_eq!(
        narrowed_from(&day2, &north, "refunds").await,
        pairs(&[("N1", 100), ("S", 0)])
    );
    assert_eq!(
        narrowed_from(&day2, &south, "refunds").await,
        pairs(&[("N", 0), ("N1", 0)])
    );
    for (query, field, rule) in [
        (
            "income-summary?settlement_entity=own".to_string(),
            "settlement_entity",
            "merchant_reports_only",
        ),
        (
            "merchant-split?settlement_entity=nobody".to_string(),
            "settlement_entity",
            "one_of",
        ),
        (
            format!("merchant-split?settlement_entity={}", uuid::Uuid::now_v7()),
            "settlement_entity",
            "exists",
        ),
    ] {
        let (s, p) = app.get(&format!("/api/v1/reports/{query}"), &admin).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(
            (
                p["errors"][0]["field"].as_str(),
                p["errors"][0]["rule"].as_str()
            ),
            (Some(field), Some(rule)),
            "{p}"
        );
    }

    // As a spreadsheet's CSV: a line per entity.
    let (mime, csv) = download(
        &app,
        &admin,
        &format!("/api/v1/reports/entity-settlement?from={day1}&to={day2}&format=csv"),
    )
    .await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    assert_eq!(&reader.headers().unwrap()[0], "settlement_entity_id");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    assert_eq!(&records[1][1], "North Catering");

    // A renamed entity carries its new name on every statement; a name is the tenant's
    // once; an entity a schedule names stays, an unused one goes.
    let (s, e) = app
        .patch(
            &format!("/api/v1/settlement-entities/{north}"),
            &admin,
            json!({"name": "North Foods"}),
        )
        .await;
    assert_eq!((s, e["name"].as_str()), (200, Some("North Foods")), "{e}");
    assert_eq!(e["merchants_today"], json!([so]));
    let (s, p) = app
        .patch(
            &format!("/api/v1/settlement-entities/{south}"),
            &admin,
            json!({"name": "North Foods"}),
        )
        .await;
    assert_problem(s, &p, 409, "settlement_entity_name_taken");
    let r = report(&app, &admin, "entity-settlement", &day1, &day1).await;
    assert_eq!(r["rows"][1]["settlement_entity"], "North Foods");
    let (s, p) = app
        .delete(&format!("/api/v1/settlement-entities/{south}"), &admin)
        .await;
    assert_problem(s, &p, 409, "settlement_entity_in_use");
    let unused = entity(&app, &admin, json!({"name": "Unused"})).await;
    let (s, _) = app
        .delete(&format!("/api/v1/settlement-entities/{unused}"), &admin)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .get(&format!("/api/v1/settlement-entities/{unused}"), &admin)
        .await;
    assert_eq!(s, 404);
    let (s, audit) = app
        .get("/api/v1/audit?action=merchant.settlement&limit=10", &admin)
        .await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["items"].as_array().unwrap().len(), 4, "{audit}");

    // A finance clerk who may read payments reads entities and schedules; changing them
    // needs payments granted to manage.
    let finance = group(
        &app,
        &admin,
        json!({"name": "Finance", "features": {"payments": "view"}}),
    )
    .await;
    let clerk = sub_admin(&app, &admin, &app.user(&admin, "F-1").await, &finance).await;
    assert_eq!(merchants_today(&app, &clerk).await.len(), 2);
    report(&app, &clerk, "entity-settlement", &day1, &day2).await;
    let (s, p) = app
        .post(
            "/api/v1/settlement-entities",
            &clerk,
            json!({"name": "Mine"}),
        )
        .await;
    assert_problem(s, &p, 403, "not_granted");
    let (s, p) = app
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/merchants/{so}/settlement"),
            Some(&clerk),
            Some(json!({"settles_to": "own"})),
        )
        .await;
    assert_problem(s, &p, 403, "not_granted");
    assert_eq!(settles_to(&app, &admin, &so).await.0, north);
}
