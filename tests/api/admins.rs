//! Admin binding (one-time, 24 h), the last super admin, and the audit log.

use jiff::SignedDuration;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, Engine, ROOT_TOKEN};
use crate::money::person;
use crate::on_both_engines;

on_both_engines!(
    a_binding_link_works_once_and_then_answers_410,
    the_last_super_admin_cannot_be_removed,
    every_admin_write_is_audited_with_who_what_target_and_request_id,
    a_binding_opened_with_someone_elses_card_is_refused_and_stays_unused,
);

async fn a_binding_link_works_once_and_then_answers_410(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let user = app.user(&admin, "T-01").await;
    let (s, binding) = app
        .post(
            "/api/v1/admins",
            &admin,
            json!({"user_id": user["id"], "role": "super_admin"}),
        )
        .await;
    assert_eq!(s, 201, "{binding}");
    let token = binding["binding_token"].as_str().unwrap();
    assert!(binding["binding_url"].as_str().unwrap().ends_with(token));

    let (s, bound) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": token})),
        )
        .await;
    assert_eq!(s, 201, "{bound}");
    assert_eq!(bound["admin_id"], binding["id"]);
    let new_admin = bound["token"].as_str().unwrap();
    let (s, _) = app.get("/api/v1/tenant", new_admin).await;
    assert_eq!(s, 200, "the bound admin's token works");

    let (s, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": token})),
        )
        .await;
    assert_problem(s, &body, 410, "binding_used_or_expired");
    let (s, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": "never-issued"})),
        )
        .await;
    assert_problem(s, &body, 404, "not_found");

    // A second grant for the same user is a conflict; an unknown user is invalid.
    let (s, body) = app
        .post(
            "/api/v1/admins",
            &admin,
            json!({"user_id": user["id"], "role": "super_admin"}),
        )
        .await;
    assert_problem(s, &body, 409, "already_admin");
    let (s, body) = app
        .post(
            "/api/v1/admins",
            &admin,
            json!({"user_id": uuid::Uuid::now_v7(), "role": "super_admin"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "user_id");

    // A link left unused for 24 hours has expired.
    let other = app.user(&admin, "T-02").await;
    let (_, late) = app
        .post(
            "/api/v1/admins",
            &admin,
            json!({"user_id": other["id"], "role": "super_admin"}),
        )
        .await;
    app.clock.advance(SignedDuration::from_hours(24));
    let (s, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": late["binding_token"]})),
        )
        .await;
    assert_problem(s, &body, 410, "binding_used_or_expired");
}

async fn the_last_super_admin_cannot_be_removed(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, first) = app.tenant("university", "standard").await;
    let (_, admins) = app.get("/api/v1/admins", &first).await;
    let first_id = admins["items"][0]["id"].as_str().unwrap().to_string();
    let (s, body) = app
        .delete(&format!("/api/v1/admins/{first_id}"), &first)
        .await;
    assert_problem(s, &body, 409, "last_super_admin");

    let user = app.user(&first, "T-01").await;
    let (_, binding) = app
        .post(
            "/api/v1/admins",
            &first,
            json!({"user_id": user["id"], "role": "super_admin"}),
        )
        .await;
    let (_, bound) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            None,
            Some(json!({"binding_token": binding["binding_token"]})),
        )
        .await;
    let second = bound["token"].as_str().unwrap();

    let (s, _) = app
        .delete(&format!("/api/v1/admins/{first_id}"), second)
        .await;
    assert_eq!(s, 204);
    let (s, body) = app.get("/api/v1/tenant", &first).await;
    assert_problem(s, &body, 401, "unauthorized");
    let (s, body) = app
        .delete(
            &format!("/api/v1/admins/{}", binding["id"].as_str().unwrap()),
            second,
        )
        .await;
    assert_problem(s, &body, 409, "last_super_admin");
    // An admin's user cannot be deleted out from under them.
    let (s, body) = app
        .delete(
            &format!("/api/v1/users/{}", user["id"].as_str().unwrap()),
            second,
        )
        .await;
    assert_problem(s, &body, 409, "user_is_admin");
}

async fn every_admin_write_is_audited_with_who_what_target_and_request_id(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (tenant_id, admin) = app.tenant("university", "standard").await;
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Audited", "number": "AU-1", "id_number": "110105194912310021"}))
        .send()
        .await
        .unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let user: serde_json::Value = res.json().await.unwrap();
    let user_id = user["id"].as_str().unwrap();
    app.patch(
        &format!("/api/v1/users/{user_id}"),
        &admin,
        json!({"phone": "13800000000"}),
    )
    .await;
    for i in 0..3 {
        app.post("/api/v1/tags", &admin, json!({"name": format!("tag{i}")}))
            .await;
    }

    let (s, page) = app
        .get(&format!("/api/v1/audit?target_id={user_id}"), &admin)
        .await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "user.update", "newest first");
    assert_eq!(items[1]["action"], "user.create");
    assert_eq!(items[1]["request_id"], request_id.as_str());
    assert!(items[1]["actor"].as_str().unwrap().starts_with("admin:"));
    assert_eq!(items[1]["target_type"], "user");
    assert!(
        !page.to_string().contains("110105194912310021"),
        "no ID number in the audit log"
    );
    assert!(
        !page.to_string().contains("13800000000"),
        "no phone in the audit log"
    );

    let (_, first) = app.get("/api/v1/audit?limit=2", &admin).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(&format!("/api/v1/audit?limit=50&cursor={cursor}"), &admin)
        .await;
    assert_eq!(
        rest["items"].as_array().unwrap().len(),
        3,
        "5 entries in all: 2 user, 3 tags"
    );
    assert!(rest["next_cursor"].is_null());
    let (_, tags) = app.get("/api/v1/audit?action=tag.create", &admin).await;
    assert_eq!(tags["items"].as_array().unwrap().len(), 3);

    // The operator sees platform actions such as creating this tenant.
    let (s, platform) = app
        .get(&format!("/api/v1/audit?target_id={tenant_id}"), ROOT_TOKEN)
        .await;
    assert_eq!(s, 200);
    assert_eq!(platform["items"][0]["action"], "tenant.create");
    assert_eq!(platform["items"][0]["actor"], "root");
}

async fn a_binding_opened_with_someone_elses_card_is_refused_and_stays_unused(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (named, own_card) = person(&app, &admin, "T-01").await;
    let (_, colleague) = person(&app, &admin, "T-02").await;
    let (_, other_admin) = app.tenant("university", "standard").await;
    let (_, stranger) = person(&app, &other_admin, "T-01").await;
    let (s, binding) = app
        .post(
            "/api/v1/admins",
            &admin,
            json!({"user_id": named, "role": "super_admin"}),
        )
        .await;
    assert_eq!(s, 201, "{binding}");
    // The link as a QR code to scan: an SVG image.
    assert!(binding["binding_qr_svg"].as_str().unwrap().contains("<svg"));
    let body = json!({"binding_token": binding["binding_token"]});
    let bind = |card: Option<String>| {
        let body = body.clone();
        let app = &app;
        async move {
            app.send(
                reqwest::Method::POST,
                "/api/v1/admins/bind",
                card.as_deref(),
                Some(body),
            )
            .await
        }
    };
    // A colleague's card, or the same number's card in another tenant, is not the person.
    for card in [&colleague, &stranger] {
        let (s, refused) = bind(Some(card.clone())).await;
        assert_problem(s, &refused, 403, "binding_not_yours");
    }
    // An admin's token or a stale card says nothing about who opened it.
    let (s, bound) = bind(Some("not-a-token".into())).await;
    assert_eq!(s, 201, "{bound}");
    let (s, body) = bind(Some(own_card.clone())).await;
    assert_problem(s, &body, 410, "binding_used_or_expired");

    // The person's own card binds.
    let (second, second_card) = person(&app, &admin, "T-03").await;
    let (_, binding) = app
        .post(
            "/api/v1/admins",
            &admin,
            json!({"user_id": second, "role": "super_admin"}),
        )
        .await;
    let (s, bound) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admins/bind",
            Some(&second_card),
            Some(json!({"binding_token": binding["binding_token"]})),
        )
        .await;
    assert_eq!(s, 201, "{bound}");
    let (s, me) = app
        .get("/api/v1/admins/me", bound["token"].as_str().unwrap())
        .await;
    assert_eq!((s, me["role"].as_str()), (200, Some("super_admin")));
}
