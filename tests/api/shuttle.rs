//! Shuttle-bus verification (SPEC §13): routes and buses kept by the shuttle app's admins,
//! one verifying phone bound to each bus by a one-time link, riders boarding by their
//! personal code, and the rides searchable and exportable.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{code as payment_code, keyed, pay, person, shop};
use crate::on_both_engines;
use crate::realtime::Ws;

on_both_engines!(
    a_bus_phone_boards_riders_by_their_personal_codes,
    one_phone_per_bus_and_only_shuttle_admins_configure,
    a_route_with_a_reboarding_window_takes_each_rider_once_a_trip,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

async fn route(app: &TestApp, admin: &str, name: &str, identities: Value) -> Value {
    let (s, r) = app
        .post(
            "/api/v1/shuttle/routes",
            admin,
            json!({"name": name, "identities": identities}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    r
}

async fn bus(app: &TestApp, admin: &str, route: &Value, name: &str) -> Value {
    let (s, b) = app
        .post(
            "/api/v1/shuttle/buses",
            admin,
            json!({"route_id": route["id"], "name": name}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

/// Opens a binding link at `bind_path` as the phone or scanner would: (status, body).
pub(crate) async fn open_link(app: &TestApp, bind_path: &str, binding: &Value) -> (u16, Value) {
    app.send(
        reqwest::Method::POST,
        bind_path,
        None,
        Some(json!({"binding_token": binding["binding_token"]})),
    )
    .await
}

/// Makes a binding link at `link_path` (as `admin`) and opens it at `bind_path`: the
/// verifier token of the phone or scanner it binds.
pub(crate) async fn bound(app: &TestApp, admin: &str, link_path: &str, bind_path: &str) -> String {
    let (s, binding) = app.post(link_path, admin, json!({})).await;
    assert_eq!(s, 201, "{binding}");
    let (s, opened) = open_link(app, bind_path, &binding).await;
    assert_eq!(s, 201, "{opened}");
    opened["token"].as_str().unwrap().to_string()
}

async fn bind(app: &TestApp, binding: &Value) -> (u16, Value) {
    open_link(app, "/api/v1/shuttle/bind", binding).await
}

/// A phone bound to `bus`: its verifier token.
async fn phone(app: &TestApp, admin: &str, bus: &Value) -> String {
    let link = format!("/api/v1/shuttle/buses/{}/binding", id(bus));
    bound(app, admin, &link, "/api/v1/shuttle/bind").await
}

/// A member named `name` with `identity`, and a cardholder token: (user id, token).
pub(crate) async fn member(
    app: &TestApp,
    admin: &str,
    name: &str,
    number: &str,
    identity: &str,
) -> (String, String) {
    let extra = json!({"name": name, "identity": identity});
    let (user, token) = crate::checkin::member(app, admin, number, extra).await;
    (id(&user), token)
}

/// A fresh personal code of the cardholder `me`.
pub(crate) async fn personal_code(app: &TestApp, me: &str) -> String {
    let (s, c) = app.post("/api/v1/me/personal-codes", me, json!({})).await;
    assert_eq!(s, 201, "{c}");
    assert!(
        c["svg"].as_str().unwrap().contains("<svg"),
        "an SVG QR image"
    );
    c["code"].as_str().unwrap().to_string()
}

async fn scan(app: &TestApp, phone: &str, code: &str) -> (u16, Value) {
    app.post("/api/v1/shuttle/rides", phone, json!({ "code": code }))
        .await
}

fn count(v: &Value) -> usize {
    v["items"].as_array().expect("items").len()
}

async fn a_bus_phone_boards_riders_by_their_personal_codes(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let east = route(&app, admin, "East gate", json!(["staff", "staff"])).await;
    assert_eq!(east["identities"], json!(["staff"]), "each identity once");
    let west = route(&app, admin, "West gate", json!([])).await;
    let bus1 = bus(&app, admin, &east, "Bus 1").await;
    let bus2 = bus(&app, admin, &west, "Bus 2").await;
    let phone1 = phone(&app, admin, &bus1).await;
    let phone2 = phone(&app, admin, &bus2).await;
    let (s, me) = app.get("/api/v1/shuttle/verifier", &phone1).await;
    assert_eq!(
        (s, &me["bus"]["id"], &me["route"]["name"]),
        (200, &bus1["id"], &json!("East gate")),
        "{me}"
    );

    let (teacher, teacher_token) = member(&app, admin, "Rider T-1", "T-1", "staff").await;
    let (student, student_token) = member(&app, admin, "Rider S-1", "S-1", "student").await;
    let mut card = Ws::connect(&app.base, &teacher_token).await;
    card.subscribe(&format!("user:{teacher}"), None).await;

    // Boarding: the phone sees who; the rider's own screen hears it, masked.
    let code = personal_code(&app, &teacher_token).await;
    let (s, ride) = scan(&app, &phone1, &code).await;
    assert_eq!(s, 201, "{ride}");
    assert_eq!(
        (
            &ride["user_id"],
            &ride["name"],
            &ride["number"],
            &ride["route_name"],
            &ride["bus_name"]
        ),
        (
            &json!(teacher),
            &json!("Rider T-1"),
            &json!("T-1"),
            &json!("East gate"),
            &json!("Bus 1")
        )
    );
    let e = card.next_event().await;
    assert_eq!(
        (&e["type"], &e["data"]["id"], &e["data"]["number"]),
        (&json!("shuttle.ride"), &ride["id"], &Value::Null),
        "{e}"
    );
    assert_ne!(e["data"]["name"], json!("Rider T-1"), "masked: {e}");

    // The same code scanned again on this bus is that ride; on another bus it is refused.
    let (s, again) = scan(&app, &phone1, &code).await;
    assert_eq!((s, &again["id"]), (200, &ride["id"]), "{again}");
    let (s, p) = scan(&app, &phone2, &code).await;
    assert_problem(s, &p, 409, "personal_code_used");
    assert!(
        card.next_within(300).await.is_none(),
        "a repeat is no event"
    );

    // Ten scans of one code at once board once.
    let code = personal_code(&app, &teacher_token).await;
    let answers = futures::future::join_all((0..10).map(|_| scan(&app, &phone2, &code))).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let repeated = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 9), "{answers:?}");

    // The route is for staff: a student is refused there, boards the open route.
    let code = personal_code(&app, &student_token).await;
    let (s, p) = scan(&app, &phone1, &code).await;
    assert_problem(s, &p, 403, "not_on_route");
    assert!(p["detail"].as_str().unwrap().contains("staff"), "{p}");
    let (s, r) = scan(&app, &phone2, &code).await;
    assert_eq!(s, 201, "{r}");

    // Not personal codes: a payment code, garbage, another organisation's rider. (A
    // personal code needed no agreement; a payment code does.)
    let (s, _) = app
        .post("/api/v1/me/agreement", &teacher_token, json!({}))
        .await;
    assert_eq!(s, 201);
    let (s, p) = scan(&app, &phone1, &payment_code(&app, &teacher_token).await).await;
    assert_problem(s, &p, 422, "personal_code_invalid");
    let (s, p) = scan(&app, &phone1, "not-a-code").await;
    assert_problem(s, &p, 422, "personal_code_invalid");
    let elsewhere = crate::money::shop(&app, 5_000).await;
    let (_, stranger) = person(&app, &elsewhere.admin, "X-1").await;
    let (s, p) = scan(&app, &phone1, &personal_code(&app, &stranger).await).await;
    assert_problem(s, &p, 422, "personal_code_invalid");

    // A personal code cannot pay.
    let p = pay(&app, &shop, &personal_code(&app, &teacher_token).await, 100).await;
    assert_eq!(
        (&p["status"], &p["decline_reason"]),
        (&json!("declined"), &json!("code_invalid")),
        "{p}"
    );

    // Expired: a screenshot. An inactive card gets no code, and its earlier one is refused.
    let old = personal_code(&app, &teacher_token).await;
    app.clock.advance(SignedDuration::from_secs(121));
    let (s, p) = scan(&app, &phone1, &old).await;
    assert_problem(s, &p, 409, "personal_code_expired");
    let code = personal_code(&app, &teacher_token).await;
    let (s, _) = app
        .patch(
            &format!("/api/v1/users/{teacher}"),
            admin,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, p) = scan(&app, &phone1, &code).await;
    assert_problem(s, &p, 403, "card_inactive");
    let (s, p) = app
        .post("/api/v1/me/personal-codes", &teacher_token, json!({}))
        .await;
    assert_problem(s, &p, 403, "card_inactive");

    // Records: three rides (two of the teacher's, one of the student's), by route, bus,
    // person and time, a page at a time.
    let (s, all) = app.get("/api/v1/shuttle/rides", admin).await;
    assert_eq!((s, count(&all)), (200, 3), "{all}");
    let (_, on_east) = app
        .get(
            &format!("/api/v1/shuttle/rides?route_id={}", id(&east)),
            admin,
        )
        .await;
    assert_eq!(count(&on_east), 1, "{on_east}");
    let (_, on_bus2) = app
        .get(
            &format!("/api/v1/shuttle/rides?bus_id={}", id(&bus2)),
            admin,
        )
        .await;
    assert_eq!(count(&on_bus2), 2, "{on_bus2}");
    let (_, students) = app
        .get(&format!("/api/v1/shuttle/rides?user_id={student}"), admin)
        .await;
    assert_eq!(
        (count(&students), &students["items"][0]["bus_name"]),
        (1, &json!("Bus 2"))
    );
    let later = (app.clock_now() + SignedDuration::from_secs(1)).to_string();
    let (_, none) = app
        .get(&format!("/api/v1/shuttle/rides?from={later}"), admin)
        .await;
    assert_eq!(count(&none), 0, "{none}");
    let (_, first) = app.get("/api/v1/shuttle/rides?limit=2", admin).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, rest) = app
        .get(
            &format!("/api/v1/shuttle/rides?limit=2&cursor={cursor}"),
            admin,
        )
        .await;
    assert_eq!((count(&first), count(&rest)), (2, 1));
    assert_eq!(rest["next_cursor"], Value::Null);
    let (s, mine) = app.get("/api/v1/me/rides", &student_token).await;
    assert_eq!((s, count(&mine)), (200, 1), "{mine}");
    assert_eq!(mine["items"][0]["user_id"], json!(student));

    // Export: the window's rides as CSV (names in full) or XLSX; at most 31 days.
    let from = (app.clock_now() - SignedDuration::from_hours(1)).to_string();
    let to = (app.clock_now() + SignedDuration::from_hours(1)).to_string();
    let resp = app
        .client
        .get(app.url(&format!("/api/v1/shuttle/rides/export?from={from}&to={to}")))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "at,number,name,route,bus,user_id");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(text.contains("Rider S-1,West gate,Bus 2"), "{text}");
    let resp = app
        .client
        .get(app.url(&format!(
            "/api/v1/shuttle/rides/export?from={from}&to={to}&format=xlsx&bus_id={}",
            id(&bus1)
        )))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().starts_with(b"PK"));
    let far = (app.clock_now() + SignedDuration::from_hours(24 * 40)).to_string();
    let (s, p) = app
        .get(
            &format!("/api/v1/shuttle/rides/export?from={from}&to={far}"),
            admin,
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app
        .get(
            &format!("/api/v1/shuttle/rides/export?from={to}&to={from}"),
            admin,
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
}

async fn one_phone_per_bus_and_only_shuttle_admins_configure(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let east = route(&app, admin, "East", json!([])).await;
    let west = route(&app, admin, "West", json!([])).await;
    let bus1 = bus(&app, admin, &east, "Bus 1").await;
    assert_eq!(bus1["bound_at"], Value::Null);

    // A link binds once; an unknown one is not found; a stale one is gone.
    let (_, binding) = app
        .post(
            &format!("/api/v1/shuttle/buses/{}/binding", id(&bus1)),
            admin,
            json!({}),
        )
        .await;
    assert!(binding["binding_url"].as_str().unwrap().ends_with(&format!(
        "/verify#{}",
        binding["binding_token"].as_str().unwrap()
    )));
    let (s, first) = bind(&app, &binding).await;
    assert_eq!(
        (s, &first["bus"]["id"], &first["route"]["id"]),
        (201, &bus1["id"], &east["id"]),
        "{first}"
    );
    let first_phone = first["token"].as_str().unwrap().to_string();
    let (s, p) = bind(&app, &binding).await;
    assert_problem(s, &p, 410, "binding_used_or_expired");
    let (s, p) = bind(&app, &json!({"binding_token": "nobody-made-this"})).await;
    assert_problem(s, &p, 404, "not_found");
    let (_, stale) = app
        .post(
            &format!("/api/v1/shuttle/buses/{}/binding", id(&bus1)),
            admin,
            json!({}),
        )
        .await;
    app.clock.advance(SignedDuration::from_secs(24 * 3600 + 1));
    let (s, p) = bind(&app, &stale).await;
    assert_problem(s, &p, 410, "binding_used_or_expired");
    let (s, _) = app.get("/api/v1/shuttle/verifier", &first_phone).await;
    assert_eq!(s, 200, "a stale link changes nothing");

    // A second phone replaces the first: exactly one phone per bus.
    let second_phone = phone(&app, admin, &bus1).await;
    let (s, _) = app.get("/api/v1/shuttle/verifier", &first_phone).await;
    assert_eq!(s, 401);
    let (s, b) = app
        .get(&format!("/api/v1/shuttle/buses/{}", id(&bus1)), admin)
        .await;
    assert!(b["bound_at"].is_string(), "{b}");
    assert_eq!(s, 200);

    // Moving the bus keeps its phone, which now boards on the new route.
    let (s, moved) = app
        .patch(
            &format!("/api/v1/shuttle/buses/{}", id(&bus1)),
            admin,
            json!({"route_id": west["id"], "name": "Bus 1A"}),
        )
        .await;
    assert_eq!((s, &moved["route_id"]), (200, &west["id"]), "{moved}");
    let (_, here) = app.get("/api/v1/shuttle/verifier", &second_phone).await;
    assert_eq!(here["route"]["name"], "West", "{here}");
    let (_, on_west) = app
        .get(
            &format!("/api/v1/shuttle/buses?route_id={}", id(&west)),
            admin,
        )
        .await;
    assert_eq!(count(&on_west), 1, "{on_west}");

    // Unbinding revokes the phone.
    let (s, b) = app
        .post(
            &format!("/api/v1/shuttle/buses/{}/unbind", id(&bus1)),
            admin,
            json!({}),
        )
        .await;
    assert_eq!((s, &b["bound_at"]), (200, &Value::Null), "{b}");
    let (s, _) = app.get("/api/v1/shuttle/verifier", &second_phone).await;
    assert_eq!(s, 401);
    let (_, audit) = app
        .get(&format!("/api/v1/audit?target_id={}", id(&bus1)), admin)
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for action in [
        "shuttle.bus.create",
        "shuttle.bus.binding",
        "shuttle.bus.bind",
        "shuttle.bus.update",
        "shuttle.bus.unbind",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }

    // Names are the tenant's own; a bus needs a route of the tenant.
    let (s, p) = app
        .post("/api/v1/shuttle/routes", admin, json!({"name": "East"}))
        .await;
    assert_problem(s, &p, 409, "shuttle_route_name_taken");
    let (s, p) = app
        .patch(
            &format!("/api/v1/shuttle/routes/{}", id(&west)),
            admin,
            json!({"name": "East"}),
        )
        .await;
    assert_problem(s, &p, 409, "shuttle_route_name_taken");
    let (s, p) = app
        .post(
            "/api/v1/shuttle/buses",
            admin,
            json!({"route_id": east["id"], "name": "Bus 1A"}),
        )
        .await;
    assert_problem(s, &p, 409, "bus_name_taken");
    let elsewhere = crate::money::shop(&app, 5_000).await;
    let theirs = route(&app, &elsewhere.admin, "East", json!([])).await;
    let (s, p) = app
        .post(
            "/api/v1/shuttle/buses",
            admin,
            json!({"route_id": theirs["id"], "name": "Bus 9"}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app
        .get(&format!("/api/v1/shuttle/routes/{}", id(&theirs)), admin)
        .await;
    assert_problem(s, &p, 404, "not_found");
    let (s, p) = app
        .post(
            "/api/v1/shuttle/routes",
            admin,
            json!({"name": "", "identities": ["x".repeat(33)]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"].as_array().unwrap().len(), 2, "{p}");
    let (s, r) = app
        .patch(
            &format!("/api/v1/shuttle/routes/{}", id(&east)),
            admin,
            json!({"identities": ["staff"]}),
        )
        .await;
    assert_eq!(
        (s, &r["identities"], &r["name"]),
        (200, &json!(["staff"]), &json!("East"))
    );

    // Only the shuttle app's admins configure it; a phone only verifies; a cardholder
    // reads their own rides.
    let drivers = group(
        &app,
        admin,
        json!({"name": "Transport", "apps": ["shuttle"]}),
    )
    .await;
    let transport = sub_admin(&app, admin, &app.user(admin, "A-1").await, &drivers).await;
    let rooms = group(&app, admin, json!({"name": "Rooms", "apps": ["booking"]})).await;
    let facilities = sub_admin(&app, admin, &app.user(admin, "A-2").await, &rooms).await;
    let (s, r) = app
        .post(
            "/api/v1/shuttle/routes",
            &transport,
            json!({"name": "North"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (_, me) = person(&app, admin, "C-1").await;
    let phone = phone(&app, &transport, &bus(&app, &transport, &r, "Bus 4").await).await;
    for token in [&facilities, &me, &phone] {
        for path in [
            "/api/v1/shuttle/routes",
            "/api/v1/shuttle/rides",
            "/api/v1/shuttle/buses",
        ] {
            let (s, p) = app.get(path, token).await;
            assert!(s == 403, "{path}: {s} {p}");
        }
        let (s, _) = app
            .post("/api/v1/shuttle/routes", token, json!({"name": "South"}))
            .await;
        assert_eq!(s, 403);
    }
    let (s, p) = scan(&app, admin, "x").await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, p) = keyed(
        &app,
        "/api/v1/payments",
        &phone,
        "k-1",
        json!({"code": "x", "amount": 1}),
    )
    .await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, p) = app.get("/api/v1/me/rides", &phone).await;
    assert_problem(s, &p, 403, "forbidden");
}

async fn a_route_with_a_reboarding_window_takes_each_rider_once_a_trip(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let (s, east) = app
        .post(
            "/api/v1/shuttle/routes",
            admin,
            json!({"name": "East gate", "reboard_minutes": 30}),
        )
        .await;
    assert_eq!((s, &east["reboard_minutes"]), (201, &json!(30)), "{east}");
    let (s, e) = app
        .post(
            "/api/v1/shuttle/routes",
            admin,
            json!({"name": "West gate", "reboard_minutes": 721}),
        )
        .await;
    assert_problem(s, &e, 422, "invalid");
    let bus1 = bus(&app, admin, &east, "Bus 1").await;
    let bus2 = bus(&app, admin, &east, "Bus 2").await;
    let (phone1, phone2) = (
        phone(&app, admin, &bus1).await,
        phone(&app, admin, &bus2).await,
    );
    let (_, rider) = member(&app, admin, "Rider T-1", "T-1", "staff").await;
    let (_, other) = member(&app, admin, "Rider T-2", "T-2", "staff").await;

    let (s, first) = scan(&app, &phone1, &personal_code(&app, &rider).await).await;
    assert_eq!(s, 201, "{first}");
    // A fresh code of the same rider, on either bus of the route: already boarded, the
    // earlier ride answered and nothing recorded.
    for phone in [&phone1, &phone2] {
        let (s, again) = scan(&app, phone, &personal_code(&app, &rider).await).await;
        assert_eq!((s, &again["id"]), (200, &first["id"]), "{again}");
    }
    // Another rider boards.
    let (s, e) = scan(&app, &phone2, &personal_code(&app, &other).await).await;
    assert_eq!(s, 201, "{e}");
    let (s, rides) = app.get("/api/v1/shuttle/rides", admin).await;
    assert_eq!((s, count(&rides)), (200, 2), "{rides}");

    // Without the window every fresh code boards.
    let (s, r) = app
        .patch(
            &format!("/api/v1/shuttle/routes/{}", id(&east)),
            admin,
            json!({"reboard_minutes": 0}),
        )
        .await;
    assert_eq!((s, &r["reboard_minutes"]), (200, &json!(0)), "{r}");
    let (s, again) = scan(&app, &phone2, &personal_code(&app, &rider).await).await;
    assert_eq!(s, 201, "{again}");
}
