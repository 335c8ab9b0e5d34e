//! Notifications (SPEC §10): channels in the tenant's priority order with fallback,
//! scheduled notices edited before they go, recalled, edited and sent again, per-channel
//! rate limits, live delivery status, and who may send to whom.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use jiff::SignedDuration;
use onecard_actors::clock::Clock;
use serde_json::{json, Value};

use crate::groups::{department, group, sub_admin};
use crate::helpers::{assert_problem, serve_local, signed_with, spawn_app, Engine, TestApp};
use crate::on_both_engines;
use crate::realtime::Ws;

on_both_engines!(
    a_notice_falls_back_along_the_channels_and_shows_live,
    a_scheduled_notice_is_edited_sent_recalled_and_sent_again,
    a_channels_rate_limit_holds_deliveries_back_and_a_recall_stops_them,
    senders_reach_only_whom_they_may_see,
    channel_settings_are_checked,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

async fn person(app: &TestApp, admin: &str, number: &str, phone: Option<&str>) -> Value {
    let (s, u) = app
        .post(
            "/api/v1/users",
            admin,
            json!({"name": format!("Person {number}"), "number": number, "phone": phone}),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    u
}

/// Polls the notice until `done` holds (the notifier works in the background).
async fn notice_until(
    app: &TestApp,
    token: &str,
    notice: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/api/v1/notices/{notice}");
    for _ in 0..200 {
        let (s, n) = app.get(&path, token).await;
        assert_eq!(s, 200, "{n}");
        if done(&n) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, n) = app.get(&path, token).await;
    panic!("the notice never got there: {n}");
}

/// Saves the tenant's channels: (status, body).
async fn put_channels(app: &TestApp, admin: &str, channels: Value) -> (u16, Value) {
    app.send(
        reqwest::Method::PUT,
        "/api/v1/notification-settings",
        Some(admin),
        Some(json!({ "channels": channels })),
    )
    .await
}

fn deliveries_by_number(list: &Value) -> std::collections::BTreeMap<String, Value> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["number"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

/// The tenant's official-account adapter: checks the signature with the secret it was
/// given, keeps each request, and answers by the person's number: `A1` delivered, `A2`
/// unreachable, anyone else 500.
#[derive(Clone, Default)]
struct Adapter {
    secret: Arc<Mutex<String>>,
    got: Arc<Mutex<Vec<Value>>>,
    unsigned: Arc<Mutex<u32>>,
}

async fn adapter(state: web::Data<Adapter>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let secret = state.secret.lock().unwrap().clone();
    if !signed_with(&secret, &req, &body) {
        *state.unsigned.lock().unwrap() += 1;
        return HttpResponse::Unauthorized().finish();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.got.lock().unwrap().push(body.clone());
    match body["user"]["number"].as_str() {
        _ if body["type"] == "notice.recall" => HttpResponse::Ok().json(json!({})),
        Some("A1") => HttpResponse::Ok().json(json!({"status": "delivered"})),
        Some("A2") => HttpResponse::Ok().json(json!({"status": "unreachable"})),
        _ => HttpResponse::InternalServerError().finish(),
    }
}

async fn a_notice_falls_back_along_the_channels_and_shows_live(engine: Engine) {
    let shared = Adapter::default();
    let (base, handle) = serve_local(web::Data::new(shared.clone()), adapter);
    let Some(app) = spawn_app(engine).await else {
        handle.stop(true).await;
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let a1 = person(&app, &admin, "A1", Some("13800000001")).await;
    let a2 = person(&app, &admin, "A2", Some("13800000002")).await;
    let a3 = person(&app, &admin, "A3", None).await;

    // The defaults: the official account first, texts last; only texts work until the
    // tenant names its adapters.
    let (s, defaults) = app.get("/api/v1/notification-settings", &admin).await;
    assert_eq!(s, 200, "{defaults}");
    let order: Vec<&str> = defaults["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["official_account", "messenger", "sms"]);

    let (s, secret) = app
        .post("/api/v1/notification-settings/secret", &admin, json!({}))
        .await;
    assert_eq!(s, 200, "{secret}");
    *shared.secret.lock().unwrap() = secret["secret"].as_str().unwrap().to_string();
    let (s, saved) = put_channels(
        &app,
        &admin,
        json!([
            {"channel": "official_account", "enabled": true,
             "address": format!("{base}/oa"), "per_minute": 1000},
            {"channel": "messenger", "enabled": false, "per_minute": 1000},
            {"channel": "sms", "enabled": true, "per_minute": 1000},
        ]),
    )
    .await;
    assert_eq!(s, 200, "{saved}");

    let (s, notice) = app
        .post(
            "/api/v1/notices",
            &admin,
            json!({"title": "Library closed", "body": "Closed on Friday for inventory.",
                   "audience": {"user_ids": [id(&a1), id(&a2), id(&a3)]}}),
        )
        .await;
    assert_eq!(s, 201, "{notice}");
    assert_eq!(notice["status"], "sending");
    assert_eq!(notice["round"], 1);
    let nid = id(&notice);
    let mut ws = Ws::connect(&app.base, &admin).await;

    let sent = notice_until(&app, &admin, &nid, |n| n["status"] == "sent").await;
    assert_eq!(
        sent["counts"],
        json!({"recipients": 3, "queued": 0, "sent": 1, "delivered": 1, "failed": 1,
               "recalled": 0, "fell_back": 2}),
        "{sent}"
    );
    let (s, list) = app
        .get(&format!("/api/v1/notices/{nid}/deliveries"), &admin)
        .await;
    assert_eq!(s, 200, "{list}");
    let by = deliveries_by_number(&list);
    assert_eq!(by["A1"]["status"], "delivered");
    assert_eq!(by["A1"]["channel"], "official_account");
    assert_eq!(by["A1"]["fell_back_from"], json!([]));
    assert_eq!(by["A2"]["status"], "sent");
    assert_eq!(by["A2"]["channel"], "sms");
    assert_eq!(by["A2"]["fell_back_from"], json!(["official_account"]));
    assert_eq!(by["A3"]["status"], "failed");
    assert_eq!(by["A3"]["fell_back_from"], json!(["official_account"]));
    assert!(
        by["A3"]["detail"].as_str().unwrap().contains("no phone"),
        "{}",
        by["A3"]
    );
    let (s, failed) = app
        .get(
            &format!("/api/v1/notices/{nid}/deliveries?status=failed"),
            &admin,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);

    // The text went only to the person the official account could not reach.
    let texts = app.sandbox_texts(&admin, "13800000002").await;
    assert_eq!(texts, ["Library closed: Closed on Friday for inventory."]);
    assert!(app.sandbox_texts(&admin, "13800000001").await.is_empty());
    // The adapter got every official-account delivery, signed, with the notice.
    assert_eq!(*shared.unsigned.lock().unwrap(), 0);
    let got = shared.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|g| g["type"] == "notice.deliver"
        && g["title"] == "Library closed"
        && g["notice_id"] == nid.as_str()));

    // Live: the notice's topic tells each change, ending with the notice sent.
    let frames = ws.subscribe(&format!("notice:{nid}"), Some(0)).await;
    let events: Vec<&Value> = frames.iter().filter(|f| f["op"] == "event").collect();
    assert!(events.iter().all(|e| e["type"] == "notice.delivery"));
    assert_eq!(events[0]["data"]["counts"]["queued"], 3, "{frames:?}");
    let changes: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["data"]["changes"].as_array().unwrap())
        .collect();
    assert!(changes.iter().any(|c| c["user_id"] == id(&a2).as_str()
        && c["status"] == "fell_back"
        && c["from"] == "official_account"
        && c["channel"] == "sms"));
    assert!(changes
        .iter()
        .any(|c| c["user_id"] == id(&a1).as_str() && c["status"] == "delivered"));
    let last = events.last().unwrap();
    assert_eq!(last["data"]["notice_status"], "sent", "{last}");

    // A recall tells the adapter which of its deliveries to withdraw.
    let (s, recalled) = app
        .post(&format!("/api/v1/notices/{nid}/recall"), &admin, json!({}))
        .await;
    assert_eq!(s, 200, "{recalled}");
    assert_eq!(recalled["counts"]["recalled"], 2);
    assert_eq!(recalled["counts"]["failed"], 1);
    for _ in 0..100 {
        if shared.got.lock().unwrap().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recall = shared.got.lock().unwrap().last().cloned().unwrap();
    assert_eq!(recall["type"], "notice.recall", "{recall}");
    assert_eq!(
        recall["deliveries"],
        json!([{"delivery_id": by["A1"]["id"], "user_id": id(&a1)}])
    );
    handle.stop(true).await;
}

async fn a_scheduled_notice_is_edited_sent_recalled_and_sent_again(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let dorm = department(&app, &admin, "Dorm 3", None).await;
    for (number, phone) in [("D1", "13900000001"), ("D2", "13900000002")] {
        let (s, u) = app
            .post(
                "/api/v1/users",
                &admin,
                json!({"name": number, "number": number, "phone": phone,
                       "department_ids": [id(&dorm)]}),
            )
            .await;
        assert_eq!(s, 201, "{u}");
    }
    let in_an_hour = app.clock.now() + SignedDuration::from_hours(1);
    let audience = json!({"department_ids": [id(&dorm)]});
    let (s, notice) = app
        .post(
            "/api/v1/notices",
            &admin,
            json!({"title": "Water off", "body": "From 14:00.", "audience": audience,
                   "send_at": in_an_hour}),
        )
        .await;
    assert_eq!(s, 201, "{notice}");
    assert_eq!(notice["status"], "scheduled");
    assert_eq!(notice["revision"], 1);
    let nid = id(&notice);
    let path = format!("/api/v1/notices/{nid}");

    // Edited before it goes, at the revision seen.
    let (s, edited) = app
        .patch(
            &path,
            &admin,
            json!({"revision": 1, "title": "Water off (Dorm 3)"}),
        )
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(edited["revision"], 2);
    let (s, stale) = app
        .patch(&path, &admin, json!({"revision": 1, "body": "From 15:00."}))
        .await;
    assert_problem(s, &stale, 409, "notice_changed");
    let (s, past) = app
        .patch(
            &path,
            &admin,
            json!({"revision": 2, "send_at": app.clock.now() - SignedDuration::from_mins(1)}),
        )
        .await;
    assert_problem(s, &past, 422, "invalid");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(app.sandbox_texts(&admin, "13900000001").await.is_empty());

    // Its time comes: the scheduler sends it as edited.
    app.clock.advance(SignedDuration::from_hours(2));
    let sent = notice_until(&app, &admin, &nid, |n| n["status"] == "sent").await;
    assert_eq!(sent["counts"]["sent"], 2, "{sent}");
    assert_eq!(
        app.sandbox_texts(&admin, "13900000001").await,
        ["Water off (Dorm 3): From 14:00."]
    );
    let (s, refused) = app
        .patch(&path, &admin, json!({"revision": 2, "body": "x"}))
        .await;
    assert_problem(s, &refused, 409, "notice_state");
    let (s, refused) = app.delete(&path, &admin).await;
    assert_problem(s, &refused, 409, "notice_state");

    // Recalled, edited and sent again: a second round.
    let (s, recalled) = app.post(&format!("{path}/recall"), &admin, json!({})).await;
    assert_eq!(s, 200, "{recalled}");
    assert_eq!(recalled["status"], "recalled");
    assert_eq!(recalled["counts"]["recalled"], 2);
    let (s, again) = app.post(&format!("{path}/recall"), &admin, json!({})).await;
    assert_problem(s, &again, 409, "notice_state");
    let (s, edited) = app
        .patch(
            &path,
            &admin,
            json!({"revision": 2, "body": "From 16:00 instead."}),
        )
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(edited["revision"], 3);
    let (s, stale) = app
        .post(&format!("{path}/send"), &admin, json!({"revision": 2}))
        .await;
    assert_problem(s, &stale, 409, "notice_changed");
    let (s, resent) = app
        .post(&format!("{path}/send"), &admin, json!({"revision": 3}))
        .await;
    assert_eq!(s, 200, "{resent}");
    assert_eq!(resent["round"], 2);
    let sent = notice_until(&app, &admin, &nid, |n| n["status"] == "sent").await;
    assert_eq!(sent["counts"]["sent"], 2, "{sent}");
    assert_eq!(
        app.sandbox_texts(&admin, "13900000002").await[0],
        "Water off (Dorm 3): From 16:00 instead."
    );

    // A scheduled notice that never went can be deleted.
    let (s, draft) = app
        .post(
            "/api/v1/notices",
            &admin,
            json!({"title": "Later", "body": "x", "audience": audience,
                   "send_at": app.clock.now() + SignedDuration::from_hours(5)}),
        )
        .await;
    assert_eq!(s, 201, "{draft}");
    let (s, _) = app
        .delete(&format!("/api/v1/notices/{}", id(&draft)), &admin)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .get(&format!("/api/v1/notices/{}", id(&draft)), &admin)
        .await;
    assert_eq!(s, 404);

    // Nobody to send to: refused, nothing written.
    let (s, list) = app.get("/api/v1/notices", &admin).await;
    assert_eq!(s, 200);
    let before = list["items"].as_array().unwrap().len();
    let empty = department(&app, &admin, "Empty", None).await;
    let (s, refused) = app
        .post(
            "/api/v1/notices",
            &admin,
            json!({"title": "Hello", "body": "x",
                   "audience": {"department_ids": [id(&empty)]}}),
        )
        .await;
    assert_problem(s, &refused, 422, "audience_empty");
    let (s, refused) = app
        .post(
            "/api/v1/notices",
            &admin,
            json!({"title": "Hello", "body": "x", "audience": {}}),
        )
        .await;
    assert_problem(s, &refused, 422, "invalid");
    let (_, list) = app.get("/api/v1/notices", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), before);
}

async fn a_channels_rate_limit_holds_deliveries_back_and_a_recall_stops_them(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("enterprise", "standard").await;
    person(&app, &admin, "R1", Some("13700000001")).await;
    person(&app, &admin, "R2", Some("13700000002")).await;
    let (s, saved) = put_channels(
        &app,
        &admin,
        json!([
            {"channel": "sms", "enabled": true, "per_minute": 1},
            {"channel": "official_account", "enabled": false, "per_minute": 1000},
            {"channel": "messenger", "enabled": false, "per_minute": 1000},
        ]),
    )
    .await;
    assert_eq!(s, 200, "{saved}");
    let (s, notice) = app
        .post(
            "/api/v1/notices",
            &admin,
            json!({"title": "Drill", "body": "Fire drill at 10:00.", "audience": {"all": true}}),
        )
        .await;
    assert_eq!(s, 201, "{notice}");
    let nid = id(&notice);
    let held = notice_until(&app, &admin, &nid, |n| n["counts"]["sent"] == 1).await;
    assert_eq!(held["counts"]["queued"], 1, "{held}");
    // A minute's budget is one text: the other waits, queued, and does not fall back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, still) = app.get(&format!("/api/v1/notices/{nid}"), &admin).await;
    assert_eq!(still["status"], "sending", "{still}");
    assert_eq!(still["counts"]["queued"], 1);
    assert_eq!(still["counts"]["fell_back"], 0);

    let (s, recalled) = app
        .post(&format!("/api/v1/notices/{nid}/recall"), &admin, json!({}))
        .await;
    assert_eq!(s, 200, "{recalled}");
    assert_eq!(recalled["counts"]["recalled"], 2);
    // Past the minute, the held one still never goes.
    app.clock.advance(SignedDuration::from_mins(2));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let texts = app.sandbox_texts(&admin, "13700000001").await.len()
        + app.sandbox_texts(&admin, "13700000002").await.len();
    assert_eq!(texts, 1);
}

async fn senders_reach_only_whom_they_may_see(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("enterprise", "standard").await;
    let finance = department(&app, &admin, "Finance", None).await;
    let sales = department(&app, &admin, "Sales", None).await;
    let (s, head_type) = app
        .post(
            "/api/v1/identity-types",
            &admin,
            json!({"name": "head", "category": "staff", "verification": "name_id",
                   "manages": [{"id": id(&finance), "access": "manage"}]}),
        )
        .await;
    assert_eq!(s, 201, "{head_type}");
    let (s, _) = app
        .post(
            "/api/v1/identity-types",
            &admin,
            json!({"name": "staff", "category": "staff", "verification": "name_id"}),
        )
        .await;
    assert_eq!(s, 201);
    let member = |name: &str, identity: &str, dept: &Value| {
        json!({"name": name, "number": name, "identity": identity, "phone": "13600000000",
               "department_ids": [id(dept)]})
    };
    let (_, boss) = app
        .post("/api/v1/users", &admin, member("B1", "head", &finance))
        .await;
    let (_, clerk) = app
        .post("/api/v1/users", &admin, member("B2", "staff", &finance))
        .await;
    let (_, seller) = app
        .post("/api/v1/users", &admin, member("B3", "staff", &sales))
        .await;
    let (_, t) = app
        .post(
            &format!("/api/v1/users/{}/tokens", id(&boss)),
            &admin,
            json!({}),
        )
        .await;
    let boss_token = t["token"].as_str().unwrap().to_string();
    let (_, t) = app
        .post(
            &format!("/api/v1/users/{}/tokens", id(&clerk)),
            &admin,
            json!({}),
        )
        .await;
    let clerk_token = t["token"].as_str().unwrap().to_string();

    // The department head sends to their department with their card's token.
    let notice =
        |audience: Value| json!({"title": "Team", "body": "Meeting at 3.", "audience": audience});
    let (s, own) = app
        .post(
            "/api/v1/notices",
            &boss_token,
            notice(json!({"department_ids": [id(&finance)]})),
        )
        .await;
    assert_eq!(s, 201, "{own}");
    assert_eq!(own["created_by"], format!("user:{}", id(&boss)));
    assert_eq!(own["counts"]["recipients"], 2);
    for outside in [
        json!({"department_ids": [id(&sales)]}),
        json!({"all": true}),
        json!({"identities": ["staff"]}),
    ] {
        let (s, refused) = app
            .post("/api/v1/notices", &boss_token, notice(outside.clone()))
            .await;
        assert_problem(s, &refused, 403, "out_of_scope");
    }
    let (s, refused) = app
        .post(
            "/api/v1/notices",
            &boss_token,
            notice(json!({"user_ids": [id(&seller)]})),
        )
        .await;
    assert_problem(s, &refused, 422, "invalid");
    let (s, refused) = app
        .post(
            "/api/v1/notices",
            &clerk_token,
            notice(json!({"department_ids": [id(&finance)]})),
        )
        .await;
    assert_eq!(s, 403, "{refused}");
    let (s, refused) = app.get("/api/v1/notification-settings", &boss_token).await;
    assert_eq!(s, 403, "{refused}");

    // Super admins see every notice; a head sees their own only.
    let (s, theirs) = app
        .post(
            "/api/v1/notices",
            &admin,
            notice(json!({"department_ids": [id(&sales)]})),
        )
        .await;
    assert_eq!(s, 201, "{theirs}");
    let (_, all) = app.get("/api/v1/notices", &admin).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, mine) = app.get("/api/v1/notices", &boss_token).await;
    let mine: Vec<&Value> = mine["items"].as_array().unwrap().iter().collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], own["id"]);
    let (s, _) = app
        .get(&format!("/api/v1/notices/{}", id(&theirs)), &boss_token)
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .post(
            &format!("/api/v1/notices/{}/recall", id(&theirs)),
            &boss_token,
            json!({}),
        )
        .await;
    assert_eq!(s, 404);

    // Live status: the head follows their own notice; another's is refused.
    let mut ws = Ws::connect(&app.base, &boss_token).await;
    let frames = ws.subscribe(&format!("notice:{}", id(&own)), Some(0)).await;
    assert_eq!(frames.last().unwrap()["op"], "subscribed", "{frames:?}");
    let frames = ws.subscribe(&format!("notice:{}", id(&theirs)), None).await;
    assert_eq!(
        frames.last().unwrap()["code"],
        "forbidden_topic",
        "{frames:?}"
    );

    // A sub-admin needs the notifications feature: to read (view) and to send (manage).
    let (_, viewer_user) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "V", "number": "V1"}),
        )
        .await;
    let viewers = group(
        &app,
        &admin,
        json!({"name": "Readers", "features": {"notifications": "view"},
               "departments": [{"id": id(&finance), "access": "view"}]}),
    )
    .await;
    let viewer = sub_admin(&app, &admin, &viewer_user, &viewers).await;
    let (s, list) = app.get("/api/v1/notices", &viewer).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list["items"],
        json!([]),
        "a sub-admin sees their own notices only"
    );
    let mut ws = Ws::connect(&app.base, &viewer).await;
    let frames = ws.subscribe(&format!("notice:{}", id(&theirs)), None).await;
    assert_eq!(
        frames.last().unwrap()["code"],
        "forbidden_topic",
        "{frames:?}"
    );
    let mut ws = Ws::connect(&app.base, &admin).await;
    let frames = ws.subscribe(&format!("notice:{}", id(&own)), None).await;
    assert_eq!(
        frames.last().unwrap()["op"],
        "subscribed",
        "super admins follow any notice"
    );
    let (s, refused) = app
        .post(
            "/api/v1/notices",
            &viewer,
            notice(json!({"department_ids": [id(&finance)]})),
        )
        .await;
    assert_problem(s, &refused, 403, "not_granted");
}

async fn channel_settings_are_checked(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("enterprise", "standard").await;
    let put = |channels: Value| put_channels(&app, &admin, channels);
    let sms = json!({"channel": "sms", "enabled": true, "per_minute": 10});
    let off = |c: &str| json!({"channel": c, "enabled": false, "per_minute": 10});
    for (channels, field) in [
        (json!([sms, off("messenger")]), "channels"),
        (
            json!([sms, sms, off("messenger"), off("official_account")]),
            "channels",
        ),
        (
            json!([{"channel": "official_account", "enabled": true, "per_minute": 10},
                   off("messenger"), sms]),
            "channels[0].address",
        ),
        (
            json!([off("official_account"), off("messenger"),
                   {"channel": "sms", "enabled": true, "per_minute": 10,
                    "address": "https://sms.example"}]),
            "channels[2].address",
        ),
        (
            json!([off("official_account"), off("messenger"),
                   {"channel": "sms", "enabled": true, "per_minute": 0}]),
            "channels[2].per_minute",
        ),
        (
            json!([{"channel": "official_account", "enabled": true, "per_minute": 10,
                    "address": "ftp://oa.example"}, off("messenger"), sms]),
            "channels[0].address",
        ),
    ] {
        let (s, refused) = put(channels.clone()).await;
        assert_problem(s, &refused, 422, "invalid");
        assert!(
            refused["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{channels} → {refused}"
        );
    }
    let (_, unchanged) = app.get("/api/v1/notification-settings", &admin).await;
    assert_eq!(unchanged["updated_at"], Value::Null, "nothing was saved");
    let (s, saved) = put(json!([sms, off("messenger"), off("official_account")])).await;
    assert_eq!(s, 200, "{saved}");
    let (_, read) = app.get("/api/v1/notification-settings", &admin).await;
    assert_eq!(read["channels"][0]["channel"], "sms");
    assert_eq!(read["channels"], saved["channels"]);
}
