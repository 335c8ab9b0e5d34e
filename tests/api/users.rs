//! Users: uniqueness, masking, moves, batches, filters and cursor pages.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, Engine};
use crate::on_both_engines;

on_both_engines!(
    a_duplicate_number_is_409_and_changes_nothing,
    cursor_pages_cover_every_user_once
);

async fn a_duplicate_number_is_409_and_changes_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    app.user(&admin, "S-100").await;
    let (s, body) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Twin", "number": "S-100"}),
        )
        .await;
    assert_problem(s, &body, 409, "number_taken");
    let other = app.user(&admin, "S-101").await;
    let (s, body) = app
        .patch(
            &format!("/api/v1/users/{}", other["id"].as_str().unwrap()),
            &admin,
            json!({"number": "S-100", "name": "Renamed"}),
        )
        .await;
    assert_problem(s, &body, 409, "number_taken");
    let (_, list) = app.get("/api/v1/users?q=S-10", &admin).await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["User S-100", "User S-101"],
        "the refused patch renamed nobody"
    );
}

async fn cursor_pages_cover_every_user_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let mut csv = String::from(
        "onecard-users-template,v1\nname,number,phone,id_number,department,tags,identity\n",
    );
    for i in 0..120 {
        csv.push_str(&format!("Person {i},P{i:04},,,,,\n"));
    }
    let (s, out) = app.upload(&admin, "users.csv", csv.into_bytes()).await;
    assert_eq!(s, 201, "{out}");

    let mut seen = HashSet::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=50&cursor={c}"),
            None => "/api/v1/users?limit=50".to_string(),
        };
        let (s, page) = app.get(&path, &admin).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        for u in page["items"].as_array().unwrap() {
            assert!(
                seen.insert(u["number"].as_str().unwrap().to_string()),
                "no user twice"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (120, 3));

    let (s, body) = app.get("/api/v1/users?cursor=not-a-cursor", &admin).await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "cursor");
    for bad in ["0", "501", "x"] {
        let (s, body) = app.get(&format!("/api/v1/users?limit={bad}"), &admin).await;
        assert_problem(s, &body, 422, "invalid");
        assert_eq!(body["errors"][0]["field"], "limit");
    }
}

#[actix_web::test]
async fn id_numbers_are_only_ever_shown_as_the_last_four() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let raw = "11010519491231002x";
    let (s, created) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Masked", "number": "M-1", "id_number": raw}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["id_number"], "****002X");
    let id = created["id"].as_str().unwrap();
    let (_, got) = app.get(&format!("/api/v1/users/{id}"), &admin).await;
    let (_, list) = app.get("/api/v1/users", &admin).await;
    let (_, audit) = app.get("/api/v1/audit", &admin).await;
    for doc in [&got, &list, &audit] {
        let text = doc.to_string().to_uppercase();
        assert!(
            !text.contains("11010519491231002X"),
            "full ID number leaked: {text}"
        );
        assert!(
            !text.contains("1949"),
            "part of the ID number beyond the last 4 leaked"
        );
    }
    assert_eq!(got["id_number"], "****002X");
    let (_, cleared) = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin,
            json!({"id_number": null}),
        )
        .await;
    assert!(cleared["id_number"].is_null());
    let (s, body) = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin,
            json!({"id_number": "12"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "id_number");
}

#[actix_web::test]
async fn users_move_between_departments_filter_and_delete() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (_, teaching) = app
        .post("/api/v1/departments", &admin, json!({"name": "Teaching"}))
        .await;
    let (s, maths) = app
        .post(
            "/api/v1/departments",
            &admin,
            json!({"name": "Maths", "parent_id": teaching["id"]}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(maths["path"], "Teaching/Maths");
    let (_, physics) = app
        .post(
            "/api/v1/departments",
            &admin,
            json!({"name": "Physics", "parent_id": teaching["id"]}),
        )
        .await;
    let (_, night) = app
        .post("/api/v1/tags", &admin, json!({"name": "night-shift"}))
        .await;
    let (s, body) = app
        .post("/api/v1/tags", &admin, json!({"name": "night-shift"}))
        .await;
    assert_problem(s, &body, 409, "tag_name_taken");

    let (s, u) = app
        .post("/api/v1/users", &admin, json!({"name": "Han Meimei", "number": "T-7", "department_ids": [maths["id"]], "tag_ids": [night["id"]], "phone": "138 0000 0000"}))
        .await;
    assert_eq!(s, 201, "{u}");
    assert_eq!(u["phone"], "13800000000");
    let id = u["id"].as_str().unwrap();
    let (s, moved) = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin,
            json!({"department_ids": [physics["id"]]}),
        )
        .await;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(moved["department_ids"], json!([physics["id"]]));
    assert_eq!(moved["tag_ids"], json!([night["id"]]));

    let by = |q: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.get(&format!("/api/v1/users?{q}"), &admin).await.1["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(
        by(format!("department_id={}", maths["id"].as_str().unwrap())).await,
        0
    );
    assert_eq!(
        by(format!("department_id={}", physics["id"].as_str().unwrap())).await,
        1
    );
    assert_eq!(
        by(format!("tag_id={}", night["id"].as_str().unwrap())).await,
        1
    );
    assert_eq!(by("q=Meimei".into()).await, 1);
    assert_eq!(by("q=T-".into()).await, 1);
    assert_eq!(by("status=suspended".into()).await, 0);

    let (_, depts) = app.get("/api/v1/departments", &admin).await;
    let paths: Vec<_> = depts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["Teaching", "Teaching/Maths", "Teaching/Physics"]);

    let (s, _) = app.delete(&format!("/api/v1/users/{id}"), &admin).await;
    assert_eq!(s, 204);
    let (s, body) = app.get(&format!("/api/v1/users/{id}"), &admin).await;
    assert_problem(s, &body, 404, "not_found");
}

#[actix_web::test]
async fn a_batch_update_applies_to_every_user_or_to_none() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (_, other) = app.tenant("university", "standard").await;
    let ids: Vec<_> = [app.user(&admin, "B1").await, app.user(&admin, "B2").await]
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    let foreign = app.user(&other, "F1").await;
    let (_, alumni) = app
        .post("/api/v1/departments", &admin, json!({"name": "Alumni"}))
        .await;

    let (s, body) = app
        .post(
            "/api/v1/users/batch-update",
            &admin,
            json!({"user_ids": [ids[0], foreign["id"]], "status": "left"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "user_ids");
    let (_, u) = app
        .get(
            &format!("/api/v1/users/{}", ids[0].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(u["status"], "active", "nothing applied");

    let (s, body) = app
        .post("/api/v1/users/batch-update", &admin, json!({"user_ids": ids, "status": "left", "department_ids": [alumni["id"]], "identity": "alumni"}))
        .await;
    assert_eq!((s, body["updated"].as_u64()), (200, Some(2)), "{body}");
    for id in &ids {
        let (_, u) = app
            .get(&format!("/api/v1/users/{}", id.as_str().unwrap()), &admin)
            .await;
        assert_eq!(
            (u["status"].as_str(), u["identity"].as_str()),
            (Some("left"), Some("alumni"))
        );
        assert_eq!(u["department_ids"], json!([alumni["id"]]));
    }
    let (s, body) = app
        .post(
            "/api/v1/users/batch-update",
            &admin,
            json!({"user_ids": []}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
}

#[actix_web::test]
async fn field_rules_are_all_listed_and_control_characters_refused() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (s, body) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Bad\u{0}Name", "number": "has space", "phone": "abc"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    let got: Vec<(String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().into(),
                e["rule"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("name".into(), "no_control_chars".into()),
            ("number".into(), "pattern".into()),
            ("phone".into(), "pattern".into())
        ]
    );
    let (_, list) = app.get("/api/v1/users", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[actix_web::test]
async fn a_super_admin_can_issue_a_cardholder_token_that_is_not_an_admin_token() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let u = app.user(&admin, "K-1").await;
    let (s, issued) = app
        .post(
            &format!("/api/v1/users/{}/tokens", u["id"].as_str().unwrap()),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{issued}");
    let cardholder = issued["token"].as_str().unwrap();
    let (s, body) = app.get("/api/v1/users", cardholder).await;
    assert_problem(s, &body, 403, "forbidden");
    let (_, audit) = app
        .get("/api/v1/audit?action=user.token.create", &admin)
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
}
