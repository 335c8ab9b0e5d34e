//! The open platform (SPEC §12): apps call the API with signed requests, within a clock
//! window, once per nonce, and only as far as their scopes reach.

use jiff::SignedDuration;
use onecard_actors::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{app_signature, assert_problem, spawn_app, Engine, TestApp};
use crate::on_both_engines;

on_both_engines!(
    an_app_calls_the_api_with_signed_requests_as_far_as_its_scopes_reach,
    bad_signatures_stale_clocks_and_replays_are_refused_and_change_nothing,
    a_replay_is_refused_with_nonces_in_the_store,
    an_h5_app_opens_from_the_card_and_its_server_learns_who_opened_it,
);

/// Without Redis the store keeps the nonces (with it, Redis does; CI runs the tests above
/// with Redis): a replay is refused either way.
async fn a_replay_is_refused_with_nonces_in_the_store(engine: Engine) {
    let Some(app) = crate::helpers::spawn_with(engine, |c| c.redis_url = None).await else {
        return;
    };
    let creds = reading_gate(&app).await;
    let first = Signed::new(&app, Method::GET, "/api/v1/users", None);
    let nonce = first.nonce.clone();
    let (s, _) = first.send(&app, &creds).await;
    assert_eq!(s, 200);
    let mut again = Signed::new(&app, Method::GET, "/api/v1/users", None);
    again.nonce = nonce;
    let (s, body) = again.send(&app, &creds).await;
    assert_problem(s, &body, 401, "nonce_reused");
}

/// An app's budget is spent only by requests it signed: a stranger sending its (public)
/// key from elsewhere is limited by their own address and leaves the app's budget alone.
#[actix_web::test]
async fn only_an_apps_own_signed_requests_spend_its_rate_budget() {
    let Some(app) = crate::helpers::spawn_with(Engine::Sqlite, |c| {
        c.rate_limit_per_s = 1;
        c.rate_limit_burst = 3;
    })
    .await
    else {
        return;
    };
    let creds = reading_gate(&app).await;
    // A stranger on another address floods the app's key with bad signatures.
    onecard::startup::install_tls();
    let stranger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = stranger
            .get(app.url("/api/v1/users"))
            .header("X-App-Key", &creds.key)
            .header("X-Timestamp", "0")
            .header("X-Nonce", "strangers")
            .header("X-Signature", "00".repeat(32))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429, 429],
        "limited by their address"
    );
    // The app itself still has its whole budget, and then no more.
    let mut mine = Vec::new();
    for _ in 0..4 {
        let (s, _) = Signed::new(&app, Method::GET, "/api/v1/users", None)
            .send(&app, &creds)
            .await;
        mine.push(s);
    }
    assert_eq!(mine, [200, 200, 200, 429], "{mine:?}");
}

/// An app's credentials, as an integrator keeps them.
struct Creds {
    key: String,
    secret: String,
}

/// One signed request, signed here from the documented recipe (not with the server's
/// own code): hex(HMAC-SHA256(secret, METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nhex(SHA-256(body)))).
struct Signed<'a> {
    method: Method,
    path: &'a str,
    body: Option<Value>,
    timestamp: i64,
    nonce: String,
    /// Sent instead of the signed body or path, to tamper with a request.
    sent_body: Option<Value>,
    sent_path: Option<&'a str>,
    idempotency_key: Option<&'a str>,
}

impl<'a> Signed<'a> {
    fn new(app: &TestApp, method: Method, path: &'a str, body: Option<Value>) -> Self {
        Signed {
            method,
            path,
            body,
            timestamp: app.clock.now().as_second(),
            nonce: format!("n-{}", uuid::Uuid::now_v7().simple()),
            sent_body: None,
            sent_path: None,
            idempotency_key: None,
        }
    }

    async fn send(self, app: &TestApp, creds: &Creds) -> (u16, Value) {
        let body = self
            .body
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default();
        let (signature, _) = app_signature(
            &creds.secret,
            self.method.as_str(),
            self.path,
            &self.timestamp.to_string(),
            &self.nonce,
            body.as_bytes(),
        );
        let sent = self.sent_body.map(|b| b.to_string()).unwrap_or(body);
        let mut req = app
            .client
            .request(self.method, app.url(self.sent_path.unwrap_or(self.path)))
            .header("X-App-Key", &creds.key)
            .header("X-Timestamp", self.timestamp.to_string())
            .header("X-Nonce", &self.nonce)
            .header("X-Signature", signature);
        if let Some(key) = self.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if !sent.is_empty() {
            req = req.header("Content-Type", "application/json").body(sent);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A tenant of the advanced edition with one app that reads the directory.
async fn reading_gate(app: &TestApp) -> Creds {
    let (_, admin) = app.tenant("university", "advanced").await;
    let (_, creds) = register(
        app,
        &admin,
        json!({"name": "Gate", "kind": "headless", "scopes": ["directory_read"]}),
    )
    .await;
    creds
}

async fn register(app: &TestApp, admin: &str, body: Value) -> (Value, Creds) {
    let (s, created) = app.post("/api/v1/apps", admin, body).await;
    assert_eq!(s, 201, "{created}");
    let creds = Creds {
        key: created["app_key"].as_str().unwrap().to_string(),
        secret: created["app_secret"].as_str().unwrap().to_string(),
    };
    (created, creds)
}

async fn an_app_calls_the_api_with_signed_requests_as_far_as_its_scopes_reach(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // The open API starts at the advanced edition.
    let (_, standard) = app.tenant("university", "standard").await;
    let (s, body) = app
        .post(
            "/api/v1/apps",
            &standard,
            json!({"name": "Gate", "kind": "headless"}),
        )
        .await;
    assert_problem(s, &body, 403, "edition");

    let (_, admin) = app.tenant("university", "advanced").await;
    let person = app.user(&admin, "G-1").await;
    let (gate, creds) = register(
        &app,
        &admin,
        json!({"name": "North gate", "kind": "headless", "description": "Door access",
               "scopes": ["directory_read", "payments_read"]}),
    )
    .await;
    assert_eq!(gate["app_key"], gate["id"]);
    assert_eq!(gate["secret_version"], 1);
    let (s, body) = app
        .post(
            "/api/v1/apps",
            &admin,
            json!({"name": "North gate", "kind": "h5"}),
        )
        .await;
    assert_problem(s, &body, 409, "app_name_taken");
    let (page, _) = register(&app, &admin, json!({"name": "Menu", "kind": "h5"})).await;
    assert_eq!(page["kind"], "h5");

    // The secret is shown once: never in a list or a read.
    let (_, list) = app.get("/api/v1/apps", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(page["app_secret"].as_str().unwrap().len() == 43);
    assert!(list.to_string().find(&creds.secret).is_none());
    let gate_path = format!("/api/v1/apps/{}", creds.key);
    let (_, read) = app.get(&gate_path, &admin).await;
    assert!(read.get("app_secret").is_none(), "{read}");

    // What its scopes open, and no more.
    let (s, users) = Signed::new(&app, Method::GET, "/api/v1/users?q=G-", None)
        .send(&app, &creds)
        .await;
    assert_eq!(s, 200, "{users}");
    assert_eq!(users["items"][0]["id"], person["id"]);
    let (s, _) = Signed::new(&app, Method::GET, "/api/v1/merchants", None)
        .send(&app, &creds)
        .await;
    assert_eq!(s, 200);
    let (s, body) = Signed::new(
        &app,
        Method::POST,
        "/api/v1/merchants",
        Some(json!({"name": "Gate shop"})),
    )
    .send(&app, &creds)
    .await;
    assert_problem(s, &body, 403, "not_granted");
    let (s, body) = Signed::new(
        &app,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "Nope", "number": "G-2"})),
    )
    .send(&app, &creds)
    .await;
    assert_problem(s, &body, 403, "not_granted");
    for path in [
        "/api/v1/admins",
        "/api/v1/apps",
        "/api/v1/audit",
        "/api/v1/tenant",
    ] {
        let (s, body) = Signed::new(&app, Method::GET, path, None)
            .send(&app, &creds)
            .await;
        assert_problem(s, &body, 403, "forbidden");
    }

    // Scopes widened: it holds on the next request, and what the app does is audited
    // as the app's.
    let (s, body) = app
        .patch(
            &gate_path,
            &admin,
            json!({"scopes": ["directory_read", "directory_write", "payments_read"]}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, made) = Signed::new(
        &app,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "Visitor", "number": "G-3"})),
    )
    .send(&app, &creds)
    .await;
    assert_eq!(s, 201, "{made}");
    let (_, audit) = app
        .get(
            &format!("/api/v1/audit?target_id={}", made["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(audit["items"][0]["actor"], format!("app:{}", creds.key));

    // Money: a top-up needs payments_write and an Idempotency-Key, and a retry with the
    // same key and body is answered from the first, once.
    let topup = format!(
        "/api/v1/users/{}/wallet/topups",
        person["id"].as_str().unwrap()
    );
    let mut refused = Signed::new(&app, Method::POST, &topup, Some(json!({"amount": 500})));
    refused.idempotency_key = Some("gate-topup-1");
    let (s, body) = refused.send(&app, &creds).await;
    assert_problem(s, &body, 403, "not_granted");
    let (s, _) = app
        .patch(
            &gate_path,
            &admin,
            json!({"scopes": ["directory_read", "directory_write", "payments_read",
                              "payments_write"]}),
        )
        .await;
    assert_eq!(s, 200);
    for want in [201, 200] {
        let mut top_up = Signed::new(&app, Method::POST, &topup, Some(json!({"amount": 500})));
        top_up.idempotency_key = Some("gate-topup-1");
        let (s, body) = top_up.send(&app, &creds).await;
        assert_eq!(s, want, "{body}");
    }
    let (_, wallet) = app
        .get(
            &format!("/api/v1/users/{}/wallet", person["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(wallet["balance"], 500, "charged once");
    // Another app's Idempotency-Key is its own: the same key with another body is a
    // request of its own, not a conflict with this app's.
    let (_, kiosk) = register(
        &app,
        &admin,
        json!({"name": "Kiosk", "kind": "mini_program", "scopes": ["directory_write"]}),
    )
    .await;
    for (who, number) in [(&creds, "K-1"), (&kiosk, "K-2")] {
        let mut add = Signed::new(
            &app,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "Same key", "number": number})),
        );
        add.idempotency_key = Some("shared-key");
        let (s, body) = add.send(&app, who).await;
        assert_eq!(s, 201, "{body}");
    }

    // A rotated secret: the old one stops at once, the new one works.
    let (s, rotated) = app
        .post(&format!("{gate_path}/secret"), &admin, json!({}))
        .await;
    assert_eq!(s, 201, "{rotated}");
    assert_eq!(rotated["secret_version"], 2);
    let fresh = Creds {
        key: creds.key.clone(),
        secret: rotated["app_secret"].as_str().unwrap().to_string(),
    };
    assert_ne!(fresh.secret, creds.secret);
    let (s, body) = Signed::new(&app, Method::GET, "/api/v1/users", None)
        .send(&app, &creds)
        .await;
    assert_problem(s, &body, 401, "bad_signature");
    let (s, _) = Signed::new(&app, Method::GET, "/api/v1/users", None)
        .send(&app, &fresh)
        .await;
    assert_eq!(s, 200);

    // Another tenant's admin does not see it; once deleted, its requests stop.
    let (_, other) = app.tenant("enterprise", "flagship").await;
    let (s, body) = app.get(&gate_path, &other).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, _) = app.delete(&gate_path, &admin).await;
    assert_eq!(s, 204);
    let (s, body) = Signed::new(&app, Method::GET, "/api/v1/users", None)
        .send(&app, &fresh)
        .await;
    assert_problem(s, &body, 401, "unauthorized");
}

async fn bad_signatures_stale_clocks_and_replays_are_refused_and_change_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("enterprise", "advanced").await;
    let (_, creds) = register(
        &app,
        &admin,
        json!({"name": "Logistics", "kind": "headless", "scopes": ["directory_write"]}),
    )
    .await;
    let create = |number: &str| Some(json!({"name": "Parcel desk", "number": number}));
    let count = || async {
        let (_, list) = app.get("/api/v1/users", &admin).await;
        list["items"].as_array().unwrap().len()
    };

    // Replayed: the same nonce twice is refused the second time.
    let first = Signed::new(&app, Method::POST, "/api/v1/users", create("L-1"));
    let nonce = first.nonce.clone();
    let (s, body) = first.send(&app, &creds).await;
    assert_eq!(s, 201, "{body}");
    let mut again = Signed::new(&app, Method::POST, "/api/v1/users", create("L-2"));
    again.nonce = nonce;
    let (s, body) = again.send(&app, &creds).await;
    assert_problem(s, &body, 401, "nonce_reused");

    // A body changed after signing, a wrong path, a wrong secret.
    let mut tampered = Signed::new(&app, Method::POST, "/api/v1/users", create("L-3"));
    tampered.sent_body = create("L-4");
    let (s, body) = tampered.send(&app, &creds).await;
    assert_problem(s, &body, 401, "bad_signature");
    let mut moved = Signed::new(&app, Method::POST, "/api/v1/users?x=1", create("L-5"));
    moved.sent_path = Some("/api/v1/users");
    let (s, body) = moved.send(&app, &creds).await;
    assert_problem(s, &body, 401, "bad_signature");
    let wrong = Creds {
        key: creds.key.clone(),
        secret: "not-the-secret".into(),
    };
    let (s, body) = Signed::new(&app, Method::POST, "/api/v1/users", create("L-5"))
        .send(&app, &wrong)
        .await;
    assert_problem(s, &body, 401, "bad_signature");

    // A clock more than five minutes off, either way; exactly five is still fine.
    for (skew, status) in [(-301, 401), (301, 401), (300, 201)] {
        let mut late = Signed::new(
            &app,
            Method::POST,
            "/api/v1/users",
            create(&format!("L-{}", 1000 + skew)),
        );
        late.timestamp += skew;
        let (s, body) = late.send(&app, &creds).await;
        assert_eq!(s, status, "skew {skew}: {body}");
        if status == 401 {
            assert_eq!(body["code"], "stale_timestamp", "{body}");
        }
    }
    // The window follows the server's clock, not the test machine's.
    app.clock.advance(SignedDuration::from_mins(10));
    let (s, body) = Signed::new(&app, Method::POST, "/api/v1/users", create("L-6"))
        .send(&app, &creds)
        .await;
    assert_eq!(s, 201, "{body}");

    // Malformed headers and unknown keys.
    let bad_key = Creds {
        key: uuid::Uuid::now_v7().to_string(),
        secret: creds.secret.clone(),
    };
    let (s, body) = Signed::new(&app, Method::GET, "/api/v1/users", None)
        .send(&app, &bad_key)
        .await;
    assert_problem(s, &body, 401, "unauthorized");
    let mut short = Signed::new(&app, Method::GET, "/api/v1/users", None);
    short.nonce = "abc".into();
    let (s, body) = short.send(&app, &creds).await;
    assert_problem(s, &body, 401, "bad_signature");
    let res = app
        .client
        .get(app.url("/api/v1/users"))
        .header("X-App-Key", &creds.key)
        .header("X-Timestamp", "soon")
        .header("X-Nonce", "abcdefgh")
        .header("X-Signature", "00")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // Only the three good requests made users.
    assert_eq!(count().await, 3);
}

async fn an_h5_app_opens_from_the_card_and_its_server_learns_who_opened_it(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;
    let (s, body) = app
        .post(
            "/api/v1/apps",
            &admin,
            json!({"name": "Gate", "kind": "headless", "entry_url": "https://gate.example.edu/"}),
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    let (library, creds) = register(
        &app,
        &admin,
        json!({"name": "Library", "kind": "h5", "scopes": ["launch"],
               "entry_url": "https://library.example.edu/open?from=card"}),
    )
    .await;
    let key = library["app_key"].as_str().unwrap();
    assert!(
        library["launch_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/launch/{key}")),
        "{library}"
    );
    assert_eq!(library["launch_qr_svg"], Value::Null);
    let (menu, menu_creds) = register(
        &app,
        &admin,
        json!({"name": "Menu", "kind": "mini_program", "scopes": ["launch"],
               "entry_url": "https://menu.example.edu/"}),
    )
    .await;
    assert!(menu["launch_qr_svg"].as_str().unwrap().contains("<svg"));
    let (gate, _) = register(&app, &admin, json!({"name": "Gate", "kind": "headless"})).await;
    assert_eq!(gate["launch_url"], Value::Null);

    let person = app.user(&admin, "L-1").await;
    let (s, t) = app
        .post(
            &format!("/api/v1/users/{}/tokens", person["id"].as_str().unwrap()),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let card = t["token"].as_str().unwrap();
    // The card lists the apps it opens: pages, not the headless gate.
    let (s, listed) = app.get("/api/v1/me/apps", card).await;
    assert_eq!(s, 200, "{listed}");
    let mut names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Library", "Menu"]);
    let launch =
        |app_id: &Value| app.post("/api/v1/me/app-launches", card, json!({"app_id": app_id}));
    let (s, body) = launch(&gate["app_key"]).await;
    assert_problem(s, &body, 409, "app_not_launchable");
    let (s, opened) = launch(&library["app_key"]).await;
    assert_eq!(s, 201, "{opened}");
    let url = reqwest::Url::parse(opened["redirect_url"].as_str().unwrap()).unwrap();
    assert_eq!(
        (url.host_str(), url.path()),
        (Some("library.example.edu"), "/open")
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["from"], "card");
    let ticket = query["onecard_ticket"].clone();

    // Only the app it was made for redeems it, once; nothing else reaches the route.
    let redeem = |ticket: &str| {
        Signed::new(
            &app,
            Method::POST,
            "/api/v1/app-launches/redeem",
            Some(json!({ "ticket": ticket })),
        )
    };
    let (s, body) = redeem(&ticket).send(&app, &menu_creds).await;
    assert_problem(s, &body, 410, "launch_ticket_used_or_expired");
    let (s, body) = app
        .post(
            "/api/v1/app-launches/redeem",
            &admin,
            json!({ "ticket": ticket }),
        )
        .await;
    assert_problem(s, &body, 403, "forbidden");
    let (s, who) = redeem(&ticket).send(&app, &creds).await;
    assert_eq!(s, 200, "{who}");
    assert_eq!(
        (&who["user_id"], &who["number"], &who["status"]),
        (&person["id"], &json!("L-1"), &json!("active"))
    );
    let (s, body) = redeem(&ticket).send(&app, &creds).await;
    assert_problem(s, &body, 410, "launch_ticket_used_or_expired");
    // A ticket waits a minute at most; a new one replaces the one before.
    let (_, first) = launch(&menu["app_key"]).await;
    let (_, second) = launch(&menu["app_key"]).await;
    let ticket_of = |v: &Value| {
        reqwest::Url::parse(v["redirect_url"].as_str().unwrap())
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "onecard_ticket")
            .unwrap()
            .1
            .into_owned()
    };
    let (s, _) = redeem(&ticket_of(&first)).send(&app, &menu_creds).await;
    assert_eq!(s, 410);
    app.clock.advance(SignedDuration::from_secs(61));
    let (s, _) = redeem(&ticket_of(&second)).send(&app, &menu_creds).await;
    assert_eq!(s, 410);

    // Another organisation's app is not found.
    let (_, other) = app.tenant("university", "advanced").await;
    let stranger = app.user(&other, "L-2").await;
    let (_, t) = app
        .post(
            &format!("/api/v1/users/{}/tokens", stranger["id"].as_str().unwrap()),
            &other,
            json!({}),
        )
        .await;
    let (s, _) = app
        .post(
            "/api/v1/me/app-launches",
            t["token"].as_str().unwrap(),
            json!({"app_id": library["app_key"]}),
        )
        .await;
    assert_eq!(s, 404);
}
