//! The tenant's own front end (SPEC §1 "dedicated mini-program"): its address carried by
//! every link made for it, its look given to pages opened there, one organisation per
//! address, its logo checked by its bytes, and all of it out of force below the edition.

use serde_json::{json, Value};

use crate::cards::{approved_card, identity_type, jpeg, png, put_image};
use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp, ROOT_TOKEN};
use crate::on_both_engines;
use crate::reports::merchant;
use crate::tenant_groups::edition;

on_both_engines!(a_tenants_own_front_end_carries_its_links_and_its_look);

async fn put_front_end(app: &TestApp, admin: &str, body: Value) -> (u16, Value) {
    app.send(
        reqwest::Method::PUT,
        "/api/v1/tenant/front-end",
        Some(admin),
        Some(body),
    )
    .await
}

/// The platform operator serves `tenant`'s pages at `url` (or, null, no longer).
async fn put_address(app: &TestApp, tenant: &str, url: Value) -> (u16, Value) {
    app.send(
        reqwest::Method::PUT,
        &format!("/api/v1/tenants/{tenant}/front-end/address"),
        Some(ROOT_TOKEN),
        Some(json!({ "public_url": url })),
    )
    .await
}

async fn put_logo(app: &TestApp, admin: &str, bytes: Vec<u8>) -> (u16, Value) {
    put_image(app, admin, "/api/v1/tenant/front-end/logo", bytes).await
}

/// `GET /brand` as a page opened at `host` asks it.
async fn brand_at(app: &TestApp, host: &str) -> Value {
    let res = app
        .client
        .get(app.url("/api/v1/brand"))
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The addresses every kind of link made for the tenant starts with: its unified claim
/// link, an approved card's cover on its claim page, a collection code's, a new admin's
/// binding link and an H5 app's own link.
async fn links(app: &TestApp, admin: &str, tenant: &str, card: &Value, shop: &str) -> Vec<String> {
    let (s, claim) = app.get("/api/v1/claim-link", admin).await;
    assert_eq!(s, 200, "{claim}");
    let (s, offer) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/claim/{tenant}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{offer}");
    let cover = offer["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == card["id"])
        .expect("the approved card is offered")["cover_url"]
        .clone();
    let (s, code) = app
        .post(
            &format!("/api/v1/merchants/{shop}/terminals"),
            admin,
            json!({"name": "Window", "kind": "collection", "mode": "pay"}),
        )
        .await;
    assert_eq!(s, 201, "{code}");
    let clerk = app.user(admin, &format!("C-{}", rand_suffix())).await;
    let finance = group(app, admin, json!({"name": format!("F {}", rand_suffix())})).await;
    let (s, binding) = app
        .post(
            "/api/v1/admins",
            admin,
            json!({"user_id": clerk["id"], "role": "sub_admin", "group_id": finance["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{binding}");
    let (s, h5) = app
        .post(
            "/api/v1/apps",
            admin,
            json!({"name": format!("Menu {}", rand_suffix()), "kind": "h5"}),
        )
        .await;
    assert_eq!(s, 201, "{h5}");
    [
        &claim["url"],
        &cover,
        &code["collection"]["pay_url"],
        &binding["binding_url"],
        &h5["launch_url"],
    ]
    .iter()
    .map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("a link: {v}"))
            .to_string()
    })
    .collect()
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

fn all_start_with(links: &[String], base: &str) {
    for link in links {
        assert!(
            link.starts_with(&format!("{base}/")),
            "{link} is not at {base}"
        );
    }
}

async fn a_tenants_own_front_end_carries_its_links_and_its_look(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let platform = app.base.clone();
    let platform_host = platform.trim_start_matches("http://").to_string();

    // Below the professional edition it is refused, by name; reading it is not.
    let (advanced_id, advanced) = app.tenant("university", "advanced").await;
    let (s, p) = put_front_end(&app, &advanced, json!({"title": "Ours"})).await;
    assert_problem(s, &p, 403, "edition");
    assert_eq!(p["capability"], "dedicated_mini_program", "{p}");
    let (s, p) = put_address(&app, &advanced_id, json!("https://card.adv.edu")).await;
    assert_problem(s, &p, 403, "edition");
    let (s, p) = put_logo(&app, &advanced, png(128, 128)).await;
    assert_problem(s, &p, 403, "edition");
    let (s, f) = app.get("/api/v1/tenant/front-end", &advanced).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["in_force"], false, "{f}");
    assert_eq!(f["public_url"], Value::Null, "{f}");

    let (a_id, a) = app.tenant("university", "professional").await;
    let (b_id, b) = app.tenant("university", "professional").await;
    let staff = identity_type(&app, &a, "staff", "phone").await;
    let card = approved_card(&app, &a, &[&staff], "no_follow").await;
    let shop = merchant(&app, &a, json!({"name": "Noodles"})).await;
    let b_staff = identity_type(&app, &b, "staff", "phone").await;
    let b_card = approved_card(&app, &b, &[&b_staff], "no_follow").await;
    let b_shop = merchant(&app, &b, json!({"name": "Noodles"})).await;

    // Until it sets an address, its links carry the platform's, and pages look the
    // platform's.
    all_start_with(&links(&app, &a, &a_id, &card, &shop).await, &platform);
    let brand = brand_at(&app, &platform_host).await;
    assert_eq!(
        brand,
        json!({"tenant_id": null, "name": "OneCard", "accent_color": null,
                             "logo_url": null})
    );

    // Only a super admin sets its look, and only the platform operator its address.
    let clerk = app.user(&a, "CLERK-1").await;
    let office = group(
        &app,
        &a,
        json!({"name": "Office", "features": {"cards": "manage", "payments": "manage",
               "notifications": "manage", "identity": "manage", "api_config": "manage"}}),
    )
    .await;
    let clerk = sub_admin(&app, &a, &clerk, &office).await;
    let (s, p) = put_front_end(&app, &clerk, json!({"title": "Ours"})).await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = app
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/tenants/{a_id}/front-end/address"),
            Some(&a),
            Some(json!({"public_url": "https://card.a.edu"})),
        )
        .await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = put_front_end(&app, &a, json!({"public_url": "https://card.a.edu"})).await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["rule"], "unknown_field", "{p}");
    let (s, _) = put_address(&app, &uuid::Uuid::now_v7().to_string(), json!(null)).await;
    assert_eq!(s, 404);

    // Bad input names each field and rule, and changes nothing.
    let (s, p) = put_front_end(
        &app,
        &a,
        json!({"title": "A title far longer than twenty", "accent_color": "red"}),
    )
    .await;
    assert_problem(s, &p, 422, "invalid");
    let rules: Vec<(&str, &str)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [("title", "max_length"), ("accent_color", "hex_color")],
        "{p}"
    );
    for (url, rule) in [
        ("http://card.a.edu", "https"),
        ("https://card.a.edu/claim", "origin_only"),
        ("https://card.a.edu?x=1", "origin_only"),
        ("card.a.edu", "url"),
        (
            &format!("https://{platform_host}") as &str,
            "platform_address",
        ),
    ] {
        let (s, p) = put_address(&app, &a_id, json!(url)).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["rule"], rule, "{url}: {p}");
    }
    let (s, p) = put_front_end(&app, &a, json!({"title": "X", "logo": 1})).await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["rule"], "unknown_field", "{p}");
    let (_, f) = app.get("/api/v1/tenant/front-end", &a).await;
    assert_eq!(
        (f["public_url"].clone(), f["updated_at"].clone()),
        (Value::Null, Value::Null)
    );

    // Its name and colour, then its address, kept in their plain form.
    let (s, f) = put_front_end(
        &app,
        &a,
        json!({"title": "A Card", "accent_color": "#8A1538"}),
    )
    .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["public_url"], Value::Null, "{f}");
    all_start_with(&links(&app, &a, &a_id, &card, &shop).await, &platform);
    let (s, f) = put_address(&app, &a_id, json!("https://Card.A.edu/")).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["title"], "A Card", "the look stays: {f}");
    assert_eq!(f["public_url"], "https://card.a.edu", "{f}");
    assert_eq!(f["accent_color"], "#8a1538", "{f}");
    assert_eq!(f["in_force"], true, "{f}");
    let (_, read) = app.get("/api/v1/tenant/front-end", &a).await;
    assert_eq!(read, f);

    // Every link made for it now carries its address; the other school's do not.
    all_start_with(
        &links(&app, &a, &a_id, &card, &shop).await,
        "https://card.a.edu",
    );
    all_start_with(&links(&app, &b, &b_id, &b_card, &b_shop).await, &platform);

    // A page opened at its address takes its look; anywhere else, the platform's.
    let brand = brand_at(&app, "card.a.edu").await;
    assert_eq!(
        brand,
        json!({"tenant_id": a_id, "name": "A Card", "accent_color": "#8a1538",
                             "logo_url": null})
    );
    assert_eq!(
        brand_at(&app, "CARD.A.EDU").await["tenant_id"],
        a_id.as_str()
    );
    assert_eq!(brand_at(&app, "card.b.edu").await["tenant_id"], Value::Null);
    // A mini-program of the school's own names it, wherever it asks.
    let (s, by_id) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/brand?tenant={a_id}"),
            None,
            None,
        )
        .await;
    assert_eq!((s, by_id), (200, brand.clone()));
    let (s, p) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/brand?tenant=not-an-id",
            None,
            None,
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, p) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/brand?tenant={}", uuid::Uuid::now_v7()),
            None,
            None,
        )
        .await;
    assert_problem(s, &p, 404, "not_found");
    let advanced_id = app.tenant_of(&advanced).await.to_string();
    let (s, theirs) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/brand?tenant={advanced_id}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, theirs["tenant_id"].clone()),
        (200, Value::Null),
        "below the edition"
    );

    // An address is one organisation's.
    let (s, p) = put_address(&app, &b_id, json!("https://card.A.edu")).await;
    assert_problem(s, &p, 409, "address_taken");
    let (_, f) = app.get("/api/v1/tenant/front-end", &b).await;
    assert_eq!(f["public_url"], Value::Null, "{f}");

    // The logo is judged by its bytes.
    for (bytes, status, rule) in [
        (png(200, 100), 422, Some("square")),
        (png(32, 32), 422, Some("dimensions")),
        (png(1200, 1200), 422, Some("dimensions")),
        (jpeg(100, 120), 422, Some("square")),
        (b"GIF89a not a png at all".to_vec(), 422, Some("format")),
        (vec![0u8; 256 * 1024 + 1], 413, None),
    ] {
        let (s, p) = put_logo(&app, &a, bytes).await;
        assert_eq!(s, status, "{p}");
        if let Some(rule) = rule {
            assert_problem(s, &p, 422, "logo_invalid");
            assert_eq!(p["errors"][0]["rule"], rule, "{p}");
        }
    }
    assert_eq!(brand_at(&app, "card.a.edu").await["logo_url"], Value::Null);
    let logo = png(128, 128);
    let (s, f) = put_logo(&app, &a, logo.clone()).await;
    assert_eq!(s, 200, "{f}");
    let logo_url = f["logo_url"].as_str().unwrap().to_string();
    assert!(logo_url.starts_with("/api/v1/logos/"), "{f}");
    assert_eq!(
        f["public_url"], "https://card.a.edu",
        "the address stays: {f}"
    );
    let res = app.client.get(app.url(&logo_url)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().to_vec(), logo);
    assert_eq!(
        brand_at(&app, "card.a.edu").await["logo_url"],
        logo_url.as_str()
    );
    // A new address keeps the logo and the look; a look cleared keeps the address.
    let (s, f) = put_address(&app, &a_id, json!("https://card.a.edu:8443")).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        (f["logo_url"].as_str(), f["title"].as_str()),
        (Some(logo_url.as_str()), Some("A Card"))
    );
    assert_eq!(brand_at(&app, "card.a.edu").await["tenant_id"], Value::Null);
    let (s, f) = put_front_end(&app, &a, json!({})).await;
    assert_eq!(
        (s, f["public_url"].as_str()),
        (200, Some("https://card.a.edu:8443")),
        "{f}"
    );
    let brand = brand_at(&app, "card.a.edu:8443").await;
    assert_eq!(
        (
            brand["tenant_id"].as_str(),
            brand["name"].as_str(),
            brand["accent_color"].clone()
        ),
        (Some(a_id.as_str()), Some("Test School"), Value::Null)
    );
    all_start_with(
        &links(&app, &a, &a_id, &card, &shop).await,
        "https://card.a.edu:8443",
    );

    // The old address is free again.
    let (s, f) = put_address(&app, &b_id, json!("https://card.a.edu")).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        brand_at(&app, "card.a.edu").await["tenant_id"],
        b_id.as_str()
    );

    // An edition moved down keeps the settings but puts them out of force: links carry
    // the platform's address again, and the address the platform's look.
    let (s, t) = edition(&app, &a_id, "advanced").await;
    assert_eq!(s, 200, "{t}");
    let (_, f) = app.get("/api/v1/tenant/front-end", &a).await;
    assert_eq!(
        (f["in_force"].clone(), f["public_url"].clone()),
        (json!(false), json!("https://card.a.edu:8443"))
    );
    all_start_with(&links(&app, &a, &a_id, &card, &shop).await, &platform);
    assert_eq!(
        brand_at(&app, "card.a.edu:8443").await["tenant_id"],
        Value::Null
    );
    // It may still take its logo away.
    let (s, _) = app.delete("/api/v1/tenant/front-end/logo", &a).await;
    assert_eq!(s, 204);
    let (s, _) = edition(&app, &a_id, "professional").await;
    assert_eq!(s, 200);
    let brand = brand_at(&app, "card.a.edu:8443").await;
    assert_eq!(
        (brand["tenant_id"].as_str(), brand["logo_url"].clone()),
        (Some(a_id.as_str()), Value::Null)
    );
    let res = app.client.get(app.url(&logo_url)).send().await.unwrap();
    assert_eq!(res.status(), 404, "a logo no front end has is gone");

    // Clearing the address brings the platform's back.
    let (s, f) = put_address(&app, &a_id, json!(null)).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["public_url"], Value::Null, "{f}");
    all_start_with(&links(&app, &a, &a_id, &card, &shop).await, &platform);

    // Each change is in the audit log, by whom and what.
    let (s, audit) = app
        .get("/api/v1/audit?action=tenant.front_end&limit=10", &a)
        .await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    // The operator's changes of its address are in its log too.
    let (s, audit) = app
        .get("/api/v1/audit?action=tenant.front_end_address&limit=10", &a)
        .await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["items"].as_array().unwrap().len(), 3, "{audit}");
    assert_eq!(audit["items"][0]["actor"], "root", "{audit}");
    let (s, audit) = app
        .get("/api/v1/audit?action=tenant.logo&limit=10", &a)
        .await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
}
