//! Sub-admin permission groups (SPEC §11): a group grants departments and tags (view or
//! manage) and features; every request of its admins is checked against them.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::on_both_engines;

on_both_engines!(
    a_sub_admin_sees_and_changes_only_what_their_group_grants,
    groups_are_validated_changed_at_once_and_kept_while_in_use,
);

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

pub(crate) async fn department(
    app: &TestApp,
    admin: &str,
    name: &str,
    parent: Option<&str>,
) -> Value {
    let (s, body) = app
        .post(
            "/api/v1/departments",
            admin,
            json!({"name": name, "parent_id": parent}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    body
}

pub(crate) async fn tag(app: &TestApp, admin: &str, name: &str) -> Value {
    let (s, body) = app.post("/api/v1/tags", admin, json!({"name": name})).await;
    assert_eq!(s, 201, "{body}");
    body
}

pub(crate) async fn member(
    app: &TestApp,
    admin: &str,
    number: &str,
    depts: &[&str],
    tags: &[&str],
) -> Value {
    let (s, body) = app
        .post(
            "/api/v1/users",
            admin,
            json!({"name": format!("User {number}"), "number": number,
                   "department_ids": depts, "tag_ids": tags}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    body
}

pub async fn group(app: &TestApp, admin: &str, body: Value) -> Value {
    let (s, group) = app.post("/api/v1/admin-groups", admin, body).await;
    assert_eq!(s, 201, "{group}");
    group
}

/// Names `user` a sub-admin of `group` and opens the binding as that person would.
pub async fn sub_admin(app: &TestApp, admin: &str, user: &Value, group: &Value) -> String {
    let (s, binding) = app
        .post(
            "/api/v1/admins",
            admin,
            json!({"user_id": id(user), "role": "sub_admin", "group_id": id(group)}),
        )
        .await;
    assert_eq!(s, 201, "{binding}");
    let (s, bound) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": binding["binding_token"]})),
        )
        .await;
    assert_eq!(s, 201, "{bound}");
    bound["token"].as_str().unwrap().to_string()
}

async fn numbers(app: &TestApp, path: &str, token: &str) -> BTreeSet<String> {
    let (s, body) = app.get(path, token).await;
    assert_eq!(s, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["number"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn a_sub_admin_sees_and_changes_only_what_their_group_grants(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, sa) = app.tenant("university", "standard").await;
    let teaching = department(&app, &sa, "Teaching", None).await;
    let maths = department(&app, &sa, "Maths", Some(id(&teaching))).await;
    let algebra = department(&app, &sa, "Algebra", Some(id(&maths))).await;
    let office = department(&app, &sa, "Office", None).await;
    let boarders = tag(&app, &sa, "Boarders").await;
    let staff = tag(&app, &sa, "Staff").await;
    let (t, m, a, o) = (id(&teaching), id(&maths), id(&algebra), id(&office));
    let (b, st) = (id(&boarders), id(&staff));

    let head = member(&app, &sa, "M-HEAD", &[m], &[]).await;
    let in_maths = member(&app, &sa, "M-1", &[m], &[]).await;
    let in_teaching = member(&app, &sa, "T-1", &[t], &[]).await;
    let in_office = member(&app, &sa, "O-1", &[o], &[]).await;
    let boarder = member(&app, &sa, "O-2", &[o], &[b]).await;
    let both = member(&app, &sa, "MO-1", &[m, o], &[st]).await;

    let maths_office = group(
        &app,
        &sa,
        json!({"name": "Maths office",
               "departments": [{"id": t, "access": "view"}, {"id": m, "access": "manage"}],
               "tags": [{"id": b, "access": "view"}]}),
    )
    .await;
    let ma = sub_admin(&app, &sa, &head, &maths_office).await;

    // Who they are and what they may do.
    let (s, me) = app.get("/api/v1/admins/me", &ma).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["role"], "sub_admin");
    assert_eq!(me["grants"]["departments"][1]["access"], "manage");
    let (_, me) = app.get("/api/v1/admins/me", &sa).await;
    assert_eq!(me["role"], "super_admin");
    assert!(me["grants"].is_null());

    // What they see: the granted departments with their subtrees, the granted tag, and
    // the users of both; nothing of the office but the boarder and the user who is in
    // Maths too.
    let (_, depts) = app.get("/api/v1/departments", &ma).await;
    let names: Vec<_> = depts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Teaching", "Teaching/Maths", "Teaching/Maths/Algebra"]
    );
    let (_, tags) = app.get("/api/v1/tags", &ma).await;
    assert_eq!(tags["items"].as_array().unwrap().len(), 1);
    assert_eq!(tags["items"][0]["name"], "Boarders");
    assert_eq!(
        numbers(&app, "/api/v1/users", &ma).await,
        set(&["M-HEAD", "M-1", "T-1", "O-2", "MO-1"])
    );
    assert_eq!(
        numbers(&app, &format!("/api/v1/users?department_id={o}"), &ma).await,
        set(&["O-2", "MO-1"])
    );
    assert_eq!(
        numbers(&app, "/api/v1/users?limit=2", &ma).await.len(),
        2,
        "pages of the scoped list"
    );
    assert_eq!(numbers(&app, "/api/v1/users", &sa).await.len(), 6);
    let (s, body) = app
        .get(&format!("/api/v1/users/{}", id(&in_office)), &ma)
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (s, _) = app
        .get(&format!("/api/v1/users/{}", id(&in_teaching)), &ma)
        .await;
    assert_eq!(s, 200);

    // What they change: users of Maths and below, and only those memberships.
    let user_path = |u: &Value| format!("/api/v1/users/{}", id(u));
    let (s, body) = app
        .patch(
            &user_path(&in_teaching),
            &ma,
            json!({"name": "Viewed Only"}),
        )
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .patch(&user_path(&boarder), &ma, json!({"status": "suspended"}))
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .patch(&user_path(&in_office), &ma, json!({"name": "Hidden"}))
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app
        .patch(&user_path(&in_maths), &ma, json!({"department_ids": [a]}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["department_ids"], json!([a]));
    let (s, body) = app
        .patch(&user_path(&in_maths), &ma, json!({"department_ids": [o]}))
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    // The user in Maths and the office keeps the office and the Staff tag, which the
    // group does not manage.
    let (s, body) = app
        .patch(&user_path(&both), &ma, json!({"department_ids": [a]}))
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .patch(&user_path(&both), &ma, json!({"tag_ids": []}))
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .patch(&user_path(&both), &ma, json!({"department_ids": [a, o]}))
        .await;
    assert_eq!(s, 200, "{body}");
    let (_, unchanged) = app.get(&user_path(&in_office), &sa).await;
    assert_eq!(unchanged["name"], "User O-1");
    assert_eq!(unchanged["department_ids"], json!([o]));

    // New users go under what they manage.
    let (s, body) = app
        .post(
            "/api/v1/users",
            &ma,
            json!({"name": "New", "number": "N-0"}),
        )
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .post(
            "/api/v1/users",
            &ma,
            json!({"name": "New", "number": "N-0", "department_ids": [o]}),
        )
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .post(
            "/api/v1/users",
            &ma,
            json!({"name": "New", "number": "N-0", "department_ids": [t]}),
        )
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let created = member(&app, &ma, "N-1", &[a], &[]).await;
    let (s, _) = app.delete(&user_path(&created), &ma).await;
    assert_eq!(s, 204);
    let (s, body) = app.delete(&user_path(&in_office), &ma).await;
    assert_problem(s, &body, 404, "not_found");

    // Batches: all of them theirs, or nothing changes.
    let (s, body) = app
        .post(
            "/api/v1/users/batch-update",
            &ma,
            json!({"user_ids": [id(&in_maths), id(&in_office)], "status": "suspended"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    let (s, body) = app
        .post(
            "/api/v1/users/batch-update",
            &ma,
            json!({"user_ids": [id(&in_maths), id(&both)], "remove_tag_ids": [st]}),
        )
        .await;
    assert_problem(s, &body, 403, "out_of_scope");
    let (s, body) = app
        .post(
            "/api/v1/users/batch-update",
            &ma,
            json!({"user_ids": [id(&in_maths), id(&both)], "status": "suspended"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["updated"], 2);
    let (_, office_user) = app.get(&user_path(&in_office), &sa).await;
    assert_eq!(office_user["status"], "active");

    // Departments: only under one they manage; tags are the super admin's.
    let (s, _) = app
        .post(
            "/api/v1/departments",
            &ma,
            json!({"name": "Geometry", "parent_id": m}),
        )
        .await;
    assert_eq!(s, 201);
    for (parent, status, code) in [
        (Some(t), 403, "out_of_scope"),
        (None, 403, "out_of_scope"),
        (Some(o), 422, "invalid"),
    ] {
        let (s, body) = app
            .post(
                "/api/v1/departments",
                &ma,
                json!({"name": "Nope", "parent_id": parent}),
            )
            .await;
        assert_problem(s, &body, status, code);
    }
    let (s, body) = app.post("/api/v1/tags", &ma, json!({"name": "Mine"})).await;
    assert_problem(s, &body, 403, "forbidden");

    // No feature granted: no money, no admins, no audit, no import.
    for path in [
        "/api/v1/merchants",
        "/api/v1/payments",
        "/api/v1/ledger/check",
        "/api/v1/stats/wallets",
        "/api/v1/reports/income-summary",
        &format!("/api/v1/users/{}/wallet", id(&in_maths)),
    ] {
        let (s, body) = app.get(path, &ma).await;
        assert_problem(s, &body, 403, "not_granted");
    }
    for path in [
        "/api/v1/admins",
        "/api/v1/audit",
        "/api/v1/admin-groups",
        "/api/v1/stats/directory",
    ] {
        let (s, body) = app.get(path, &ma).await;
        assert_problem(s, &body, 403, "forbidden");
    }
    let (s, body) = app
        .post(
            &format!("/api/v1/users/{}/wallet/topups", id(&in_maths)),
            &ma,
            json!({"amount": 100}),
        )
        .await;
    assert_problem(s, &body, 403, "not_granted");

    // Every change they made is in the audit log under their admin id.
    let (_, audit) = app.get("/api/v1/audit?limit=200", &sa).await;
    let actor = format!("admin:{}", me_id(&app, &ma).await);
    let mine = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == actor)
        .count();
    assert!(mine >= 6, "{audit}");
}

async fn me_id(app: &TestApp, token: &str) -> String {
    let (_, me) = app.get("/api/v1/admins/me", token).await;
    me["id"].as_str().unwrap().to_string()
}

async fn groups_are_validated_changed_at_once_and_kept_while_in_use(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, sa) = app.tenant("university", "standard").await;
    let dept = department(&app, &sa, "Finance", None).await;
    let clerk = member(&app, &sa, "F-1", &[id(&dept)], &[]).await;

    // Bad groups change nothing.
    for (body, status, code) in [
        (json!({"name": ""}), 422, "invalid"),
        (json!({"name": "x".repeat(33)}), 422, "invalid"),
        (
            json!({"name": "Dup", "departments": [{"id": id(&dept), "access": "view"},
                                                 {"id": id(&dept), "access": "manage"}]}),
            422,
            "invalid",
        ),
        (
            json!({"name": "Ghost", "departments": [{"id": uuid::Uuid::now_v7(), "access": "view"}]}),
            422,
            "invalid",
        ),
        (
            json!({"name": "Rockets", "features": {"rockets": "view"}}),
            422,
            "invalid",
        ),
        (
            json!({"name": "Lvl", "features": {"payments": "own"}}),
            422,
            "invalid",
        ),
        (
            json!({"name": "Apps", "apps": ["shuttle", "shuttle"]}),
            422,
            "invalid",
        ),
    ] {
        let (s, problem) = app.post("/api/v1/admin-groups", &sa, body.clone()).await;
        assert_problem(s, &problem, status, code);
    }
    let (_, list) = app.get("/api/v1/admin-groups", &sa).await;
    assert_eq!(list["items"], json!([]), "nothing stored");

    let finance = group(
        &app,
        &sa,
        json!({"name": "Finance", "features": {"payments": "view"}, "apps": ["canteen"]}),
    )
    .await;
    assert_eq!(finance["features"], json!({"payments": "view"}));
    let (s, body) = app
        .post("/api/v1/admin-groups", &sa, json!({"name": "Finance"}))
        .await;
    assert_problem(s, &body, 409, "group_name_taken");

    // The role and the group go together.
    let (s, body) = app
        .post(
            "/api/v1/admins",
            &sa,
            json!({"user_id": id(&clerk), "role": "sub_admin"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "group_id");
    let (s, body) = app
        .post(
            "/api/v1/admins",
            &sa,
            json!({"user_id": id(&clerk), "role": "super_admin", "group_id": id(&finance)}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    let (s, body) = app
        .post(
            "/api/v1/admins",
            &sa,
            json!({"user_id": id(&clerk), "role": "sub_admin", "group_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "group_id");

    let fa = sub_admin(&app, &sa, &clerk, &finance).await;
    let (_, admins) = app.get("/api/v1/admins", &sa).await;
    assert!(admins["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["group_id"] == finance["id"] && a["role"] == "sub_admin"));

    // Payments (view): reads money, sees no users, moves nothing.
    let (s, _) = app.get("/api/v1/merchants", &fa).await;
    assert_eq!(s, 200);
    let (s, report) = app.get("/api/v1/reports/merchant-clearing", &fa).await;
    assert_eq!(s, 200, "{report}");
    let (s, _) = app.get("/api/v1/ledger/check", &fa).await;
    assert_eq!(s, 200);
    assert!(numbers(&app, "/api/v1/users", &fa).await.is_empty());
    let (s, body) = app
        .post("/api/v1/merchants", &fa, json!({"name": "Canteen"}))
        .await;
    assert_problem(s, &body, 403, "not_granted");

    // Raised to manage: it holds on the next request.
    let (s, patched) = app
        .patch(
            &format!("/api/v1/admin-groups/{}", id(&finance)),
            &sa,
            json!({"features": {"payments": "manage"}}),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["name"], "Finance");
    assert_eq!(patched["apps"], json!(["canteen"]), "fields not given stay");
    let (s, body) = app
        .post("/api/v1/merchants", &fa, json!({"name": "Canteen"}))
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = app
        .patch(
            &format!("/api/v1/admin-groups/{}", id(&finance)),
            &fa,
            json!({"features": {}}),
        )
        .await;
    assert_problem(s, &body, 403, "forbidden");

    // Kept while an admin belongs to it; gone with its last admin.
    let path = format!("/api/v1/admin-groups/{}", id(&finance));
    let (s, body) = app.delete(&path, &sa).await;
    assert_problem(s, &body, 409, "group_in_use");
    let (s, _) = app.get(&path, &sa).await;
    assert_eq!(s, 200);
    let fa_id = me_id(&app, &fa).await;
    let (s, _) = app.delete(&format!("/api/v1/admins/{fa_id}"), &sa).await;
    assert_eq!(s, 204);
    let (s, _) = app.get("/api/v1/merchants", &fa).await;
    assert_eq!(s, 401, "the removed admin's token is revoked");
    let (s, _) = app.delete(&path, &sa).await;
    assert_eq!(s, 204);
    let (s, body) = app.get(&path, &sa).await;
    assert_problem(s, &body, 404, "not_found");

    // Another tenant's group is unknown.
    let (_, other) = app.tenant("enterprise", "standard").await;
    let theirs = group(&app, &other, json!({"name": "Theirs"})).await;
    let (s, body) = app
        .get(&format!("/api/v1/admin-groups/{}", id(&theirs)), &sa)
        .await;
    assert_problem(s, &body, 404, "not_found");

    let (_, audit) = app.get("/api/v1/audit?limit=200", &sa).await;
    let actions: BTreeSet<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("admin_group."))
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            "admin_group.create",
            "admin_group.update",
            "admin_group.delete"
        ])
    );
}
