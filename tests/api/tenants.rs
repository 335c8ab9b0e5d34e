//! Tenants, editions and isolation.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, Engine, ROOT_TOKEN};
use crate::on_both_engines;

on_both_engines!(another_tenants_ids_answer_404_and_never_leak);

async fn another_tenants_ids_answer_404_and_never_leak(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, a) = app.tenant("university", "standard").await;
    let (_, b) = app.tenant("enterprise", "standard").await;
    let theirs = app.user(&a, "A-001").await;
    let id = theirs["id"].as_str().unwrap();
    let path = format!("/api/v1/users/{id}");

    let (s, body) = app.get(&path, &b).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app.patch(&path, &b, json!({"name": "Hijacked"})).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app.delete(&path, &b).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app.post(&format!("{path}/tokens"), &b, json!({})).await;
    assert_problem(s, &body, 404, "not_found");

    let (s, list) = app.get("/api/v1/users", &b).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // A department of tenant A cannot be referenced from tenant B.
    let (_, dept) = app
        .post("/api/v1/departments", &a, json!({"name": "Maths"}))
        .await;
    let (s, body) = app
        .post(
            "/api/v1/users",
            &b,
            json!({"name": "X", "number": "B-1", "department_ids": [dept["id"]]}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "department_ids");

    // The same number is free in the other tenant, and A's user is untouched.
    app.user(&b, "A-001").await;
    let (s, mine) = app.get(&path, &a).await;
    assert_eq!((s, mine["name"].as_str()), (200, Some("User A-001")));
}

#[actix_web::test]
async fn a_capability_missing_from_the_edition_is_refused_with_403_naming_it() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, basic) = app.tenant("k12", "basic_edu").await;
    let (s, body) = app.get("/api/v1/stats/directory", &basic).await;
    assert_problem(s, &body, 403, "edition");
    assert_eq!(body["capability"], "analytics");
    assert_eq!(body["lowest_edition"], "standard");

    let (_, standard) = app.tenant("k12", "standard").await;
    app.user(&standard, "S1").await;
    let (s, stats) = app.get("/api/v1/stats/directory", &standard).await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["users"], 1);

    let (_, t) = app.get("/api/v1/tenant", &basic).await;
    assert_eq!(t["capabilities"], json!(["core"]));
}

#[actix_web::test]
async fn basic_edu_is_only_for_k12_tenants() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    for kind in ["university", "enterprise"] {
        let (s, body) = app
            .post(
                "/api/v1/tenants",
                ROOT_TOKEN,
                json!({"name": "X", "kind": kind, "edition": "basic_edu"}),
            )
            .await;
        assert_problem(s, &body, 422, "invalid");
        assert_eq!(body["errors"][0]["rule"], "edition_for_kind");
    }
    app.tenant("k12", "basic_edu").await;
}

#[actix_web::test]
async fn tenants_are_created_by_the_operator_only_and_tuned_by_super_admins() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (id, admin) = app.tenant("university", "advanced").await;
    let (s, body) = app
        .post(
            "/api/v1/tenants",
            &admin,
            json!({"name": "Mine", "kind": "k12", "edition": "standard"}),
        )
        .await;
    assert_problem(s, &body, 403, "forbidden");

    let (s, t) = app.get("/api/v1/tenant", &admin).await;
    assert_eq!(s, 200);
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["timezone"], "Asia/Shanghai");
    assert_eq!(
        t["settings"],
        json!({"require_agreement": true, "refund_expired_to_cash": false,
            "arrears_at_month_end": "carry_over"})
    );
    assert!(t["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("open_api")));

    let (s, t) = app
        .patch(
            "/api/v1/tenant",
            &admin,
            json!({"timezone": "Europe/Berlin", "settings": {"require_agreement": false}}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["timezone"], "Europe/Berlin");
    assert_eq!(
        t["settings"],
        json!({"require_agreement": false, "refund_expired_to_cash": false,
            "arrears_at_month_end": "carry_over"})
    );

    let (s, body) = app
        .patch(
            "/api/v1/tenant",
            &admin,
            json!({"timezone": "Nowhere/Atlantis"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    let (_, t) = app.get("/api/v1/tenant", &admin).await;
    assert_eq!(
        t["timezone"], "Europe/Berlin",
        "a refused patch changes nothing"
    );
}
