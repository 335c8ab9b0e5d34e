//! Enhanced analytics: what cardholders spent by department, by identity and person by
//! person, against the payments that made it, and narrowed to a sub-admin's scope.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{code, keyed, pay, person, shop_in, top_up};
use crate::on_both_engines;
use crate::reports::{download, to_nine};

on_both_engines!(spending_by_department_identity_and_person_tells_who_spent_what);

async fn spending(app: &TestApp, token: &str, query: &str) -> Value {
    let (s, r) = app
        .get(&format!("/api/v1/analytics/spending?{query}"), token)
        .await;
    assert_eq!(s, 200, "{r}");
    r
}

/// `(key, [members, payers, payments, gross, refunded, net, net_per_payer])` per line.
fn groups(r: &Value) -> Vec<(String, [i64; 7])> {
    r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["name"].as_str().unwrap().to_string(),
                [
                    "members",
                    "payers",
                    "payments",
                    "gross",
                    "refunded",
                    "net",
                    "net_per_payer",
                ]
                .map(|k| row[k].as_i64().unwrap()),
            )
        })
        .collect()
}

/// `(number, [payments, gross, refunded, net, net_per_payment])` per person.
fn people(r: &Value) -> Vec<(String, [i64; 5])> {
    r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["number"].as_str().unwrap().to_string(),
                ["payments", "gross", "refunded", "net", "net_per_payment"]
                    .map(|k| row[k].as_i64().unwrap()),
            )
        })
        .collect()
}

async fn department(app: &TestApp, admin: &str, name: &str, parent: Option<&str>) -> String {
    let (s, d) = app
        .post(
            "/api/v1/departments",
            admin,
            json!({"name": name, "parent_id": parent}),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    d["id"].as_str().unwrap().to_string()
}

async fn spending_by_department_identity_and_person_tells_who_spent_what(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (day1, day2) = to_nine(&app);
    let (_, standard) = app.tenant("university", "standard").await;
    let (s, p) = app.get("/api/v1/analytics/spending", &standard).await;
    assert_problem(s, &p, 403, "edition");
    assert_eq!(p["capability"], "enhanced_analytics");

    let shop = shop_in(&app, "advanced", 5_000).await;
    let admin = shop.admin.clone();
    let grade = department(&app, &admin, "Grade 1", None).await;
    let class = department(&app, &admin, "Class 1A", Some(&grade)).await;
    let staff = department(&app, &admin, "Staff", None).await;
    let mut cards = Vec::new();
    for (number, dept, identity) in [
        ("S-1", &class, "student"),
        ("S-2", &class, "student"),
        ("T-1", &staff, "teacher"),
    ] {
        let (id, token) = person(&app, &admin, number).await;
        let (s, u) = app
            .patch(
                &format!("/api/v1/users/{id}"),
                &admin,
                json!({"department_ids": [dept], "identity": identity}),
            )
            .await;
        assert_eq!(s, 200, "{u}");
        top_up(&app, &shop, &id, 10_000).await;
        cards.push(token);
    }
    // Someone in no department, with no identity, who never pays.
    app.user(&admin, "N-1").await;
    let buy = |card: usize, amount: i64| {
        let (app, shop, card) = (&app, &shop, cards[card].clone());
        async move {
            let p = pay(app, shop, &code(app, &card).await, amount).await;
            assert_eq!(p["status"], "succeeded", "{p}");
            p["id"].as_str().unwrap().to_string()
        }
    };
    // Day 1: S-1 three meals of 300, S-2 two of 1,200 (400 of one refunded), T-1 1,500.
    for _ in 0..3 {
        buy(0, 300).await;
    }
    let big = buy(1, 1_200).await;
    buy(1, 1_200).await;
    buy(2, 1_500).await;
    let (s, r) = keyed(
        &app,
        &format!("/api/v1/payments/{big}/refunds"),
        &admin,
        "refund",
        json!({"amount": 400}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    // Day 2: S-1 another 300.
    app.clock.advance(SignedDuration::from_hours(24));
    buy(0, 300).await;
    let both = format!("from={day1}&to={day2}");

    let r = spending(&app, &admin, &format!("{both}&by=identity")).await;
    assert_eq!(r["report"], "spending-by-identity");
    assert_eq!(
        groups(&r),
        [
            ("student".into(), [2, 2, 6, 3_600, 400, 3_200, 1_600]),
            ("teacher".into(), [1, 1, 1, 1_500, 0, 1_500, 1_500]),
            ("(no identity)".into(), [1, 0, 0, 0, 0, 0, 0]),
        ]
    );
    assert_eq!(r["totals"]["net"], 4_700);
    assert_eq!(r["totals"]["members"], 4);

    // By department: everyone in it or below it, in tree order.
    let r = spending(&app, &admin, &both).await;
    assert_eq!(r["report"], "spending-by-department");
    assert_eq!(
        groups(&r),
        [
            ("Grade 1".into(), [2, 2, 6, 3_600, 400, 3_200, 1_600]),
            ("Class 1A".into(), [2, 2, 6, 3_600, 400, 3_200, 1_600]),
            ("Staff".into(), [1, 1, 1, 1_500, 0, 1_500, 1_500]),
            ("(no department)".into(), [1, 0, 0, 0, 0, 0, 0]),
        ]
    );
    assert_eq!(r["rows"][1]["key"], class.as_str());
    assert!(r["totals"].get("net").is_none(), "lines overlap: no totals");

    // Person by person, the lowest spending first; those who eat often on little.
    let r = spending(&app, &admin, &format!("{both}&by=user")).await;
    assert_eq!(
        people(&r),
        [
            ("S-1".into(), [4, 1_200, 0, 1_200, 300]),
            ("T-1".into(), [1, 1_500, 0, 1_500, 1_500]),
            ("S-2".into(), [2, 2_400, 400, 2_000, 1_000]),
        ]
    );
    assert_eq!(r["rows"][0]["departments"], "Class 1A");
    assert_eq!(r["rows"][0]["identity"], "student");
    let r = spending(
        &app,
        &admin,
        &format!("{both}&by=user&min_payments=3&max_net=1500"),
    )
    .await;
    assert_eq!(people(&r), [("S-1".into(), [4, 1_200, 0, 1_200, 300])]);
    let r = spending(&app, &admin, &format!("{both}&by=user&min_payments=0")).await;
    assert_eq!(people(&r)[0], ("N-1".into(), [0, 0, 0, 0, 0]));
    assert_eq!(people(&r).len(), 4);
    let r = spending(&app, &admin, &format!("from={day2}&by=user")).await;
    assert_eq!(people(&r), [("S-1".into(), [1, 300, 0, 300, 300])]);

    let (mime, csv) = download(
        &app,
        &admin,
        &format!("/api/v1/analytics/spending?{both}&by=user&format=csv"),
    )
    .await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    assert_eq!(&reader.headers().unwrap()[1], "number");
    assert_eq!(reader.records().count(), 3);

    // A term at most: 100 days is too long.
    let far = jiff::civil::Date::strptime("%Y-%m-%d", &day1)
        .unwrap()
        .checked_add(jiff::Span::new().days(100))
        .unwrap();
    for (query, field, rule) in [
        (
            format!("{both}&by=identity&min_payments=2"),
            "min_payments",
            "by_user_only",
        ),
        (format!("from={day1}&to={far}"), "to", "range"),
    ] {
        let (s, p) = app
            .get(&format!("/api/v1/analytics/spending?{query}"), &admin)
            .await;
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

    // A class teacher who may read payments for Class 1A sees its people only.
    let teachers = group(
        &app,
        &admin,
        json!({"name": "Class teachers", "features": {"payments": "view"},
               "departments": [{"id": class, "access": "view"}]}),
    )
    .await;
    let teacher = sub_admin(&app, &admin, &app.user(&admin, "CT-1").await, &teachers).await;
    let r = spending(&app, &teacher, &format!("{both}&by=user")).await;
    let numbers: Vec<String> = people(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(numbers, ["S-1", "S-2"]);
    let r = spending(&app, &teacher, &both).await;
    assert_eq!(
        groups(&r),
        [("Class 1A".into(), [2, 2, 6, 3_600, 400, 3_200, 1_600])]
    );
    let r = spending(&app, &teacher, &format!("{both}&by=identity")).await;
    assert_eq!(r["totals"]["members"], 2);
    // Without the payments grant, none of it.
    let plain = group(
        &app,
        &admin,
        json!({"name": "Directory", "departments": [{"id": class, "access": "view"}]}),
    )
    .await;
    let clerk = sub_admin(&app, &admin, &app.user(&admin, "D-1").await, &plain).await;
    let (s, p) = app.get("/api/v1/analytics/spending", &clerk).await;
    assert_problem(s, &p, 403, "not_granted");
}
