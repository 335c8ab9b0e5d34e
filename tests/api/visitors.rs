//! Visitor reservation (SPEC §13): a configurable form, requests by people without an
//! account, the host's approval or rejection (which never blocks a later request), the
//! visitor's pass by link and QR code, cancellation, entry at the gate from a staff phone,
//! and the figures.

use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::groups::{group, sub_admin};
use crate::helpers::{
    assert_problem, serve_local, signed_with, spawn_app, spawn_with, Engine, TestApp,
};
use crate::money::{person, shop};
use crate::on_both_engines;
use crate::realtime::Ws;
use crate::shuttle::member;
use crate::webhooks::{hooked_app, Receiver};

on_both_engines!(
    a_real_name_registry_decides_whether_a_name_and_number_belong_together,
    a_visitor_asks_the_host_decides_and_the_gate_lets_them_in_once,
    the_form_decides_what_is_asked_and_only_visitors_admins_keep_it,
    a_turnstile_app_lets_visitors_in_and_a_reader_hears_of_them,
    requests_are_limited_per_address_and_per_host,
);

/// A request body from `app`'s now: the visit starts in `start_h` hours, lasts two.
fn ask(app: &TestApp, tenant: &str, start_h: i64, extra: Value) -> Value {
    let now = app.clock_now();
    let mut body = json!({
        "tenant_id": tenant,
        "host_number": "H-1",
        "host_name": "Host H-1",
        "name": "Wang Fang",
        "phone": "138 0000 0000",
        "starts_at": (now + SignedDuration::from_hours(start_h)).to_string(),
        "ends_at": (now + SignedDuration::from_hours(start_h + 2)).to_string(),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// Sends `body` with no token.
async fn anonymous(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.send(reqwest::Method::POST, path, None, Some(body))
        .await
}

async fn request(app: &TestApp, body: Value) -> (Value, String) {
    let (s, made) = anonymous(app, "/api/v1/visitors/requests", body).await;
    assert_eq!(s, 201, "{made}");
    (
        made["request"].clone(),
        made["pass"].as_str().unwrap().to_string(),
    )
}

async fn pass(app: &TestApp, pass: &str) -> Value {
    let (s, v) = anonymous(app, "/api/v1/visitors/pass", json!({ "pass": pass })).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn gate(app: &TestApp, staff: &str, pass: &str) -> (u16, Value) {
    app.post("/api/v1/visitors/entries", staff, json!({ "pass": pass }))
        .await
}

async fn a_visitor_asks_the_host_decides_and_the_gate_lets_them_in_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let tenant = app.tenant_of(admin).await.to_string();
    let (host, host_token) = member(&app, admin, "Host H-1", "H-1", "staff").await;
    let (_, other_member) = member(&app, admin, "Host H-2", "H-2", "staff").await;
    let mut phone = Ws::connect(&app.base, &host_token).await;
    phone.subscribe(&format!("user:{host}"), None).await;

    // The form, read without a token: the default asks for a phone number.
    let (s, form) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/visitors/forms/{tenant}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, &form["form"]["phone"], &form["form"]["real_name"]),
        (200, &json!("required"), &json!(false)),
        "{form}"
    );

    // Refusals change nothing: a missing phone, a host who is not that member, a visit in
    // the past or too long.
    let (s, p) = anonymous(
        &app,
        "/api/v1/visitors/requests",
        ask(&app, &tenant, 1, json!({"phone": null})),
    )
    .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["field"], "phone", "{p}");
    let (s, p) = anonymous(
        &app,
        "/api/v1/visitors/requests",
        ask(
            &app,
            &tenant,
            1,
            json!({"host_number": "", "host_name": "x".repeat(65)}),
        ),
    )
    .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"].as_array().unwrap().len(), 2, "{p}");
    for wrong in [
        json!({"host_name": "Someone Else"}),
        json!({"host_number": "NOBODY"}),
    ] {
        let (s, p) = anonymous(
            &app,
            "/api/v1/visitors/requests",
            ask(&app, &tenant, 1, wrong),
        )
        .await;
        assert_problem(s, &p, 422, "unknown_host");
    }
    let (s, p) = anonymous(
        &app,
        "/api/v1/visitors/requests",
        ask(&app, &tenant, -2, json!({})),
    )
    .await;
    assert_problem(s, &p, 422, "invalid");
    let long = json!({"ends_at": (app.clock_now() + SignedDuration::from_hours(30)).to_string()});
    let (s, p) = anonymous(
        &app,
        "/api/v1/visitors/requests",
        ask(&app, &tenant, 1, long),
    )
    .await;
    assert_problem(s, &p, 422, "invalid");
    let (_, none) = app.get("/api/v1/visitors/requests", admin).await;
    assert_eq!(none["items"], json!([]));

    // A request: the host hears it; the pass shows it pending, with no QR code yet.
    let (first, first_pass) = request(
        &app,
        ask(
            &app,
            &tenant,
            1,
            json!({"plate": "沪A·12345", "company": "ACME"}),
        ),
    )
    .await;
    assert_eq!(
        (&first["status"], &first["plate"], &first["host_name"]),
        (&json!("pending"), &json!("沪A12345"), &json!("Host H-1"))
    );
    let e = phone.next_event().await;
    assert_eq!(
        (&e["type"], &e["data"]["id"]),
        (&json!("visitor.requested"), &first["id"])
    );
    let v = pass(&app, &first_pass).await;
    assert_eq!(
        (&v["request"]["status"], &v["svg"]),
        (&json!("pending"), &Value::Null)
    );
    let (s, p) = gate(&app, admin, &first_pass).await;
    assert_problem(s, &p, 409, "visit_not_approved");

    // Only the host decides, once.
    let (s, mine) = app
        .get("/api/v1/me/visitor-requests?status=pending", &host_token)
        .await;
    assert_eq!((s, mine["items"].as_array().unwrap().len()), (200, 1));
    let id = first["id"].as_str().unwrap();
    let (s, p) = app
        .post(
            &format!("/api/v1/me/visitor-requests/{id}/approve"),
            &other_member,
            json!({}),
        )
        .await;
    assert_problem(s, &p, 404, "not_found");
    let (s, ok) = app
        .post(
            &format!("/api/v1/me/visitor-requests/{id}/approve"),
            &host_token,
            json!({}),
        )
        .await;
    assert_eq!((s, &ok["status"]), (200, &json!("approved")), "{ok}");
    let (s, p) = app
        .post(
            &format!("/api/v1/me/visitor-requests/{id}/reject"),
            &host_token,
            json!({}),
        )
        .await;
    assert_problem(s, &p, 409, "not_pending");
    let v = pass(&app, &first_pass).await;
    assert!(
        v["svg"].as_str().unwrap().contains("<svg"),
        "the QR code for the gate"
    );

    // The gate: too early, then in once (the QR code's text works as well as the pass).
    let (s, p) = gate(&app, admin, &first_pass).await;
    assert_problem(s, &p, 409, "outside_visit");
    app.clock.advance(SignedDuration::from_mins(45));
    let (s, entry) = gate(&app, admin, &format!("onecard:visit:{first_pass}")).await;
    assert_eq!(
        (s, &entry["first"], &entry["request"]["plate"]),
        (201, &json!(true), &json!("沪A12345")),
        "{entry}"
    );
    let e = phone.next_event().await;
    assert_eq!(e["type"], "visitor.entered", "{e}");
    let (s, again) = gate(&app, admin, &first_pass).await;
    assert_eq!((s, &again["first"]), (200, &json!(false)));
    let (s, p) = anonymous(
        &app,
        "/api/v1/visitors/pass/cancel",
        json!({ "pass": first_pass }),
    )
    .await;
    assert_problem(s, &p, 409, "not_pending");
    let (s, p) = gate(&app, admin, "not-a-pass").await;
    assert_problem(s, &p, 422, "pass_invalid");
    let elsewhere = crate::money::shop(&app, 5_000).await;
    let (s, p) = gate(&app, &elsewhere.admin, &first_pass).await;
    assert_problem(s, &p, 422, "pass_invalid");

    // A rejection blocks nothing: the visitor asks again and is approved.
    let (second, second_pass) = request(&app, ask(&app, &tenant, 2, json!({}))).await;
    let (s, no) = app
        .post(
            &format!(
                "/api/v1/me/visitor-requests/{}/reject",
                second["id"].as_str().unwrap()
            ),
            &host_token,
            json!({"reason": "I am away that day"}),
        )
        .await;
    assert_eq!((s, &no["status"]), (200, &json!("rejected")));
    let v = pass(&app, &second_pass).await;
    assert_eq!(
        (&v["request"]["status"], &v["request"]["reason"]),
        (&json!("rejected"), &json!("I am away that day"))
    );
    let (third, third_pass) = request(&app, ask(&app, &tenant, 3, json!({}))).await;
    assert_eq!(third["status"], "pending");

    // The visitor cancels an approved visit; the gate then refuses it.
    let (fourth, fourth_pass) = request(&app, ask(&app, &tenant, 1, json!({}))).await;
    let (s, _) = app
        .post(
            &format!(
                "/api/v1/me/visitor-requests/{}/approve",
                fourth["id"].as_str().unwrap()
            ),
            &host_token,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, gone) = anonymous(
        &app,
        "/api/v1/visitors/pass/cancel",
        json!({ "pass": fourth_pass }),
    )
    .await;
    assert_eq!((s, &gone["status"]), (200, &json!("cancelled")), "{gone}");
    let (s, p) = gate(&app, admin, &fourth_pass).await;
    assert_problem(s, &p, 409, "visit_not_approved");
    assert_eq!(
        pass(&app, &third_pass).await["request"]["status"],
        "pending"
    );

    // The figures and lists.
    let from = (app.clock_now() - SignedDuration::from_hours(24)).to_string();
    let to = (app.clock_now() + SignedDuration::from_hours(24)).to_string();
    let (s, counts) = app
        .get(
            &format!("/api/v1/visitors/stats?from={from}&to={to}"),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{counts}");
    assert_eq!(
        counts,
        json!({"requests": 4, "pending": 1, "approved": 1, "rejected": 1, "cancelled": 1, "entered": 1})
    );
    let (_, rejected) = app
        .get("/api/v1/visitors/requests?status=rejected", admin)
        .await;
    assert_eq!(rejected["items"][0]["id"], second["id"]);
    let (_, by_host) = app
        .get(
            &format!("/api/v1/visitors/requests?host_id={host}&limit=3"),
            admin,
        )
        .await;
    assert_eq!(by_host["items"].as_array().unwrap().len(), 3);
    assert!(by_host["next_cursor"].is_string());
    let (s, p) = app
        .get(
            &format!("/api/v1/visitors/stats?from={to}&to={from}"),
            admin,
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
}

async fn the_form_decides_what_is_asked_and_only_visitors_admins_keep_it(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let tenant = app.tenant_of(admin).await.to_string();
    member(&app, admin, "Host H-1", "H-1", "staff").await;
    let guards = group(
        &app,
        admin,
        json!({"name": "Security", "apps": ["visitors"]}),
    )
    .await;
    let guard = sub_admin(&app, admin, &app.user(admin, "A-1").await, &guards).await;
    let rooms = group(&app, admin, json!({"name": "Rooms", "apps": ["booking"]})).await;
    let facilities = sub_admin(&app, admin, &app.user(admin, "A-2").await, &rooms).await;
    let (_, cardholder) = person(&app, admin, "C-1").await;

    let strict = json!({
        "phone": "off", "company": "required", "purpose": "optional", "plate": "off",
        "real_name": true,
    });
    for token in [&facilities, &cardholder] {
        let (s, _) = app
            .send(
                reqwest::Method::PUT,
                "/api/v1/visitors/form",
                Some(token),
                Some(strict.clone()),
            )
            .await;
        assert_eq!(s, 403);
        let (s, _) = app.get("/api/v1/visitors/requests", token).await;
        assert_eq!(s, 403);
    }
    let (s, saved) = app
        .send(
            reqwest::Method::PUT,
            "/api/v1/visitors/form",
            Some(&guard),
            Some(strict.clone()),
        )
        .await;
    assert_eq!((s, &saved), (200, &strict), "{saved}");

    // What the form does not ask is refused, what it needs is required, and the real-name
    // check wants a valid resident ID number.
    let base = json!({"phone": null, "company": "ACME"});
    let with = |extra: Value| {
        let mut b = base.clone();
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        ask(&app, &tenant, 1, b)
    };
    let cases = [
        (
            json!({"phone": "13800000000", "id_number": "11010519491231002X"}),
            "phone",
            "not_asked",
        ),
        (
            json!({"company": null, "id_number": "11010519491231002X"}),
            "company",
            "required",
        ),
        (json!({}), "id_number", "required"),
        (
            json!({"id_number": "110105194912310021"}),
            "id_number",
            "real_name",
        ),
        (
            json!({"plate": "沪A12345", "id_number": "11010519491231002X"}),
            "plate",
            "not_asked",
        ),
    ];
    for (extra, field, rule) in cases {
        let (s, p) = anonymous(&app, "/api/v1/visitors/requests", with(extra)).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(
            (&p["errors"][0]["field"], &p["errors"][0]["rule"]),
            (&json!(field), &json!(rule)),
            "{p}"
        );
    }
    let (made, _) = request(&app, with(json!({"id_number": "11010519491231002x"}))).await;
    assert_eq!(
        (&made["id_last4"], &made["phone"], &made["company"]),
        (&json!("002X"), &Value::Null, &json!("ACME"))
    );
    let (s, listed) = app.get("/api/v1/visitors/requests", &guard).await;
    assert_eq!(s, 200);
    assert!(
        !listed.to_string().contains("11010519491231002"),
        "only the last four are kept"
    );

    // An unknown tenant has no form; another tenant's request names its own members.
    let (s, _) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/visitors/forms/{}", uuid::Uuid::now_v7()),
            None,
            None,
        )
        .await;
    assert_eq!(s, 404);
}

/// The open platform: a turnstile's app lets visitors in with `visitors_gate`; an app with
/// `visitors_read` reads the requests and has `visitor.requested` and `visitor.entered`
/// posted to its webhook; neither may do the other's part.
async fn a_turnstile_app_lets_visitors_in_and_a_reader_hears_of_them(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "advanced").await;
    let (_, host_token) = member(&app, &admin, "Host H-1", "H-1", "staff").await;
    let mut hooks = Receiver::start().await;
    let reader = hooked_app(
        &app,
        &admin,
        json!({"name": "Front desk", "kind": "headless", "scopes": ["visitors_read"],
            "webhook_url": hooks.url("/hook"),
            "webhook_events": ["visitor.requested", "visitor.entered"]}),
    )
    .await;
    let turnstile = hooked_app(
        &app,
        &admin,
        json!({"name": "Turnstile", "kind": "headless", "scopes": ["visitors_gate"]}),
    )
    .await;
    let (s, p) = app
        .post(
            "/api/v1/apps",
            &admin,
            json!({"name": "Nosy", "kind": "headless", "scopes": ["payments_read"],
                "webhook_url": hooks.url("/hook"), "webhook_events": ["visitor.entered"]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");

    let (made, made_pass) = request(&app, ask(&app, &tenant, 0, json!({}))).await;
    let got = hooks.next().await.json();
    assert_eq!(
        (&got["type"], &got["data"]["id"]),
        (&json!("visitor.requested"), &made["id"])
    );
    let (s, _) = app
        .post(
            &format!(
                "/api/v1/me/visitor-requests/{}/approve",
                made["id"].as_str().unwrap()
            ),
            &host_token,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);

    let sign = |who: &(String, String)| (who.0.clone(), who.1.clone());
    let entries = "/api/v1/visitors/entries";
    let body = json!({ "pass": made_pass });
    let (k, sk) = sign(&reader);
    let (s, p) = crate::checkin::signed(&app, (&k, &sk), "POST", entries, Some(&body)).await;
    assert_problem(s, &p, 403, "not_granted");
    let (k, sk) = sign(&turnstile);
    let (s, entry) = crate::checkin::signed(&app, (&k, &sk), "POST", entries, Some(&body)).await;
    assert_eq!((s, &entry["first"]), (201, &json!(true)), "{entry}");
    let got = hooks.next().await.json();
    assert_eq!(got["type"], "visitor.entered", "{got}");
    assert!(got["data"]["entered_at"].is_string(), "{got}");
    let (s, p) =
        crate::checkin::signed(&app, (&k, &sk), "GET", "/api/v1/visitors/requests", None).await;
    assert_problem(s, &p, 403, "not_granted");
    let (k, sk) = sign(&reader);
    let (s, listed) =
        crate::checkin::signed(&app, (&k, &sk), "GET", "/api/v1/visitors/requests", None).await;
    assert_eq!(
        (s, &listed["items"][0]["entered_at"]),
        (200, &entry["request"]["entered_at"])
    );
    // Neither app may change the form.
    let (s, _) = crate::checkin::signed(
        &app,
        (&k, &sk),
        "PUT",
        "/api/v1/visitors/form",
        Some(
            &json!({"phone": "off", "company": "off", "purpose": "off", "plate": "off",
            "real_name": false}),
        ),
    )
    .await;
    assert_eq!(s, 403);
    hooks.nothing_more().await;
    hooks.handle.stop(true).await;
}

/// Requests without a token: 20 from one address, then one every 10 seconds (429); and a
/// host with 50 requests waiting takes no more (409 `host_busy`) until they decide.
async fn requests_are_limited_per_address_and_per_host(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let tenant = app.tenant_of(admin).await.to_string();
    let (_, host_token) = member(&app, admin, "Host H-1", "H-1", "staff").await;
    // Clients from other loopback addresses: each has a budget of its own.
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let send = |client: reqwest::Client, body: Value| {
        let url = app.url("/api/v1/visitors/requests");
        async move {
            let res = client.post(url).json(&body).send().await.unwrap();
            let status = res.status().as_u16();
            let retry = res.headers().get("retry-after").is_some();
            (
                status,
                retry,
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut made = 0;
    for last in [2, 3] {
        let client = from(last);
        for _ in 0..20 {
            let (s, _, body) = send(client.clone(), ask(&app, &tenant, 1, json!({}))).await;
            assert_eq!(s, 201, "{body}");
            made += 1;
        }
        let (s, retry, body) = send(client.clone(), ask(&app, &tenant, 1, json!({}))).await;
        assert_eq!((s, retry), (429, true), "{body}");
    }
    let client = from(4);
    for _ in made..50 {
        let (s, _, body) = send(client.clone(), ask(&app, &tenant, 1, json!({}))).await;
        assert_eq!(s, 201, "{body}");
    }
    let (s, _, body) = send(client.clone(), ask(&app, &tenant, 1, json!({}))).await;
    assert_problem(s, &body, 409, "host_busy");
    // A decision makes room.
    let (_, waiting) = app
        .get(
            "/api/v1/me/visitor-requests?status=pending&limit=1",
            &host_token,
        )
        .await;
    let id = waiting["items"][0]["id"].as_str().unwrap();
    let (s, _) = app
        .post(
            &format!("/api/v1/me/visitor-requests/{id}/reject"),
            &host_token,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, body) = send(client.clone(), ask(&app, &tenant, 1, json!({}))).await;
    assert_eq!(s, 201, "{body}");
}

const REGISTRY_SECRET: &str = "registry-secret-registry-secret-42";

/// A stand-in real-name registry adapter: knows Wang Fang by one number; answers with
/// `status` (200: a verdict); keeps what it was asked, and whether it was signed.
#[derive(Clone, Default)]
struct Registry {
    status: std::sync::Arc<std::sync::Mutex<u16>>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<(Value, bool)>>>,
}

async fn registry(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    state: actix_web::web::Data<Registry>,
) -> actix_web::HttpResponse {
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let signed = signed_with(REGISTRY_SECRET, &req, &body);
    state.asked.lock().unwrap().push((asked.clone(), signed));
    let status = *state.status.lock().unwrap();
    if status != 200 {
        return actix_web::HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status).unwrap(),
        )
        .finish();
    }
    let known = asked["name"] == "Wang Fang" && asked["id_number"] == "11010519491231002X";
    actix_web::HttpResponse::Ok().json(json!({ "match": known }))
}

async fn a_real_name_registry_decides_whether_a_name_and_number_belong_together(engine: Engine) {
    let adapter = Registry::default();
    *adapter.status.lock().unwrap() = 200;
    let (base, handle) = serve_local(actix_web::web::Data::new(adapter.clone()), registry);
    let Some(app) = spawn_with(engine, |c| {
        c.real_name = onecard::config::RealName::Http {
            url: format!("{base}/verify"),
            secret: REGISTRY_SECRET.to_string().into(),
        }
    })
    .await
    else {
        return;
    };
    let shop = shop(&app, 5_000).await;
    let admin = &shop.admin;
    let tenant = app.tenant_of(admin).await.to_string();
    member(&app, admin, "Host H-1", "H-1", "staff").await;
    let (s, saved) = app
        .send(
            reqwest::Method::PUT,
            "/api/v1/visitors/form",
            Some(admin),
            Some(
                json!({"phone": "optional", "company": "off", "purpose": "off",
                "plate": "off", "real_name": true}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{saved}");
    let count = |list: Value| list["items"].as_array().unwrap().len();

    // A number that is not the person's: refused, nothing written.
    let stranger = ask(
        &app,
        &tenant,
        1,
        json!({"name": "Li Si", "id_number": "11010519491231002x"}),
    );
    let (s, body) = anonymous(&app, "/api/v1/visitors/requests", stranger).await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(
        (
            body["errors"][0]["field"].as_str(),
            body["errors"][0]["rule"].as_str()
        ),
        (Some("id_number"), Some("real_name"))
    );
    let (asked, signed) = adapter
        .asked
        .lock()
        .unwrap()
        .pop()
        .expect("the registry was asked");
    assert!(signed, "the check is signed with the registry secret");
    assert_eq!(
        (
            asked["tenant_id"].as_str(),
            asked["name"].as_str(),
            asked["id_number"].as_str()
        ),
        (
            Some(tenant.as_str()),
            Some("Li Si"),
            Some("11010519491231002X")
        )
    );
    let (_, list) = app.get("/api/v1/visitors/requests", admin).await;
    assert_eq!(count(list), 0);

    // The registry is down: 503, nothing written; the visitor tries again later.
    *adapter.status.lock().unwrap() = 500;
    let known = ask(&app, &tenant, 1, json!({"id_number": "11010519491231002X"}));
    let (s, body) = anonymous(&app, "/api/v1/visitors/requests", known.clone()).await;
    assert_problem(s, &body, 503, "unavailable");
    let (_, list) = app.get("/api/v1/visitors/requests", admin).await;
    assert_eq!(count(list), 0);

    // The person's own number: the request is made.
    *adapter.status.lock().unwrap() = 200;
    let (made, _) = request(&app, known).await;
    assert_eq!(made["status"], "pending");
    // A malformed number never reaches the registry.
    let before = adapter.asked.lock().unwrap().len();
    let bad = ask(&app, &tenant, 2, json!({"id_number": "110105194912310021"}));
    let (s, _) = anonymous(&app, "/api/v1/visitors/requests", bad).await;
    assert_eq!(s, 422);
    assert_eq!(adapter.asked.lock().unwrap().len(), before);
    handle.stop(false).await;
}
