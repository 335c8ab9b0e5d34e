//! The open platform's webhooks (SPEC §12): an app's events reach its address signed,
//! once each, and a failed delivery is retried with backoff until the app acknowledges
//! it, or given up after its time and sent again by an admin.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use jiff::SignedDuration;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::helpers::{app_signature, assert_problem, serve_local, spawn_app, Engine, TestApp};
use crate::money::{code, keyed, pay, person, shop_in, top_up, two_nodes};
use crate::on_both_engines;

on_both_engines!(
    an_app_gets_the_events_it_asked_for_signed_and_nothing_else,
    a_failed_delivery_is_retried_with_backoff_given_up_in_time_and_sent_again,
);

/// One request the app's server received.
#[derive(Debug)]
pub(crate) struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The signature holds for `secret`, over the text the app's own requests sign.
    pub(crate) fn assert_signed_with(&self, secret: &str) {
        let (signature, text) = app_signature(
            secret,
            "POST",
            &self.path,
            self.header("x-timestamp"),
            self.header("x-nonce"),
            &self.body,
        );
        assert_eq!(
            self.header("x-signature"),
            signature,
            "signed over {text:?}"
        );
    }
}

/// The app's server: records each request and answers the next scripted status (200
/// once the script is spent).
pub(crate) struct Receiver {
    base: String,
    got: mpsc::UnboundedReceiver<Received>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    pub handle: actix_web::dev::ServerHandle,
}

struct Shared {
    tx: mpsc::UnboundedSender<Received>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    /// How long it takes to answer (an app's slow server).
    delay: Duration,
}

async fn hook(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let status = shared.answers.lock().unwrap().pop_front().unwrap_or(200);
    let _ = shared.tx.send(Received {
        path,
        headers,
        body: body.to_vec(),
    });
    tokio::time::sleep(shared.delay).await;
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body("ok")
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        Self::answering_after(Duration::ZERO).await
    }

    /// A server that takes `delay` to answer each request (it records it at once).
    async fn answering_after(delay: Duration) -> Self {
        let (tx, got) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let shared = web::Data::new(Shared {
            tx,
            answers: answers.clone(),
            delay,
        });
        let (base, handle) = serve_local(shared, hook);
        Receiver {
            base,
            got,
            answers,
            handle,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    pub(crate) async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(15), self.got.recv())
            .await
            .expect("a delivery within 15 s")
            .expect("the receiver runs")
    }

    pub(crate) async fn nothing_more(&mut self) {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), self.got.recv()).await
        {
            panic!("an unexpected delivery: {r:?}");
        }
    }
}

/// An app of `admin`'s tenant with a webhook; answers (app id, secret).
pub(crate) async fn hooked_app(app: &TestApp, admin: &str, body: Value) -> (String, String) {
    let (s, created) = app.post("/api/v1/apps", admin, body).await;
    assert_eq!(s, 201, "{created}");
    (
        created["app_key"].as_str().unwrap().to_string(),
        created["app_secret"].as_str().unwrap().to_string(),
    )
}

async fn ping(app: &TestApp, admin: &str, app_id: &str) -> (u16, Value) {
    app.post(
        &format!("/api/v1/apps/{app_id}/webhook-ping"),
        admin,
        json!({}),
    )
    .await
}

/// Points the app's webhook at `url` (or nowhere, for `null`).
async fn set_url(app: &TestApp, admin: &str, app_id: &str, url: Value) -> (u16, Value) {
    app.patch(
        &format!("/api/v1/apps/{app_id}"),
        admin,
        json!({ "webhook_url": url }),
    )
    .await
}

async fn deliveries(app: &TestApp, admin: &str, app_id: &str, query: &str) -> Vec<Value> {
    let (s, page) = app
        .get(
            &format!("/api/v1/apps/{app_id}/webhook-deliveries{query}"),
            admin,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// Polls the delivery list until `done` holds for the delivery `id` (its outcome is
/// recorded just after the app's server answers).
async fn delivery_when(
    app: &TestApp,
    admin: &str,
    app_id: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let found = deliveries(app, admin, app_id, "").await;
        if let Some(d) = found.into_iter().find(|d| d["id"] == id) {
            if done(&d) {
                return d;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("delivery {id} did not reach the expected state");
}

async fn an_app_gets_the_events_it_asked_for_signed_and_nothing_else(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut hooks = Receiver::start().await;
    let shop = shop_in(&app, "advanced", 5000).await;
    let admin = shop.admin.clone();

    // Event types need the scope that reads them, an address, each once; the address is
    // http(s) without credentials.
    let url = hooks.url("/hooks/onecard?site=north");
    for (body, field) in [
        (
            json!({"name": "A", "kind": "headless", "scopes": ["directory_read"],
                   "webhook_url": url, "webhook_events": ["payment.succeeded"]}),
            "webhook_events",
        ),
        (
            json!({"name": "A", "kind": "headless", "scopes": ["payments_read"],
                   "webhook_events": ["payment.succeeded"]}),
            "webhook_url",
        ),
        (
            json!({"name": "A", "kind": "headless", "scopes": ["payments_read"],
                   "webhook_url": url,
                   "webhook_events": ["payment.succeeded", "payment.succeeded"]}),
            "webhook_events",
        ),
        (
            json!({"name": "A", "kind": "headless", "webhook_url": "ftp://gate.example/x"}),
            "webhook_url",
        ),
        (
            json!({"name": "A", "kind": "headless",
                   "webhook_url": "https://user:pw@gate.example/x"}),
            "webhook_url",
        ),
    ] {
        let (s, problem) = app.post("/api/v1/apps", &admin, body).await;
        assert_problem(s, &problem, 422, "invalid");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (s, problem) = app
        .post(
            "/api/v1/apps",
            &admin,
            json!({"name": "A", "kind": "headless", "scopes": ["payments_read"],
                   "webhook_url": url, "webhook_events": ["payment.exploded"]}),
        )
        .await;
    assert!(s == 400 || s == 422, "{s} {problem}");
    let (s, apps) = app.get("/api/v1/apps", &admin).await;
    assert_eq!((s, apps["items"].as_array().unwrap().len()), (200, 0));

    // The gate wants successful payments; the bookkeeper has no webhook; both read money.
    let (gate, secret) = hooked_app(
        &app,
        &admin,
        json!({"name": "Gate", "kind": "headless", "scopes": ["payments_read"],
               "webhook_url": url, "webhook_events": ["payment.succeeded"]}),
    )
    .await;
    let (quiet, _) = hooked_app(
        &app,
        &admin,
        json!({"name": "Books", "kind": "headless", "scopes": ["payments_read"]}),
    )
    .await;
    let (s, shown) = app.get(&format!("/api/v1/apps/{gate}"), &admin).await;
    assert_eq!(s, 200);
    assert_eq!(shown["webhook_url"], url);
    assert_eq!(shown["webhook_events"], json!(["payment.succeeded"]));

    // A payment, its refund (not asked for), a second payment.
    let (user, me) = person(&app, &admin, "S1").await;
    top_up(&app, &shop, &user, 1_000).await;
    let paid = pay(&app, &shop, &code(&app, &me).await, 300).await;
    let got = hooks.next().await;
    assert_eq!(got.path, "/hooks/onecard?site=north");
    got.assert_signed_with(&secret);
    assert_eq!(got.header("x-app-key"), gate);
    assert_eq!(got.header("x-event-type"), "payment.succeeded");
    assert_eq!(got.header("x-delivery-attempt"), "1");
    assert_eq!(got.header("content-type"), "application/json");
    let event = got.json();
    assert_eq!(event["type"], "payment.succeeded");
    assert_eq!(event["id"], got.header("x-event-id"));
    assert_eq!(event["data"]["id"], paid["id"], "{event}");
    assert_eq!(event["data"]["amount"], 300);
    assert_eq!(event["data"]["status"], "succeeded");
    assert_eq!(event["tenant_id"], shop_tenant(&app, &admin).await);
    let stamp: i64 = got.header("x-timestamp").parse().unwrap();
    assert!((stamp - app.clock_now().as_second()).abs() <= 1);

    let (s, refund) = keyed(
        &app,
        &format!("/api/v1/payments/{}/refunds", paid["id"].as_str().unwrap()),
        &admin,
        "refund-1",
        json!({"amount": 100}),
    )
    .await;
    assert_eq!(s, 201, "{refund}");
    let second = pay(&app, &shop, &code(&app, &me).await, 200).await;
    let got = hooks.next().await;
    got.assert_signed_with(&secret);
    assert_eq!(
        got.json()["data"]["id"],
        second["id"],
        "the refund is not sent"
    );
    assert_ne!(got.header("x-event-id"), event["id"].as_str().unwrap());
    hooks.nothing_more().await;

    // The deliveries, newest first, acknowledged.
    let last = delivery_when(&app, &admin, &gate, got.header("x-delivery-id"), |d| {
        d["status"] == "delivered"
    })
    .await;
    assert_eq!(last["attempts"], 1);
    assert_eq!(last["last_status"], 200);
    let listed = deliveries(&app, &admin, &gate, "?status=delivered").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["event_id"], got.header("x-event-id"));
    assert_eq!(listed[1]["event_id"], event["id"]);
    assert!(deliveries(&app, &admin, &quiet, "").await.is_empty());
    assert!(deliveries(&app, &admin, &gate, "?status=failed")
        .await
        .is_empty());

    // Stopped by removing the address; another tenant sees none of it.
    let (s, patched) = app
        .patch(
            &format!("/api/v1/apps/{gate}"),
            &admin,
            json!({"webhook_url": null, "webhook_events": []}),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    pay(&app, &shop, &code(&app, &me).await, 50).await;
    hooks.nothing_more().await;
    let (_, stranger) = app.tenant("university", "advanced").await;
    let (s, problem) = app
        .get(
            &format!("/api/v1/apps/{gate}/webhook-deliveries"),
            &stranger,
        )
        .await;
    assert_problem(s, &problem, 404, "not_found");
    hooks.handle.stop(false).await;
}

/// An app whose server hangs (each answer 60 s away, past the 10 s timeout) gets a few
/// deliveries at a time; another app of the tenant gets every event meanwhile, long
/// before the hung ones time out.
#[actix_web::test]
async fn an_app_that_hangs_does_not_hold_up_another_apps_deliveries() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let mut hung = Receiver::answering_after(Duration::from_secs(60)).await;
    let mut fast = Receiver::start().await;
    let shop = shop_in(&app, "advanced", 100_000).await;
    for (name, to) in [("Hung", &hung), ("Fast", &fast)] {
        hooked_app(
            &app,
            &shop.admin,
            json!({"name": name, "kind": "headless", "scopes": ["payments_read"],
                   "webhook_url": to.url("/hook"), "webhook_events": ["payment.succeeded"]}),
        )
        .await;
    }
    let (user, me) = person(&app, &shop.admin, "S1").await;
    top_up(&app, &shop, &user, 100_000).await;
    let started = std::time::Instant::now();
    let mut paid = std::collections::HashSet::new();
    for _ in 0..48 {
        let p = pay(&app, &shop, &code(&app, &me).await, 10).await;
        paid.insert(p["id"].clone());
    }
    let mut got = std::collections::HashSet::new();
    while got.len() < paid.len() {
        got.insert(fast.next().await.json()["data"]["id"].clone());
    }
    assert_eq!(got, paid);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "every delivery to the other app before the first hung one timed out: {:?}",
        started.elapsed()
    );
    // The hung app has a few under way, not the node's every sending slot.
    let mut hung_now = 0;
    while tokio::time::timeout(Duration::from_millis(200), hung.got.recv())
        .await
        .is_ok()
    {
        hung_now += 1;
    }
    assert!((1..=16).contains(&hung_now), "{hung_now} to the hung app");
    hung.handle.stop(false).await;
    fast.handle.stop(false).await;
}

/// Two nodes on one PostgreSQL relay and deliver side by side: each payment's event
/// reaches the app once, whichever node took the payment and whichever sent it.
#[actix_web::test]
async fn two_nodes_deliver_each_event_once() {
    let Some((a, b, _db)) = two_nodes().await else {
        return;
    };
    let mut hooks = Receiver::start().await;
    let shop = shop_in(&a, "advanced", 5000).await;
    // The app exists before node B relays anything (a node sees another's app changes
    // within its cache's few seconds).
    let (gate, secret) = hooked_app(
        &a,
        &shop.admin,
        json!({"name": "Gate", "kind": "headless", "scopes": ["payments_read"],
               "webhook_url": hooks.url("/hook"), "webhook_events": ["payment.succeeded"]}),
    )
    .await;
    let (user, me) = person(&a, &shop.admin, "S1").await;
    top_up(&a, &shop, &user, 10_000).await;
    let mut paid = std::collections::HashSet::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let p = pay(node, &shop, &code(node, &me).await, 10 + i).await;
        paid.insert(p["id"].as_str().unwrap().to_string());
    }
    let mut got = std::collections::HashSet::new();
    for _ in 0..12 {
        let r = hooks.next().await;
        r.assert_signed_with(&secret);
        assert!(
            got.insert(r.json()["data"]["id"].as_str().unwrap().to_string()),
            "twice: {r:?}"
        );
    }
    assert_eq!(got, paid);
    hooks.nothing_more().await;
    let listed = deliveries(&b, &shop.admin, &gate, "?limit=100").await;
    assert_eq!(listed.len(), 12);
    hooks.handle.stop(false).await;
}

async fn shop_tenant(app: &TestApp, admin: &str) -> String {
    app.tenant_of(admin).await.to_string()
}

async fn a_failed_delivery_is_retried_with_backoff_given_up_in_time_and_sent_again(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut hooks = Receiver::start().await;
    let (_, admin) = app.tenant("university", "advanced").await;
    let url = hooks.url("/hook");
    let (gate, secret) = hooked_app(
        &app,
        &admin,
        json!({"name": "Gate", "kind": "headless", "scopes": ["payments_read"],
               "webhook_url": url}),
    )
    .await;

    // The app's server fails once: the ping comes again after the backoff, the same
    // delivery and event with a new nonce.
    hooks.answer(&[500]);
    let (s, pinged) = ping(&app, &admin, &gate).await;
    assert_eq!(s, 202, "{pinged}");
    assert_eq!(pinged["type"], "webhook.ping");
    let id = pinged["id"].as_str().unwrap().to_string();
    let first = hooks.next().await;
    first.assert_signed_with(&secret);
    assert_eq!(first.header("x-delivery-id"), id);
    assert_eq!(first.json()["data"]["app_id"], gate);
    let failed_once = delivery_when(&app, &admin, &gate, &id, |d| {
        d["attempts"] == 1 && d["last_status"] == 500
    })
    .await;
    assert_eq!(failed_once["status"], "pending");
    assert_eq!(
        failed_once["last_error"],
        "answered 500 Internal Server Error"
    );
    let next: jiff::Timestamp = failed_once["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wait = next.duration_since(app.clock_now());
    assert!(
        wait >= SignedDuration::from_secs(7) && wait <= SignedDuration::from_secs(12),
        "10 s ± 20 %: {wait:?}"
    );
    hooks.nothing_more().await;
    app.clock.advance(SignedDuration::from_secs(13));
    let second = hooks.next().await;
    second.assert_signed_with(&secret);
    assert_eq!(second.header("x-delivery-id"), id);
    assert_eq!(second.header("x-delivery-attempt"), "2");
    assert_eq!(second.header("x-event-id"), first.header("x-event-id"));
    assert_ne!(second.header("x-nonce"), first.header("x-nonce"));
    assert_eq!(second.body, first.body, "the same body every attempt");
    let done = delivery_when(&app, &admin, &gate, &id, |d| d["status"] == "delivered").await;
    assert_eq!(
        (done["attempts"].as_i64(), done["last_status"].as_i64()),
        (Some(2), Some(200))
    );

    // An address nobody answers: retried until its 3 days are up, then given up.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/gone", l.local_addr().unwrap())
    };
    let (s, _) = set_url(&app, &admin, &gate, json!(closed)).await;
    assert_eq!(s, 200);
    let (s, pinged) = ping(&app, &admin, &gate).await;
    assert_eq!(s, 202);
    let lost = pinged["id"].as_str().unwrap().to_string();
    let once = delivery_when(&app, &admin, &gate, &lost, |d| {
        d["attempts"] == 1 && !d["last_error"].is_null()
    })
    .await;
    assert!(
        once["last_error"]
            .as_str()
            .unwrap()
            .starts_with("could not connect"),
        "{once}"
    );
    assert!(once["last_status"].is_null());
    app.clock.advance(SignedDuration::from_hours(73));
    let given_up = delivery_when(&app, &admin, &gate, &lost, |d| d["status"] == "failed").await;
    assert_eq!(given_up["attempts"], 2);
    assert!(given_up["next_attempt_at"].is_null());
    let failed = deliveries(&app, &admin, &gate, "?status=failed").await;
    assert_eq!(failed.len(), 1);

    // The app is back: an admin sends it again, and it arrives.
    let (s, _) = set_url(&app, &admin, &gate, json!(url)).await;
    assert_eq!(s, 200);
    let (_, stranger) = app.tenant("university", "advanced").await;
    let retry = format!("/api/v1/apps/{gate}/webhook-deliveries/{lost}/retry");
    let (s, problem) = app.post(&retry, &stranger, json!({})).await;
    assert_problem(s, &problem, 404, "not_found");
    let (s, again) = app.post(&retry, &admin, json!({})).await;
    assert_eq!(s, 202, "{again}");
    assert_eq!(again["status"], "pending");
    let third = hooks.next().await;
    third.assert_signed_with(&secret);
    assert_eq!(third.header("x-delivery-id"), lost);
    assert_eq!(third.header("x-delivery-attempt"), "3");
    let back = delivery_when(&app, &admin, &gate, &lost, |d| d["status"] == "delivered").await;
    assert_eq!(back["attempts"], 3);
    let (s, audit) = app
        .get("/api/v1/audit?action=app.webhook.retry", &admin)
        .await;
    assert_eq!(s, 200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    // A rotated secret signs from the next attempt on.
    let (s, rotated) = app
        .post(&format!("/api/v1/apps/{gate}/secret"), &admin, json!({}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = ping(&app, &admin, &gate).await;
    assert_eq!(s, 202);
    hooks
        .next()
        .await
        .assert_signed_with(rotated["app_secret"].as_str().unwrap());

    // No address, no ping.
    let (s, _) = set_url(&app, &admin, &gate, json!(null)).await;
    assert_eq!(s, 200);
    let (s, problem) = ping(&app, &admin, &gate).await;
    assert_problem(s, &problem, 409, "no_webhook");
    hooks.handle.stop(false).await;
}
