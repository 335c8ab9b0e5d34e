//! The edge: auth failures, problem+json, limits, idempotency, rate limits, probes,
//! metrics and the OpenAPI document.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, redis_url, spawn_app, spawn_with, Engine};
use crate::on_both_engines;

on_both_engines!(an_idempotency_key_replays_the_first_answer_and_refuses_another_body);

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let post = |key: &'static str, body: Value| {
        let req = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"name": "Once", "number": "I-1"});
    let (s1, first) = post("k-1", body.clone()).await;
    let (s2, again) = post("k-1", body.clone()).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first, again, "the same body, byte for byte");
    let (s, conflict) = post("k-1", json!({"name": "Other", "number": "I-2"})).await;
    assert_problem(s, &conflict, 409, "idempotency_conflict");
    let (_, list) = app.get("/api/v1/users", &admin).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "created exactly once"
    );

    // A refused request is replayed as refused, not re-run.
    let (s, dup) = post("k-2", body.clone()).await;
    assert_problem(s, &dup, 409, "number_taken");
    let (s, dup_again) = post("k-2", body).await;
    assert_eq!((s, dup_again), (409, dup));

    let (s, bad) = app
        .client
        .post(app.url("/api/v1/tags"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "x".repeat(65))
        .json(&json!({"name": "t"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["code"],
        "invalid_idempotency_key"
    );
}

#[actix_web::test]
async fn requests_without_a_valid_bearer_token_get_401_problem_json() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let mut req = app.client.get(app.url("/api/v1/tenant"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert_problem(401, &body, 401, "unauthorized");
    }
}

#[actix_web::test]
async fn malformed_oversized_and_mistyped_bodies_get_distinct_problems() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let raw = |body: &'static [u8], content_type: &'static str| {
        let req = app
            .client
            .post(app.url("/api/v1/tags"))
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (s, body) = raw(b"{\"name\":", "application/json").await;
    assert_problem(s, &body, 400, "malformed_json");
    let (s, body) = raw(b"{\"name\": 7}", "application/json").await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(
        (
            body["errors"][0]["field"].as_str(),
            body["errors"][0]["rule"].as_str()
        ),
        (Some("name"), Some("type"))
    );
    let (s, body) = raw(b"{\"nam\": \"x\"}", "application/json").await;
    assert_problem(s, &body, 422, "invalid");
    let (s, body) = raw(b"name=x", "application/x-www-form-urlencoded").await;
    assert_problem(s, &body, 415, "unsupported_media_type");
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let res = app
        .client
        .post(app.url("/api/v1/tags"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    let (s, body) = app.get("/api/v1/no-such-thing", &admin).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app.get("/api/v1/users/not-an-id", &admin).await;
    assert_problem(s, &body, 404, "not_found");
    let (_, tags) = app.get("/api/v1/tags", &admin).await;
    assert_eq!(
        tags["items"].as_array().unwrap().len(),
        0,
        "no refused request wrote anything"
    );
}

#[actix_web::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() {
    let Some(app) = spawn_with(Engine::Sqlite, |c| {
        c.rate_limit_per_s = 1;
        c.rate_limit_burst = 3;
    })
    .await
    else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = app
            .client
            .get(app.url("/api/v1/tenant"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
            let body: Value = res.json().await.unwrap();
            assert_problem(429, &body, 429, "rate_limited");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Another token has its own budget; probes are never limited.
    let (_, other) = app.tenant("university", "standard").await;
    assert_eq!(app.get("/api/v1/tenant", &other).await.0, 200);
    for _ in 0..5 {
        assert_eq!(
            app.client
                .get(app.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[actix_web::test]
async fn probes_report_the_store_and_bus_and_metrics_are_labelled_by_route() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (s, ready) = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["store"], "sqlite");
    assert_eq!(
        ready["bus"],
        if redis_url().is_some() {
            "redis"
        } else {
            "in_process"
        }
    );
    assert_eq!(ready["bus_ok"], true);

    let user = app.user(&admin, "M-1").await;
    app.get(
        &format!("/api/v1/users/{}", user["id"].as_str().unwrap()),
        &admin,
    )
    .await;
    // A made-up method is counted as OTHER: a client cannot add a series per method.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let (s, _) = app.send(brew, "/api/v1/users", None, None).await;
    assert!(s >= 400, "{s}");
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("http_requests_total{method=\"OTHER\""),
        "{text}"
    );
    assert!(!text.contains("BREW"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    for name in [
        "ledger_batches_total",
        "ledger_commits_total",
        "ledger_batch_write_microseconds_total",
        "ledger_entries_sealed_total",
        "arrears_written_off_wallets_total",
        "wallet_actors_live",
    ] {
        assert!(
            text.contains(&format!("\n{name} ")),
            "{name} missing: {text}"
        );
    }
    assert!(
        !text.contains(user["id"].as_str().unwrap()),
        "no raw ids as labels"
    );
}

#[actix_web::test]
async fn the_openapi_document_lists_every_route_and_the_docs_page_works_offline() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (s, doc) = app
        .send(reqwest::Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/tenants",
        "/api/v1/tenant",
        "/api/v1/admins",
        "/api/v1/admins/bind",
        "/api/v1/admins/{id}",
        "/api/v1/admins/me",
        "/api/v1/admin-groups",
        "/api/v1/admin-groups/{id}",
        "/api/v1/apps",
        "/api/v1/apps/{id}",
        "/api/v1/apps/{id}/secret",
        "/api/v1/departments",
        "/api/v1/tags",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/users/batch-update",
        "/api/v1/users/import",
        "/api/v1/users/import/template",
        "/api/v1/users/{id}/tokens",
        "/api/v1/audit",
        "/api/v1/stats/directory",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // A group's grants are documented down to the feature names and levels.
    let schemas = &doc["components"]["schemas"];
    let features =
        schemas["CreateAdminGroup"]["properties"]["features"]["propertyNames"]["enum"].to_string();
    assert!(
        features.contains("payments") && features.contains("api_config"),
        "{features}"
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["app_signature"]["name"],
        "X-App-Key"
    );
    let page = app
        .client
        .get(app.url("/api/v1/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("swagger"),
        "Swagger UI is served from the binary"
    );
    let init = app
        .client
        .get(app.url("/api/v1/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    assert!(
        init.text()
            .await
            .unwrap()
            .contains("\"/api/v1/openapi.json\""),
        "the page reads the served document"
    );
    onecard::startup::install_tls();
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/api/v1/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/api/v1/docs/");
}

/// The live pages and their scripts come from the binary, under a policy that allows no
/// inline script and nothing from elsewhere.
#[actix_web::test]
async fn live_pages_are_served_with_a_strict_content_security_policy() {
    let Some(app) = crate::helpers::spawn_app(crate::helpers::Engine::Sqlite).await else {
        return;
    };
    for (path, kind) in [
        ("/screen", "text/html"),
        ("/me", "text/html"),
        ("/dashboard", "text/html"),
        ("/event-screen", "text/html"),
        ("/assets/event.js", "text/javascript"),
        ("/assets/live.js", "text/javascript"),
        ("/assets/screen.js", "text/javascript"),
        ("/assets/me.js", "text/javascript"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/pages.css", "text/css"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let header = |h: &str| {
            res.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("http"), "nothing from elsewhere: {csp}");
        let body = res.text().await.unwrap();
        if kind == "text/html" {
            assert!(!body.contains("<script>"), "{path} has an inline script");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{path}"
            );
        }
    }
}
