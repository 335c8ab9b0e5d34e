//! Event check-in (SPEC §13): a person checks in with the event's code, inside its window
//! and its geofence, once; designated attendees by number, department and tag; refusals
//! that say why and reach the event's screen live; staff check-ins; who may do what.

use jiff::{SignedDuration, Timestamp};
use onecard_actors::clock::Clock;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{app_signature, assert_problem, spawn_app, Engine, TestApp};
use crate::on_both_engines;
use crate::realtime::Ws;
use crate::webhooks::{hooked_app, Receiver};

on_both_engines!(
    a_person_checks_in_once_with_the_code_inside_the_window_and_the_fence,
    designated_attendees_come_by_id_number_department_and_tag,
    concurrent_check_ins_by_one_person_make_one,
    the_checkin_app_grant_and_scopes_decide_who_may_see_and_change_events,
);

/// Near the People's Square, Shanghai; 100 m around it.
const CENTRE: (f64, f64) = (31.2304, 121.4737);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// A user of `admin`'s tenant and a cardholder token for them: (user, token).
pub(crate) async fn member(
    app: &TestApp,
    admin: &str,
    number: &str,
    extra: Value,
) -> (Value, String) {
    let mut body = json!({"name": format!("Student {number}"), "number": number});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, user) = app.post("/api/v1/users", admin, body).await;
    assert_eq!(s, 201, "{user}");
    let (s, t) = app
        .post(
            &format!("/api/v1/users/{}/tokens", id(&user)),
            admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    (user, t["token"].as_str().unwrap().to_string())
}

fn at(t: Timestamp) -> String {
    t.to_string()
}

/// An event starting `starts_in` from the test clock's now, two hours long.
async fn event(app: &TestApp, admin: &str, starts_in: SignedDuration, extra: Value) -> Value {
    let start = app.clock.now() + starts_in;
    let mut body = json!({
        "name": "Freshers' orientation",
        "starts_at": at(start),
        "ends_at": at(start + SignedDuration::from_hours(2)),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, created) = app.post("/api/v1/events", admin, body).await;
    assert_eq!(s, 201, "{created}");
    created
}

async fn check_in(
    app: &TestApp,
    token: &str,
    code: &str,
    location: Option<(f64, f64)>,
) -> (u16, Value) {
    let mut body = json!({ "code": code });
    if let Some((lat, lng)) = location {
        body["location"] = json!({"latitude": lat, "longitude": lng});
    }
    app.post("/api/v1/check-ins", token, body).await
}

/// An app's signed request (docs/OPERATIONS.md, "Open platform").
pub(crate) async fn signed(
    app: &TestApp,
    (key, secret): (&str, &str),
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let timestamp = app.clock.now().as_second().to_string();
    let nonce = format!("n-{}", uuid::Uuid::now_v7().simple());
    let (signature, _) = app_signature(secret, method, path, &timestamp, &nonce, text.as_bytes());
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .header("X-App-Key", key)
        .header("X-Timestamp", timestamp)
        .header("X-Nonce", nonce)
        .header("X-Signature", signature);
    if body.is_some() {
        req = req.header("Content-Type", "application/json").body(text);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn a_person_checks_in_once_with_the_code_inside_the_window_and_the_fence(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;

    // What an event must be.
    let start = app.clock.now() + SignedDuration::from_hours(1);
    for (body, field) in [
        (
            json!({"name": "", "starts_at": at(start), "ends_at": at(start + SignedDuration::from_hours(1))}),
            "name",
        ),
        (
            json!({"name": "X", "starts_at": at(start), "ends_at": at(start)}),
            "ends_at",
        ),
        (
            json!({"name": "X", "starts_at": at(start), "ends_at": at(start + SignedDuration::from_hours(24 * 40))}),
            "ends_at",
        ),
        (
            json!({"name": "X", "starts_at": at(start), "ends_at": at(start + SignedDuration::from_hours(1)), "early_minutes": 2000}),
            "early_minutes",
        ),
        (
            json!({"name": "X", "starts_at": at(start), "ends_at": at(start + SignedDuration::from_hours(1)),
                "geofence": {"latitude": 91.0, "longitude": 0.0, "radius_m": 100}}),
            "geofence.latitude",
        ),
        (
            json!({"name": "X", "starts_at": at(start), "ends_at": at(start + SignedDuration::from_hours(1)),
                "geofence": {"latitude": 0.0, "longitude": 0.0, "radius_m": 5}}),
            "geofence.radius_m",
        ),
    ] {
        let (s, p) = app.post("/api/v1/events", &admin, body).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (s, p) = app
        .post(
            "/api/v1/events",
            &admin,
            json!({"name": "X", "starts_at": "tomorrow", "ends_at": at(start)}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["field"], "starts_at");
    let (_, events) = app.get("/api/v1/events", &admin).await;
    assert_eq!(events["items"], json!([]), "refused events are not made");

    let fence = json!({"latitude": CENTRE.0, "longitude": CENTRE.1, "radius_m": 100});
    let ev = event(
        &app,
        &admin,
        SignedDuration::from_hours(1),
        json!({"geofence": fence}),
    )
    .await;
    let (eid, code) = (id(&ev), ev["code"].as_str().unwrap().to_string());
    assert_eq!(code.len(), 8);
    assert_eq!(
        (ev["early_minutes"].as_u64(), ev["designated"].as_bool()),
        (Some(30), Some(false))
    );

    let (user, token) = member(&app, &admin, "S-1", json!({})).await;
    let mut screen = Ws::connect(&app.base, &admin).await;
    let got = screen.subscribe(&format!("event:{eid}"), None).await;
    assert_eq!(got.last().unwrap()["op"], "subscribed", "{got:?}");

    // An hour early: not open yet, and the screen hears of it.
    let (s, p) = check_in(&app, &token, &code, Some(CENTRE)).await;
    assert_problem(s, &p, 409, "event_not_open");
    let failed = screen.next_event().await;
    assert_eq!(failed["type"], "checkin.failed");
    assert_eq!(failed["data"]["reason"], "event_not_open");
    assert_eq!(failed["data"]["user_id"], user["id"]);

    // Thirty-one minutes later check-in is open (30 minutes before the start).
    app.clock.advance(SignedDuration::from_mins(31));
    let (s, p) = check_in(&app, &token, &code, None).await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["field"], "location");
    // About 220 m north: outside the fence, and told how far.
    let (s, p) = check_in(&app, &token, &code, Some((CENTRE.0 + 0.002, CENTRE.1))).await;
    assert_problem(s, &p, 403, "outside_geofence");
    assert!(
        p["detail"].as_str().unwrap().contains("within 100 m"),
        "{p}"
    );
    let failed = screen.next_event().await;
    assert_eq!(failed["data"]["reason"], "outside_geofence");
    let d = failed["data"]["distance_m"].as_u64().unwrap();
    assert!((215..=230).contains(&d), "{failed}");

    // About 55 m north, the code typed in lower case with a dash: in.
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let (s, made) = check_in(&app, &token, &typed, Some((CENTRE.0 + 0.0005, CENTRE.1))).await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(
        (made["user_id"].clone(), made["method"].clone()),
        (user["id"].clone(), json!("self"))
    );
    assert_eq!(made["number"], "S-1");
    let d = made["distance_m"].as_u64().unwrap();
    assert!((50..=60).contains(&d), "{made}");
    let confirmed = screen.next_event().await;
    assert_eq!(confirmed["type"], "checkin.confirmed");
    assert_eq!(confirmed["data"], made);

    // Scanned again (the QR text this time): the same check-in, nothing new on screen.
    let (s, again) = check_in(
        &app,
        &token,
        &format!("onecard:checkin:{code}"),
        Some(CENTRE),
    )
    .await;
    assert_eq!((s, &again), (200, &made));
    // From outside the fence, too: they are in already, and nothing is refused.
    let (s, again) = check_in(&app, &token, &code, Some((CENTRE.0 + 0.01, CENTRE.1))).await;
    assert_eq!((s, &again), (200, &made));
    assert!(screen
        .next_within(300)
        .await
        .filter(|f| f["op"] == "event")
        .is_none());
    let (_, got) = app.get(&format!("/api/v1/events/{eid}"), &admin).await;
    assert_eq!(got["checked_in"], 1, "{got}");
    let (_, list) = app
        .get(&format!("/api/v1/events/{eid}/check-ins"), &admin)
        .await;
    assert_eq!(list["items"], json!([made]));

    // Codes that open nothing.
    for bad in ["ZZZZZZZZ", "not a code", ""] {
        let (s, p) = check_in(&app, &token, bad, Some(CENTRE)).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], "code");
    }
    let res = app
        .client
        .post(app.url("/api/v1/check-ins"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"code":"{code}","location":{{"latitude":1e309,"longitude":0}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a number past f64 is malformed JSON");

    // Someone of another organisation with the code: not a member, and nothing of them
    // reaches this tenant's screen.
    let (_, other_admin) = app.tenant("university", "advanced").await;
    let (_, stranger) = member(&app, &other_admin, "X-1", json!({})).await;
    let (s, p) = check_in(&app, &stranger, &code, Some(CENTRE)).await;
    assert_problem(s, &p, 403, "not_a_member");
    let failed = screen.next_event().await;
    assert_eq!(
        (
            failed["data"]["reason"].clone(),
            failed["data"]["user_id"].clone()
        ),
        (json!("not_a_member"), Value::Null)
    );
    let (s, _) = app
        .get(&format!("/api/v1/events/{eid}"), &other_admin)
        .await;
    assert_eq!(s, 404, "another tenant's admin does not see the event");

    // A suspended member is not an active one.
    let (suspended, suspended_token) = member(&app, &admin, "S-2", json!({})).await;
    let (s, _) = app
        .patch(
            &format!("/api/v1/users/{}", id(&suspended)),
            &admin,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, p) = check_in(&app, &suspended_token, &code, Some(CENTRE)).await;
    assert_problem(s, &p, 403, "not_a_member");

    // A new code stops the old one at once.
    let (s, rotated) = app
        .post(&format!("/api/v1/events/{eid}/code"), &admin, json!({}))
        .await;
    assert_eq!(s, 200, "{rotated}");
    let new_code = rotated["code"].as_str().unwrap();
    assert_ne!(new_code, code);
    let (_, late) = member(&app, &admin, "S-3", json!({})).await;
    let (s, p) = check_in(&app, &late, &code, Some(CENTRE)).await;
    assert_problem(s, &p, 422, "invalid");
    let (s, _) = check_in(&app, &late, new_code, Some(CENTRE)).await;
    assert_eq!(s, 201);

    // The QR code to print.
    let res = app
        .client
        .get(app.url(&format!("/api/v1/events/{eid}/qr")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(res.text().await.unwrap().contains("<svg"));

    // After the end: closed. Without the fence, no location is needed.
    let (s, _) = app
        .patch(
            &format!("/api/v1/events/{eid}"),
            &admin,
            json!({"geofence": null}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, later) = member(&app, &admin, "S-4", json!({})).await;
    app.clock.advance(SignedDuration::from_hours(3));
    let (s, p) = check_in(&app, &later, new_code, None).await;
    assert_problem(s, &p, 409, "event_not_open");
    // Someone who came in time still gets their check-in back.
    let (s, again) = check_in(&app, &token, new_code, None).await;
    assert_eq!((s, again["user_id"].clone()), (200, user["id"].clone()));

    // Deleting the event takes its check-ins with it.
    let (s, _) = app.delete(&format!("/api/v1/events/{eid}"), &admin).await;
    assert_eq!(s, 204);
    let (s, _) = app
        .get(&format!("/api/v1/events/{eid}/check-ins"), &admin)
        .await;
    assert_eq!(s, 404);
    let (s, _) = check_in(&app, &later, new_code, None).await;
    assert_eq!(s, 422);
}

async fn designated_attendees_come_by_id_number_department_and_tag(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;
    let (_, maths) = app
        .post("/api/v1/departments", &admin, json!({"name": "Maths"}))
        .await;
    let (_, algebra) = app
        .post(
            "/api/v1/departments",
            &admin,
            json!({"name": "Algebra", "parent_id": maths["id"]}),
        )
        .await;
    let (_, choir) = app
        .post("/api/v1/tags", &admin, json!({"name": "Choir"}))
        .await;
    let (u1, t1) = member(
        &app,
        &admin,
        "D-1",
        json!({"department_ids": [maths["id"]]}),
    )
    .await;
    let (u2, t2) = member(
        &app,
        &admin,
        "D-2",
        json!({"department_ids": [algebra["id"]]}),
    )
    .await;
    let (u3, _) = member(&app, &admin, "D-3", json!({"tag_ids": [choir["id"]]})).await;
    member(&app, &admin, "D-4", json!({})).await;
    let (u5, t5) = member(&app, &admin, "D-5", json!({})).await;
    let ev = event(
        &app,
        &admin,
        SignedDuration::ZERO,
        json!({"designated": true}),
    )
    .await;
    let (eid, code) = (id(&ev), ev["code"].as_str().unwrap().to_string());
    let attendees = |query: &'static str| {
        let (app, admin, eid) = (&app, &admin, &eid);
        async move {
            let (s, page) = app
                .get(&format!("/api/v1/events/{eid}/attendees{query}"), admin)
                .await;
            assert_eq!(s, 200, "{page}");
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["number"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    // One unknown number, department or user refuses the whole request.
    let path = format!("/api/v1/events/{eid}/attendees");
    let (s, p) = app
        .post(&path, &admin, json!({"numbers": ["D-4", "NOPE-1"]}))
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert!(p["detail"].as_str().unwrap().contains("NOPE-1"), "{p}");
    let (s, p) = app
        .post(
            &path,
            &admin,
            json!({"numbers": ["D-4"], "department_ids": [uuid::Uuid::now_v7()]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app
        .post(
            &path,
            &admin,
            json!({"numbers": ["D-4"], "user_ids": [uuid::Uuid::now_v7()]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app.post(&path, &admin, json!({})).await;
    assert_problem(s, &p, 422, "invalid");
    assert!(attendees("").await.is_empty(), "nothing was designated");
    // A thousand ids fit in a body (these are unknown); more are refused by count.
    let ids = |n: usize| {
        (0..n)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect::<Vec<_>>()
    };
    let (s, p) = app
        .post(&path, &admin, json!({"user_ids": ids(1000)}))
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["rule"], "exists", "{p}");
    let (s, p) = app
        .post(&path, &admin, json!({"user_ids": ids(1001)}))
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["rule"], "max_items", "{p}");

    // By number, by department (with its sub-department), by tag.
    let (s, added) = app
        .post(
            &path,
            &admin,
            json!({"numbers": ["D-4"], "department_ids": [maths["id"]], "tag_ids": [choir["id"]]}),
        )
        .await;
    assert_eq!(s, 200, "{added}");
    assert_eq!(added, json!({"added": 4, "attendees": 4}));
    let (s, added) = app
        .post(&path, &admin, json!({"user_ids": [u1["id"]]}))
        .await;
    assert_eq!((s, added), (200, json!({"added": 0, "attendees": 4})));
    assert_eq!(attendees("").await.len(), 4);

    // Only they may check in.
    let (s, p) = check_in(&app, &t5, &code, None).await;
    assert_problem(s, &p, 403, "not_designated");
    let (s, _) = check_in(&app, &t1, &code, None).await;
    assert_eq!(s, 201);
    assert_eq!(attendees("?checked_in=true").await, ["D-1"]);
    let mut absent = attendees("?checked_in=false").await;
    absent.sort();
    assert_eq!(absent, ["D-2", "D-3", "D-4"]);

    // Taken off the list, D-2 may not; taken off twice is a 404.
    let one = format!("/api/v1/events/{eid}/attendees/{}", id(&u2));
    let (s, _) = app.delete(&one, &admin).await;
    assert_eq!(s, 204);
    let (s, p) = check_in(&app, &t2, &code, None).await;
    assert_problem(s, &p, 403, "not_designated");
    let (s, _) = app.delete(&one, &admin).await;
    assert_eq!(s, 404);

    // Staff check someone in for them: the list holds for them too, and it is audited.
    let staff = format!("/api/v1/events/{eid}/check-ins");
    let (s, made) = app.post(&staff, &admin, json!({"user_id": u3["id"]})).await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(
        (made["method"].clone(), made["distance_m"].clone()),
        (json!("staff"), Value::Null)
    );
    let (s, again) = app.post(&staff, &admin, json!({"user_id": u3["id"]})).await;
    assert_eq!((s, again), (200, made));
    let (s, p) = app.post(&staff, &admin, json!({"user_id": u5["id"]})).await;
    assert_problem(s, &p, 403, "not_designated");
    let (s, p) = app
        .post(&staff, &admin, json!({"user_id": uuid::Uuid::now_v7()}))
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (_, audit) = app
        .get(
            &format!("/api/v1/audit?target_id={eid}&action=event.check_in"),
            &admin,
        )
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["items"][0]["detail"]["user_id"], u3["id"]);

    let (_, got) = app.get(&format!("/api/v1/events/{eid}"), &admin).await;
    assert_eq!(
        (got["attendees"].as_u64(), got["checked_in"].as_u64()),
        (Some(3), Some(2))
    );

    // The attendance sheet: everyone designated and everyone who came, by number.
    let sheet = |format: &'static str| {
        let (app, admin, eid) = (&app, &admin, &eid);
        async move {
            let res = app
                .client
                .get(app.url(&format!("/api/v1/events/{eid}/attendance?format={format}")))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let mime = res.headers()["content-type"].to_str().unwrap().to_string();
            (mime, res.bytes().await.unwrap())
        }
    };
    let (mime, csv) = sheet("csv").await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "number",
            "name",
            "present",
            "checked_in_at",
            "method",
            "distance_m"
        ]
    );
    let rows: Vec<(&str, &str, &str)> = lines[1..].iter().map(|l| (l[0], l[2], l[4])).collect();
    assert_eq!(
        rows,
        [
            ("D-1", "yes", "self"),
            ("D-3", "yes", "staff"),
            ("D-4", "no", "")
        ]
    );
    assert_eq!(lines[1][3].len(), 19, "a local time: {csv}");
    let (mime, xlsx) = sheet("xlsx").await;
    assert!(mime.contains("spreadsheetml"), "{mime}");
    assert!(xlsx.starts_with(b"PK"), "a zip, as XLSX is");
}

async fn concurrent_check_ins_by_one_person_make_one(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;
    let ev = event(&app, &admin, SignedDuration::ZERO, json!({})).await;
    let (eid, code) = (id(&ev), ev["code"].as_str().unwrap().to_string());
    let (_, token) = member(&app, &admin, "C-1", json!({})).await;
    let mut screen = Ws::connect(&app.base, &admin).await;
    screen.subscribe(&format!("event:{eid}"), None).await;

    let answers =
        futures::future::join_all((0..20).map(|_| check_in(&app, &token, &code, None))).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (s, body) in &answers {
        assert!(*s == 200 || *s == 201, "{s} {body}");
        assert_eq!(body, created[0], "every answer is the one check-in");
    }
    let confirmed = screen.next_event().await;
    assert_eq!(confirmed["data"]["id"], created[0]["id"]);
    assert!(
        screen
            .next_within(500)
            .await
            .filter(|f| f["op"] == "event")
            .is_none(),
        "one event"
    );
    let (_, got) = app.get(&format!("/api/v1/events/{eid}"), &admin).await;
    assert_eq!(got["checked_in"], 1);
}

async fn the_checkin_app_grant_and_scopes_decide_who_may_see_and_change_events(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;
    let checkin = group(
        &app,
        &admin,
        json!({"name": "Events office", "apps": ["checkin"]}),
    )
    .await;
    let money = group(
        &app,
        &admin,
        json!({"name": "Finance", "features": {"payments": "manage"}}),
    )
    .await;
    let (u1, _) = member(&app, &admin, "A-1", json!({})).await;
    let (u2, _) = member(&app, &admin, "A-2", json!({})).await;
    let events_office = sub_admin(&app, &admin, &u1, &checkin).await;
    let finance = sub_admin(&app, &admin, &u2, &money).await;

    let ev = event(&app, &events_office, SignedDuration::ZERO, json!({})).await;
    let eid = id(&ev);
    let (s, p) = app.get(&format!("/api/v1/events/{eid}"), &finance).await;
    assert_problem(s, &p, 403, "not_granted");
    let (s, p) = app
        .post(
            "/api/v1/events",
            &finance,
            json!({"name": "X", "starts_at": at(app.clock.now()),
               "ends_at": at(app.clock.now() + SignedDuration::from_hours(1))}),
        )
        .await;
    assert_problem(s, &p, 403, "not_granted");
    let mut ws = Ws::connect(&app.base, &finance).await;
    let got = ws.subscribe(&format!("event:{eid}"), None).await;
    assert_eq!(got.last().unwrap()["code"], "forbidden_topic", "{got:?}");

    // An app hears of check-ins with `checkin_read`, and may not ask for them without it.
    let mut hooks = Receiver::start().await;
    let (s, p) = app
        .post(
            "/api/v1/apps",
            &admin,
            json!({"name": "Gate", "kind": "headless", "scopes": ["payments_read"],
               "webhook_url": hooks.url("/hook"), "webhook_events": ["checkin.confirmed"]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (reader_key, reader_secret) = hooked_app(
        &app,
        &admin,
        json!({"name": "Gate", "kind": "headless",
        "scopes": ["checkin_read"], "webhook_url": hooks.url("/hook"),
        "webhook_events": ["checkin.confirmed", "checkin.failed"]}),
    )
    .await;
    let (_, token) = member(&app, &admin, "A-3", json!({})).await;
    let (s, made) = check_in(&app, &token, ev["code"].as_str().unwrap(), None).await;
    assert_eq!(s, 201);
    let got = hooks.next().await;
    let body = got.json();
    assert_eq!(body["type"], "checkin.confirmed");
    assert_eq!(body["data"], made);
    hooks.nothing_more().await;
    hooks.handle.stop(true).await;

    // A gate app checks people in with `checkin_write`; `checkin_read` only reads.
    let (gate_key, gate_secret) = hooked_app(
        &app,
        &admin,
        json!({"name": "Door gate", "kind": "headless", "scopes": ["checkin_write"]}),
    )
    .await;
    let (walker, _) = member(&app, &admin, "A-4", json!({})).await;
    let path = format!("/api/v1/events/{eid}/check-ins");
    let body = json!({ "user_id": walker["id"] });
    let (s, made) = signed(&app, (&gate_key, &gate_secret), "POST", &path, Some(&body)).await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(made["method"], "staff");
    let (s, p) = signed(
        &app,
        (&reader_key, &reader_secret),
        "POST",
        &path,
        Some(&body),
    )
    .await;
    assert_problem(s, &p, 403, "not_granted");
    let (s, got) = signed(
        &app,
        (&reader_key, &reader_secret),
        "GET",
        &format!("/api/v1/events/{eid}"),
        None,
    )
    .await;
    assert_eq!((s, got["checked_in"].as_u64()), (200, Some(2)));
}
