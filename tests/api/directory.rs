//! Departments and tags changed after they were made: renamed, moved (with everything
//! under them, never under themselves, never past the depth limit) and deleted only when
//! nothing holds them; a sub-admin only within what their group manages.

use serde_json::{json, Value};

use crate::groups::{department, group, member, sub_admin, tag};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::on_both_engines;

on_both_engines!(departments_and_tags_change_and_go_only_when_nothing_holds_them);

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

async fn patch_department(app: &TestApp, admin: &str, dept: &str, body: Value) -> (u16, Value) {
    app.patch(&format!("/api/v1/departments/{dept}"), admin, body)
        .await
}

/// Each department's path, in tree order.
async fn paths(app: &TestApp, admin: &str) -> Vec<String> {
    let (s, list) = app.get("/api/v1/departments", admin).await;
    assert_eq!(s, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect()
}

async fn departments_and_tags_change_and_go_only_when_nothing_holds_them(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, sa) = app.tenant("university", "standard").await;
    let science = department(&app, &sa, "Science", None).await;
    let physics = department(&app, &sa, "Physics", Some(id(&science))).await;
    let optics = department(&app, &sa, "Optics", Some(id(&physics))).await;
    let arts = department(&app, &sa, "Arts", None).await;
    let music = department(&app, &sa, "Music", Some(id(&arts))).await;
    let student = member(&app, &sa, "S-1", &[id(&optics)], &[]).await;

    // A rename keeps the place; a move takes everything under it along, and its people.
    let (s, d) = patch_department(
        &app,
        &sa,
        id(&physics),
        json!({"name": "Physical Sciences"}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        (d["path"].as_str(), d["depth"].as_u64()),
        (Some("Science/Physical Sciences"), Some(2))
    );
    let (s, d) = patch_department(&app, &sa, id(&physics), json!({"parent_id": id(&arts)})).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["path"], "Arts/Physical Sciences", "{d}");
    assert_eq!(
        paths(&app, &sa).await,
        [
            "Arts",
            "Arts/Music",
            "Arts/Physical Sciences",
            "Arts/Physical Sciences/Optics",
            "Science"
        ]
    );
    let (_, who) = app
        .get(&format!("/api/v1/users/{}", id(&student)), &sa)
        .await;
    assert_eq!(who["department_ids"], json!([id(&optics)]), "{who}");
    // To the top, and back.
    let (s, d) = patch_department(&app, &sa, id(&physics), json!({"parent_id": null})).await;
    assert_eq!((s, d["depth"].as_u64()), (200, Some(1)), "{d}");
    let (s, _) =
        patch_department(&app, &sa, id(&physics), json!({"parent_id": id(&science)})).await;
    assert_eq!(s, 200);

    // Never under itself or its own, never past ten levels, never beside a namesake; each
    // refusal changes nothing.
    let before = paths(&app, &sa).await;
    for (dept, parent, rule) in [
        (id(&physics), id(&physics), "cycle"),
        (id(&science), id(&optics), "cycle"),
    ] {
        let (s, p) = patch_department(&app, &sa, dept, json!({"parent_id": parent})).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(
            (
                p["errors"][0]["field"].as_str(),
                p["errors"][0]["rule"].as_str()
            ),
            (Some("parent_id"), Some(rule)),
            "{p}"
        );
    }
    let mut chain = vec![];
    let mut parent = id(&music).to_string();
    for level in 3..=10 {
        let d = department(&app, &sa, &format!("L{level}"), Some(&parent)).await;
        parent = id(&d).to_string();
        chain.push(d);
    }
    // Science spans three levels (Science/Physical Sciences/Optics): under Arts/Music it
    // would reach five, fine; under the tenth level, thirteen.
    let (s, p) = patch_department(&app, &sa, id(&science), json!({"parent_id": parent})).await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["rule"], "max_depth", "{p}");
    let (s, p) =
        patch_department(&app, &sa, id(&optics), json!({"parent_id": id(&chain[6])})).await;
    assert_eq!(s, 200, "the tenth level is allowed: {p}");
    let (s, p) = patch_department(&app, &sa, id(&optics), json!({"parent_id": id(&physics)})).await;
    assert_eq!(s, 200, "{p}");
    let (s, p) = patch_department(&app, &sa, id(&arts), json!({"name": "Science"})).await;
    assert_problem(s, &p, 409, "department_name_taken");
    let (s, p) = patch_department(&app, &sa, id(&physics), json!({"name": "a/b"})).await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = patch_department(
        &app,
        &sa,
        id(&physics),
        json!({"parent_id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["rule"], "exists", "{p}");
    let (s, _) = patch_department(
        &app,
        &sa,
        &uuid::Uuid::now_v7().to_string(),
        json!({"name": "X"}),
    )
    .await;
    assert_eq!(s, 404);
    let mut after = paths(&app, &sa).await;
    after.retain(|p| !p.contains("/L"));
    let mut was = before.clone();
    was.retain(|p| !p.contains("/L"));
    assert_eq!(after, was);

    // Another tenant's department is not found, for reading or changing.
    let (_, other) = app.tenant("university", "standard").await;
    let (s, _) = patch_department(&app, &other, id(&science), json!({"name": "Mine"})).await;
    assert_eq!(s, 404);
    let (s, _) = app
        .delete(&format!("/api/v1/departments/{}", id(&arts)), &other)
        .await;
    assert_eq!(s, 404);

    // A sub-admin managing Science moves within it, but not to the top, not under Arts
    // (which they only view) and not Arts itself.
    let head = member(&app, &sa, "H-1", &[id(&science)], &[]).await;
    let office = group(
        &app,
        &sa,
        json!({"name": "Science office",
               "departments": [{"id": id(&science), "access": "manage"}, {"id": id(&arts), "access": "view"}]}),
    )
    .await;
    let sub = sub_admin(&app, &sa, &head, &office).await;
    let (s, d) =
        patch_department(&app, &sub, id(&optics), json!({"parent_id": id(&science)})).await;
    assert_eq!(
        (s, d["path"].as_str()),
        (200, Some("Science/Optics")),
        "{d}"
    );
    for (dept, body) in [
        (id(&optics), json!({"parent_id": null})),
        (id(&optics), json!({"parent_id": id(&arts)})),
        (id(&arts), json!({"name": "Humanities"})),
    ] {
        let (s, p) = patch_department(&app, &sub, dept, body).await;
        assert_problem(s, &p, 403, "out_of_scope");
    }

    // A department goes only when nothing holds it, saying what does.
    for (dept, why) in [
        (id(&science), "sub-departments"),
        (id(&optics), "people belong"),
        (id(&arts), "sub-departments"),
    ] {
        let (s, p) = app
            .delete(&format!("/api/v1/departments/{dept}"), &sa)
            .await;
        assert_problem(s, &p, 409, "department_in_use");
        assert!(p["detail"].as_str().unwrap().contains(why), "{p}");
    }
    let empty = department(&app, &sa, "Empty", Some(id(&arts))).await;
    let granting = group(
        &app,
        &sa,
        json!({"name": "Empty office", "departments": [{"id": id(&empty), "access": "view"}]}),
    )
    .await;
    let (s, p) = app
        .delete(&format!("/api/v1/departments/{}", id(&empty)), &sa)
        .await;
    assert_problem(s, &p, 409, "department_in_use");
    assert!(p["detail"].as_str().unwrap().contains("admin group"), "{p}");
    let (s, _) = app
        .delete(&format!("/api/v1/admin-groups/{}", id(&granting)), &sa)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .delete(&format!("/api/v1/departments/{}", id(&empty)), &sa)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .delete(&format!("/api/v1/departments/{}", id(&empty)), &sa)
        .await;
    assert_eq!(s, 404);
    // The sub-admin deletes within Science, not what they only view.
    let lab = department(&app, &sa, "Lab", Some(id(&science))).await;
    let (s, _) = app
        .delete(&format!("/api/v1/departments/{}", id(&lab)), &sub)
        .await;
    assert_eq!(s, 204);
    let (s, p) = app
        .delete(&format!("/api/v1/departments/{}", id(&music)), &sub)
        .await;
    assert_problem(s, &p, 403, "out_of_scope");

    // Tags: renamed by a super admin, never to another's name; deleted when nobody
    // carries one and no group grants it.
    let boarders = tag(&app, &sa, "Boarders").await;
    let day = tag(&app, &sa, "Day pupils").await;
    let carrier = member(&app, &sa, "B-1", &[], &[id(&boarders)]).await;
    let (s, t) = app
        .patch(
            &format!("/api/v1/tags/{}", id(&boarders)),
            &sa,
            json!({"name": "Boarders 2026"}),
        )
        .await;
    assert_eq!((s, t["name"].as_str()), (200, Some("Boarders 2026")), "{t}");
    let (s, p) = app
        .patch(
            &format!("/api/v1/tags/{}", id(&boarders)),
            &sa,
            json!({"name": "Day pupils"}),
        )
        .await;
    assert_problem(s, &p, 409, "tag_name_taken");
    let (s, p) = app
        .patch(
            &format!("/api/v1/tags/{}", id(&boarders)),
            &sa,
            json!({"name": "a;b"}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app
        .patch(
            &format!("/api/v1/tags/{}", id(&day)),
            &sub,
            json!({"name": "Day"}),
        )
        .await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = app
        .delete(&format!("/api/v1/tags/{}", id(&boarders)), &sa)
        .await;
    assert_problem(s, &p, 409, "tag_in_use");
    assert!(
        p["detail"].as_str().unwrap().contains("people carry"),
        "{p}"
    );
    let (s, _) = app
        .patch(
            &format!("/api/v1/users/{}", id(&carrier)),
            &sa,
            json!({"tag_ids": []}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .delete(&format!("/api/v1/tags/{}", id(&boarders)), &sa)
        .await;
    assert_eq!(s, 204);
    let (s, tags) = app.get("/api/v1/tags", &sa).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = tags["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Day pupils"]);

    // Each change is in the audit log.
    for (action, n) in [
        ("department.update", 7),
        ("department.delete", 2),
        ("tag.update", 1),
        ("tag.delete", 1),
    ] {
        let (s, audit) = app
            .get(&format!("/api/v1/audit?action={action}&limit=50"), &sa)
            .await;
        assert_eq!(s, 200, "{audit}");
        assert_eq!(
            audit["items"].as_array().unwrap().len(),
            n,
            "{action}: {audit}"
        );
    }
}
