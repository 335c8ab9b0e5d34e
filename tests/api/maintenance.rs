//! Equipment maintenance codes (SPEC §13): device types with time windows and
//! technicians, devices with printed codes, visits recorded three ways (the technician
//! scans the device, staff scan the technician, a fixed scanner reads the technician), and
//! the records searchable by person and place, and exportable.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{person, shop};
use crate::on_both_engines;
use crate::realtime::Ws;
use crate::shuttle::{bound, member, open_link, personal_code};

on_both_engines!(
    a_visit_is_recorded_three_ways_inside_the_windows,
    only_maintenance_admins_configure_and_a_scanner_binds_once,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

fn count(v: &Value) -> usize {
    v["items"].as_array().expect("items").len()
}

/// Every day, from an hour before `app`'s now to an hour after, in the tenant's zone.
fn around_now(app: &TestApp) -> Value {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let local = |d: SignedDuration| {
        (app.clock_now() + d)
            .to_zoned(tz.clone())
            .strftime("%H:%M")
            .to_string()
    };
    json!([{
        "days": [1, 2, 3, 4, 5, 6, 7],
        "from": local(SignedDuration::from_hours(-1)),
        "to": local(SignedDuration::from_hours(1)),
    }])
}

async fn device_type(app: &TestApp, admin: &str, body: Value) -> Value {
    let (s, t) = app
        .post("/api/v1/maintenance/device-types", admin, body)
        .await;
    assert_eq!(s, 201, "{t}");
    t
}

async fn device(app: &TestApp, admin: &str, t: &Value, name: &str, location: &str) -> Value {
    let (s, d) = app
        .post(
            "/api/v1/maintenance/devices",
            admin,
            json!({"type_id": t["id"], "name": name, "location": location}),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    d
}

async fn tap(app: &TestApp, me: &str, code: &str) -> (u16, Value) {
    app.post(
        &format!("/api/v1/maintenance/codes/{code}/records"),
        me,
        json!({"note": "  oiled the doors  "}),
    )
    .await
}

/// Binds a fixed scanner to `device`: its token.
async fn scanner(app: &TestApp, admin: &str, device: &Value) -> String {
    let link = format!("/api/v1/maintenance/devices/{}/binding", id(device));
    bound(app, admin, &link, "/api/v1/maintenance/bind").await
}

async fn open(app: &TestApp, binding: &Value) -> (u16, Value) {
    open_link(app, "/api/v1/maintenance/bind", binding).await
}

async fn a_visit_is_recorded_three_ways_inside_the_windows(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let lift = device_type(
        &app,
        admin,
        json!({"name": "Lift", "windows": around_now(&app), "identities": ["technician"]}),
    )
    .await;
    let lift_b = device(&app, admin, &lift, "Lift B", "Library, EAST stairwell").await;
    let lift_c = device(&app, admin, &lift, "Lift C", "Gym").await;
    let code = lift_b["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8, "{lift_b}");
    let resp = app
        .client
        .get(app.url(&format!("/api/v1/maintenance/devices/{}/qr", id(&lift_b))))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("<svg"));

    let (tech, tech_token) = member(&app, admin, "Tech T-1", "T-1", "technician").await;
    let (_, student) = member(&app, admin, "Tech S-1", "S-1", "student").await;
    let mut phone = Ws::connect(&app.base, &tech_token).await;
    phone.subscribe(&format!("user:{tech}"), None).await;

    // 1. The technician scans the device's code; taps in the same minute record once.
    let (s, first) = tap(&app, &tech_token, &code).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        (
            &first["method"],
            &first["note"],
            &first["device_name"],
            &first["location"],
            &first["type_name"],
            &first["number"]
        ),
        (
            &json!("device_code"),
            &json!("oiled the doors"),
            &json!("Lift B"),
            &json!("Library, EAST stairwell"),
            &json!("Lift"),
            &json!("T-1")
        )
    );
    let e = phone.next_event().await;
    assert_eq!(
        (&e["type"], &e["data"]["id"], &e["data"]["number"]),
        (&json!("maintenance.recorded"), &first["id"], &Value::Null),
        "{e}"
    );
    let scanned = format!("onecard:device:{}", code.to_lowercase());
    let (s, again) = tap(&app, &tech_token, &scanned).await;
    assert_eq!((s, &again["id"]), (200, &first["id"]), "{again}");
    // A minute later is another visit.
    app.clock.advance(SignedDuration::from_secs(61));
    let (s, later) = tap(&app, &tech_token, &code).await;
    assert_eq!(s, 201, "{later}");
    assert_ne!(later["id"], first["id"]);
    let (s, p) = tap(&app, &student, &code).await;
    assert_problem(s, &p, 403, "not_a_technician");
    assert!(p["detail"].as_str().unwrap().contains("technician"), "{p}");
    let (s, p) = tap(&app, &tech_token, "ABCD-EFGH").await;
    assert_problem(s, &p, 404, "not_found");
    let elsewhere = shop_elsewhere(&app).await;
    let (s, p) = tap(&app, &elsewhere, &code).await;
    assert_problem(s, &p, 404, "not_found");
    let (s, p) = app
        .post(
            &format!("/api/v1/maintenance/codes/{code}/records"),
            &tech_token,
            json!({"note": "x".repeat(201)}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");

    // 2. Staff scan the technician's personal code at a device.
    let (_, me) = app.get("/api/v1/admins/me", admin).await;
    let personal = personal_code(&app, &tech_token).await;
    let (s, by_staff) = staff_scan(&app, admin, &lift_b, &personal).await;
    assert_eq!(s, 201, "{by_staff}");
    assert_eq!(
        (&by_staff["method"], &by_staff["verified_by"]),
        (&json!("staff_scan"), &me["id"])
    );
    let (s, again) = staff_scan(&app, admin, &lift_b, &personal).await;
    assert_eq!((s, &again["id"]), (200, &by_staff["id"]));
    let (s, p) = staff_scan(&app, admin, &lift_c, &personal).await;
    assert_problem(s, &p, 409, "personal_code_used");

    // 3. A fixed scanner at Lift C reads the technician's code; it only does that.
    let at_c = scanner(&app, admin, &lift_c).await;
    let (s, here) = app.get("/api/v1/maintenance/scanner", &at_c).await;
    assert_eq!(
        (s, &here["device"]["id"], &here["device_type"]["name"]),
        (200, &lift_c["id"], &json!("Lift"))
    );
    let fresh = personal_code(&app, &tech_token).await;
    let (s, by_scanner) = app
        .post(
            "/api/v1/maintenance/records",
            &at_c,
            json!({ "code": fresh }),
        )
        .await;
    assert_eq!(
        (s, &by_scanner["method"]),
        (201, &json!("fixed_scanner")),
        "{by_scanner}"
    );
    let (s, p) = app
        .post("/api/v1/shuttle/rides", &at_c, json!({ "code": fresh }))
        .await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, p) = app
        .post(
            "/api/v1/maintenance/records",
            &at_c,
            json!({ "code": personal_code(&app, &student).await }),
        )
        .await;
    assert_problem(s, &p, 403, "not_a_technician");

    // Outside the windows every way is refused, and says when codes are valid.
    app.clock.advance(SignedDuration::from_hours(3));
    let (s, p) = tap(&app, &tech_token, &code).await;
    assert_problem(s, &p, 409, "outside_window");
    assert!(
        p["detail"].as_str().unwrap().contains("Asia/Shanghai"),
        "{p}"
    );
    let (s, p) = app
        .post(
            "/api/v1/maintenance/records",
            &at_c,
            json!({ "code": personal_code(&app, &tech_token).await }),
        )
        .await;
    assert_problem(s, &p, 409, "outside_window");

    // Records: by device, person and place (any case), a page at a time; the technician's
    // own; the export.
    let (s, all) = app.get("/api/v1/maintenance/records", admin).await;
    assert_eq!((s, count(&all)), (200, 4), "{all}");
    let (_, at_b) = app
        .get(
            &format!("/api/v1/maintenance/records?device_id={}", id(&lift_b)),
            admin,
        )
        .await;
    assert_eq!(count(&at_b), 3);
    let (_, east) = app
        .get("/api/v1/maintenance/records?location=east", admin)
        .await;
    assert_eq!(count(&east), 3, "{east}");
    let (_, gym) = app
        .get(
            &format!("/api/v1/maintenance/records?location=GYM&user_id={tech}"),
            admin,
        )
        .await;
    assert_eq!(
        (count(&gym), &gym["items"][0]["id"]),
        (1, &by_scanner["id"])
    );
    let (_, page) = app.get("/api/v1/maintenance/records?limit=2", admin).await;
    assert_eq!(count(&page), 2);
    assert!(page["next_cursor"].is_string());
    let (s, mine) = app.get("/api/v1/me/maintenance", &tech_token).await;
    assert_eq!((s, count(&mine)), (200, 4));
    let (_, none) = app.get("/api/v1/me/maintenance", &student).await;
    assert_eq!(count(&none), 0);
    let from = (app.clock_now() - SignedDuration::from_hours(6)).to_string();
    let to = app.clock_now().to_string();
    let resp = app
        .client
        .get(app.url(&format!(
            "/api/v1/maintenance/records/export?from={from}&to={to}&location=east"
        )))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "at,device,location,type,number,name,method,note");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        text.contains(
            "Lift B,\"Library, EAST stairwell\",Lift,T-1,Tech T-1,device_code,oiled the doors"
        ),
        "{text}"
    );
    let resp = app
        .client
        .get(app.url(&format!(
            "/api/v1/maintenance/records/export?from={from}&to={to}&format=xlsx"
        )))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.unwrap().starts_with(b"PK"));
}

async fn staff_scan(app: &TestApp, admin: &str, device: &Value, code: &str) -> (u16, Value) {
    app.post(
        &format!("/api/v1/maintenance/devices/{}/records", id(device)),
        admin,
        json!({ "code": code }),
    )
    .await
}

/// A cardholder of another tenant: their token.
async fn shop_elsewhere(app: &TestApp) -> String {
    let other = shop(app, 5_000).await;
    person(app, &other.admin, "X-1").await.1
}

async fn only_maintenance_admins_configure_and_a_scanner_binds_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let pcs = device_type(&app, admin, json!({"name": "Computer"})).await;
    assert_eq!(
        (&pcs["windows"], &pcs["identities"]),
        (&json!([]), &json!([]))
    );
    let lifts = device_type(&app, admin, json!({"name": "Lift"})).await;

    // Rules: names per tenant, windows well formed, a device of the tenant's own type.
    let (s, p) = app
        .post(
            "/api/v1/maintenance/device-types",
            admin,
            json!({"name": "Lift"}),
        )
        .await;
    assert_problem(s, &p, 409, "device_type_name_taken");
    let (s, p) = app
        .post(
            "/api/v1/maintenance/device-types",
            admin,
            json!({"name": "Boiler", "windows": [{"days": [8], "from": "9", "to": "18:00"}]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["windows[0].days", "windows[0].from"], "{p}");
    let (s, night) = app
        .patch(
            &format!("/api/v1/maintenance/device-types/{}", id(&lifts)),
            admin,
            json!({"windows": [{"days": [6, 7], "from": "22:00", "to": "06:00"}]}),
        )
        .await;
    assert_eq!((s, &night["name"]), (200, &json!("Lift")), "{night}");
    let (s, p) = app
        .patch(
            &format!("/api/v1/maintenance/device-types/{}", id(&lifts)),
            admin,
            json!({"name": "Computer"}),
        )
        .await;
    assert_problem(s, &p, 409, "device_type_name_taken");
    let other = shop_admin_elsewhere(&app).await;
    let theirs = device_type(&app, &other, json!({"name": "Lift"})).await;
    let (s, p) = app
        .post(
            "/api/v1/maintenance/devices",
            admin,
            json!({"type_id": theirs["id"], "name": "X", "location": "Y"}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let pc = device(&app, admin, &pcs, "PC 12", "Lab 3").await;
    let (s, moved) = app
        .patch(
            &format!("/api/v1/maintenance/devices/{}", id(&pc)),
            admin,
            json!({"location": "Lab 4", "type_id": lifts["id"]}),
        )
        .await;
    assert_eq!(
        (s, &moved["location"], &moved["type_id"], &moved["code"]),
        (200, &json!("Lab 4"), &lifts["id"], &pc["code"]),
        "{moved}"
    );
    let (_, only_lifts) = app
        .get(
            &format!("/api/v1/maintenance/devices?type_id={}", id(&lifts)),
            admin,
        )
        .await;
    assert_eq!(count(&only_lifts), 1);
    let (s, p) = app
        .get(&format!("/api/v1/maintenance/devices/{}", id(&pc)), &other)
        .await;
    assert_problem(s, &p, 404, "not_found");

    // A scanner's link binds once; a second scanner replaces the first; unbinding revokes.
    let (_, binding) = app
        .post(
            &format!("/api/v1/maintenance/devices/{}/binding", id(&pc)),
            admin,
            json!({}),
        )
        .await;
    assert!(binding["binding_url"]
        .as_str()
        .unwrap()
        .contains("/verify?app=maintenance#"));
    let (s, bound) = open(&app, &binding).await;
    assert_eq!((s, &bound["device"]["id"]), (201, &pc["id"]), "{bound}");
    let first = bound["token"].as_str().unwrap().to_string();
    let (s, p) = open(&app, &binding).await;
    assert_problem(s, &p, 410, "binding_used_or_expired");
    let second = scanner(&app, admin, &pc).await;
    let (s, _) = app.get("/api/v1/maintenance/scanner", &first).await;
    assert_eq!(s, 401);
    let (s, d) = app
        .post(
            &format!("/api/v1/maintenance/devices/{}/unbind", id(&pc)),
            admin,
            json!({}),
        )
        .await;
    assert_eq!((s, &d["bound_at"]), (200, &Value::Null));
    let (s, _) = app.get("/api/v1/maintenance/scanner", &second).await;
    assert_eq!(s, 401);

    // Only the maintenance app's admins configure it.
    let fixers = group(
        &app,
        admin,
        json!({"name": "Estates", "apps": ["maintenance"]}),
    )
    .await;
    let estates = sub_admin(&app, admin, &app.user(admin, "A-1").await, &fixers).await;
    let drivers = group(
        &app,
        admin,
        json!({"name": "Transport", "apps": ["shuttle"]}),
    )
    .await;
    let transport = sub_admin(&app, admin, &app.user(admin, "A-2").await, &drivers).await;
    let (s, t) = app
        .post(
            "/api/v1/maintenance/device-types",
            &estates,
            json!({"name": "Boiler"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (_, me) = person(&app, admin, "C-1").await;
    for token in [&transport, &me] {
        for path in [
            "/api/v1/maintenance/device-types",
            "/api/v1/maintenance/devices",
            "/api/v1/maintenance/records",
        ] {
            let (s, p) = app.get(path, token).await;
            assert!(s == 403, "{path}: {s} {p}");
        }
    }
    let (s, p) = app
        .post("/api/v1/maintenance/records", admin, json!({"code": "x"}))
        .await;
    assert_problem(s, &p, 403, "forbidden");
    let (_, audit) = app
        .get(&format!("/api/v1/audit?target_id={}", id(&pc)), admin)
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for action in [
        "maintenance.device.create",
        "maintenance.device.update",
        "maintenance.device.binding",
        "maintenance.device.bind",
        "maintenance.device.unbind",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

/// An admin of another tenant.
async fn shop_admin_elsewhere(app: &TestApp) -> String {
    shop(app, 5_000).await.admin
}
