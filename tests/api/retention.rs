//! Retention (docs/OPERATIONS.md, "Retention"): a tenant limits how long the scenario
//! apps' personal records are kept; the purge takes those past it and nothing else.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::shop;
use crate::on_both_engines;
use crate::shuttle::{bound, member, personal_code};

on_both_engines!(records_past_the_tenants_retention_are_purged_and_the_rest_stay);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// A count-only collection code of `merchant`: its code.
async fn count_code(app: &TestApp, admin: &str, merchant: &str) -> String {
    let (s, t) = app
        .post(
            &format!("/api/v1/merchants/{merchant}/terminals"),
            admin,
            json!({"name": "Gym door", "kind": "collection", "mode": "count"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    t["collection"]["code"].as_str().unwrap().to_string()
}

async fn visit(app: &TestApp, me: &str, code: &str) {
    let (s, v) = app
        .post(
            &format!("/api/v1/collection-codes/{code}/visits"),
            me,
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

async fn count(app: &TestApp, admin: &str, path: &str) -> usize {
    let (s, list) = app.get(path, admin).await;
    assert_eq!(s, 200, "{list}");
    list["items"].as_array().unwrap().len()
}

async fn records_past_the_tenants_retention_are_purged_and_the_rest_stay(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let here = shop(&app, 5_000).await;
    let admin = &here.admin;
    let tenant = app.tenant_of(admin).await.to_string();
    let (_, me) = member(&app, admin, "Rider R-1", "R-1", "staff").await;
    member(&app, admin, "Host H-1", "H-1", "staff").await;

    // Limits are checked: 30 days to 10 years, or null.
    for days in [json!(29), json!(3651), json!(-1)] {
        let (s, body) = app
            .patch(
                "/api/v1/tenant",
                admin,
                json!({"settings": {"retention": {"shuttle_rides_days": days}}}),
            )
            .await;
        assert_problem(s, &body, 422, "invalid");
        assert_eq!(
            body["errors"][0]["field"], "settings.retention.shuttle_rides_days",
            "{days}: {body}"
        );
    }
    let (_, t) = app.get("/api/v1/tenant", admin).await;
    assert_eq!(
        t["settings"].get("retention"),
        None,
        "nothing set: everything kept"
    );

    // One record of three kinds, made now.
    let door = count_code(&app, admin, &here.merchant).await;
    visit(&app, &me, &door).await;
    let (_, route) = app
        .post(
            "/api/v1/shuttle/routes",
            admin,
            json!({"name": "East gate"}),
        )
        .await;
    let (_, bus) = app
        .post(
            "/api/v1/shuttle/buses",
            admin,
            json!({"route_id": route["id"], "name": "Bus 3"}),
        )
        .await;
    let link = format!("/api/v1/shuttle/buses/{}/binding", id(&bus));
    let phone = bound(&app, admin, &link, "/api/v1/shuttle/bind").await;
    let code = personal_code(&app, &me).await;
    let (s, ride) = app
        .post("/api/v1/shuttle/rides", &phone, json!({"code": code}))
        .await;
    assert_eq!(s, 201, "{ride}");
    let now = app.clock_now();
    let (s, asked) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/visitors/requests",
            None,
            Some(json!({
                "tenant_id": tenant, "host_number": "H-1", "host_name": "Host H-1",
                "name": "Wang Fang", "phone": "138 0000 0000",
                "starts_at": (now + SignedDuration::from_hours(1)).to_string(),
                "ends_at": (now + SignedDuration::from_hours(3)).to_string(),
            })),
        )
        .await;
    assert_eq!(s, 201, "{asked}");
    // Another tenant's visit, which keeps everything.
    let there = shop(&app, 5_000).await;
    let (_, them) = member(&app, &there.admin, "Other O-1", "O-1", "staff").await;
    let their_door = count_code(&app, &there.admin, &there.merchant).await;
    visit(&app, &them, &their_door).await;

    // Rides and visitors' requests 30 days; visits 60.
    let (s, t) = app
        .patch(
            "/api/v1/tenant",
            admin,
            json!({"settings": {"retention": {
                "shuttle_rides_days": 30, "visitor_requests_days": 30,
                "collection_visits_days": 60,
            }}}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["settings"]["retention"]["shuttle_rides_days"], 30);
    assert_eq!(t["settings"]["retention"]["check_ins_days"], Value::Null);

    // 31 days on, with a fresh visit: the ride and the request go; both visits stay.
    app.clock.advance(SignedDuration::from_hours(24 * 31));
    visit(&app, &me, &door).await;
    assert_eq!(onecard::retention::purge_all(&app.state).await.unwrap(), 2);
    assert_eq!(count(&app, admin, "/api/v1/shuttle/rides").await, 0);
    assert_eq!(count(&app, admin, "/api/v1/visitors/requests").await, 0);
    assert_eq!(count(&app, admin, "/api/v1/visits").await, 2);
    // 61 days on: the first visit goes; the fresh one and the other tenant's stay.
    app.clock.advance(SignedDuration::from_hours(24 * 30));
    assert_eq!(onecard::retention::purge_all(&app.state).await.unwrap(), 1);
    assert_eq!(count(&app, admin, "/api/v1/visits").await, 1);
    assert_eq!(count(&app, &there.admin, "/api/v1/visits").await, 1);
    assert_eq!(onecard::retention::purge_all(&app.state).await.unwrap(), 0);

    // Each purge is in the tenant's audit log, by the server, with its counts.
    let (_, log) = app.get("/api/v1/audit?action=retention.purge", admin).await;
    let entries = log["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert!(entries.iter().all(|e| e["actor"] == "system"));
    let mut details: Vec<Value> = entries.iter().map(|e| e["detail"].clone()).collect();
    details.sort_by_key(|d| d.to_string());
    assert_eq!(
        details,
        vec![
            json!({"collection_visits": 1}),
            json!({"shuttle_rides": 1, "visitor_requests": 1}),
        ]
    );

    // null keeps a kind for good again.
    let (s, t) = app
        .patch(
            "/api/v1/tenant",
            admin,
            json!({"settings": {"retention": {"shuttle_rides_days": null}}}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        t["settings"]["retention"]["shuttle_rides_days"],
        Value::Null
    );
    assert_eq!(t["settings"]["retention"]["collection_visits_days"], 60);
    let (s, body) = app
        .patch(
            "/api/v1/tenant",
            admin,
            json!({"settings": {"retention": {"payments_days": 30}}}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(
        body["errors"][0]["rule"], "unknown_field",
        "money is never purged"
    );
}
