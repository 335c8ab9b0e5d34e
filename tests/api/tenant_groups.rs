//! Tenant groups (SPEC §1, "group management"): the operator forms a group around a head
//! tenant; the head's super admins see the members, act in each as its super admin with
//! `OneCard-Tenant`, and read the group's income summary.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_with, Engine, TestApp, ROOT_TOKEN};
use crate::money::{code, pay, person, shop_in, top_up};
use crate::on_both_engines;

on_both_engines!(
    a_group_admin_sees_the_members_and_acts_in_them_as_their_super_admin,
    the_group_report_has_a_line_per_member_that_agrees_with_its_own_report,
    the_operator_keeps_groups_whole_and_tenants_editions_hold_at_once,
    a_group_admin_follows_a_members_live_topics_until_it_leaves,
    a_sub_admin_granted_the_group_reaches_members_with_its_own_grants,
);

/// A request as `token`, in the member tenant `member` when given, with an optional
/// `Idempotency-Key`.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    member: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(m) = member {
        req = req.header("OneCard-Tenant", m);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get_in(app: &TestApp, path: &str, token: &str, member: &str) -> (u16, Value) {
    call(
        app,
        reqwest::Method::GET,
        path,
        token,
        Some(member),
        None,
        None,
    )
    .await
}

async fn post_in(
    app: &TestApp,
    path: &str,
    token: &str,
    member: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value) {
    call(
        app,
        reqwest::Method::POST,
        path,
        token,
        Some(member),
        key,
        Some(body),
    )
    .await
}

/// A group named `name` headed by `head` (root).
async fn group(app: &TestApp, name: &str, head: &str) -> String {
    let (s, g) = app
        .post(
            "/api/v1/tenant-groups",
            ROOT_TOKEN,
            json!({"name": name, "head_tenant_id": head}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    assert_eq!(g["head_tenant_id"], head);
    g["id"].as_str().unwrap().to_string()
}

pub(crate) async fn put_member(app: &TestApp, group: &str, tenant: &str) -> (u16, Value) {
    app.send(
        reqwest::Method::PUT,
        &format!("/api/v1/tenant-groups/{group}/tenants/{tenant}"),
        Some(ROOT_TOKEN),
        None,
    )
    .await
}

async fn new_head(app: &TestApp, group: &str, head: &str) -> (u16, Value) {
    app.patch(
        &format!("/api/v1/tenant-groups/{group}"),
        ROOT_TOKEN,
        json!({"head_tenant_id": head}),
    )
    .await
}

pub(crate) async fn edition(app: &TestApp, tenant: &str, edition: &str) -> (u16, Value) {
    app.patch(
        &format!("/api/v1/tenants/{tenant}"),
        ROOT_TOKEN,
        json!({"edition": edition}),
    )
    .await
}

async fn join(app: &TestApp, group: &str, tenant: &str) -> u16 {
    let (s, t) = put_member(app, group, tenant).await;
    assert!(s == 200 || s == 201, "{s} {t}");
    assert_eq!(t["group_id"], group);
    s
}

async fn a_group_admin_sees_the_members_and_acts_in_them_as_their_super_admin(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (district, office) = app.tenant("k12", "advanced").await;
    let (school, school_admin) = app.tenant("k12", "basic_edu").await;
    let (outsider, outsider_admin) = app.tenant("k12", "standard").await;
    let g = group(&app, "East District", &district).await;
    assert_eq!(join(&app, &g, &school).await, 201);
    assert_eq!(join(&app, &g, &school).await, 200, "a member already");

    // The group and its members, as the head's super admin sees them.
    let (s, seen) = app.get("/api/v1/group", &office).await;
    assert_eq!(s, 200, "{seen}");
    assert_eq!(
        (seen["id"].as_str(), seen["name"].as_str()),
        (Some(g.as_str()), Some("East District"))
    );
    let (s, members) = app.get("/api/v1/group/tenants", &office).await;
    assert_eq!(s, 200, "{members}");
    let mut listed: Vec<(String, bool)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["head"].as_bool().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let mut want = vec![(district.clone(), true), (school.clone(), false)];
    want.sort();
    assert_eq!(listed, want);

    // In the school, the office is its super admin, under the school's own edition.
    let (s, t) = get_in(&app, "/api/v1/tenant", &office, &school).await;
    assert_eq!((s, t["id"].as_str()), (200, Some(school.as_str())), "{t}");
    assert_eq!(t["capabilities"], json!(["core"]));
    let (s, body) = get_in(&app, "/api/v1/stats/directory", &office, &school).await;
    assert_problem(s, &body, 403, "edition");
    let (s, user) = post_in(
        &app,
        "/api/v1/users",
        &office,
        &school,
        None,
        json!({"name": "Li Lei", "number": "S-001"}),
    )
    .await;
    assert_eq!(s, 201, "{user}");
    let (s, me) = get_in(&app, "/api/v1/admins/me", &office, &school).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        (me["role"].as_str(), me["group_tenant_id"].as_str()),
        (Some("super_admin"), Some(district.as_str()))
    );
    // The school's own admin sees the user, and who made it.
    let (s, users) = app.get("/api/v1/users", &school_admin).await;
    assert_eq!(
        (s, users["items"][0]["number"].as_str()),
        (200, Some("S-001"))
    );
    let (_, log) = app
        .get("/api/v1/audit?action=user.create", &school_admin)
        .await;
    let actor = log["items"][0]["actor"].as_str().unwrap().to_string();
    assert!(
        actor.starts_with(&format!("group_admin:{district}/")),
        "{log}"
    );
    let (_, log) = app
        .get("/api/v1/audit?action=tenant_group.join", &school_admin)
        .await;
    assert_eq!(log["items"][0]["actor"], "root", "{log}");
    // Nothing of the office's own directory moved.
    let (_, own) = app.get("/api/v1/users", &office).await;
    assert_eq!(own["items"].as_array().unwrap().len(), 0);

    // An Idempotency-Key is the office's own in each tenant: the same key and body in the
    // office and in the school are two departments, and a retry in the school replays.
    let dept = json!({"name": "Grade 1"});
    let (s1, d1) = post_in(
        &app,
        "/api/v1/departments",
        &office,
        &school,
        Some("k-1"),
        dept.clone(),
    )
    .await;
    let (s2, d2) = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/departments",
        &office,
        None,
        Some("k-1"),
        Some(dept.clone()),
    )
    .await;
    let (s3, d3) = post_in(
        &app,
        "/api/v1/departments",
        &office,
        &school,
        Some("k-1"),
        dept,
    )
    .await;
    assert_eq!((s1, s2, s3), (201, 201, 200), "{d1} {d2} {d3}");
    assert_ne!(d1["id"], d2["id"]);
    assert_eq!(d1["id"], d3["id"]);

    // A tenant outside the group, or no tenant id at all, is not found; the member's admin,
    // a tenant heading no group, and a cardholder may not act elsewhere.
    for other in [
        outsider.as_str(),
        "not-a-tenant",
        &uuid::Uuid::now_v7().to_string(),
    ] {
        let (s, body) = get_in(&app, "/api/v1/users", &office, other).await;
        assert_problem(s, &body, 404, "not_found");
    }
    let (s, body) = get_in(&app, "/api/v1/users", &school_admin, &district).await;
    assert_problem(s, &body, 403, "forbidden");
    let (s, body) = get_in(&app, "/api/v1/users", &outsider_admin, &school).await;
    assert_problem(s, &body, 403, "forbidden");
    let (_, holder) = person(&app, &school_admin, "S-002").await;
    let (s, body) = get_in(&app, "/api/v1/me/wallet", &holder, &district).await;
    assert_problem(s, &body, 403, "forbidden");
    // The group's pages are the head's: a member without group management is refused for
    // its edition, one with it that heads no group is refused.
    let (s, body) = app.get("/api/v1/group", &school_admin).await;
    assert_problem(s, &body, 403, "edition");
    let (_, other_head) = app.tenant("enterprise", "flagship").await;
    let (s, body) = app.get("/api/v1/group", &other_head).await;
    assert_problem(s, &body, 403, "forbidden");

    // Once the school leaves, the office no longer reaches it.
    let (s, _) = app
        .delete(
            &format!("/api/v1/tenant-groups/{g}/tenants/{school}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(s, 204);
    let (s, body) = get_in(&app, "/api/v1/users", &office, &school).await;
    assert_problem(s, &body, 404, "not_found");
    let (_, log) = app
        .get("/api/v1/audit?action=tenant_group.leave", &school_admin)
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");
}

async fn the_group_report_has_a_line_per_member_that_agrees_with_its_own_report(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (district, office) = app.tenant("enterprise", "advanced").await;
    let a = shop_in(&app, "standard", 5000).await;
    let b = shop_in(&app, "standard", 5000).await;
    let ta = app.tenant_of(&a.admin).await.to_string();
    let tb = app.tenant_of(&b.admin).await.to_string();
    let g = group(&app, "Group", &district).await;
    join(&app, &g, &ta).await;
    join(&app, &g, &tb).await;
    let (ua, holder) = person(&app, &a.admin, "A1").await;
    top_up(&app, &a, &ua, 1000).await;
    pay(&app, &a, &code(&app, &holder).await, 300).await;
    let (ub, _) = person(&app, &b.admin, "B1").await;
    top_up(&app, &b, &ub, 500).await;
    // The office tops up in B itself: a money request, replayed by its key.
    let path = format!("/api/v1/users/{ub}/wallet/topups");
    let (s1, _) = post_in(
        &app,
        &path,
        &office,
        &tb,
        Some("t-1"),
        json!({"amount": 200}),
    )
    .await;
    let (s2, w) = post_in(
        &app,
        &path,
        &office,
        &tb,
        Some("t-1"),
        json!({"amount": 200}),
    )
    .await;
    assert_eq!((s1, s2), (201, 200), "{w}");
    assert_eq!(w["balance"], 700, "{w}");
    // The same key in another member is another request there.
    let path = format!("/api/v1/users/{ua}/wallet/topups");
    let (s, w) = post_in(
        &app,
        &path,
        &office,
        &ta,
        Some("t-1"),
        json!({"amount": 100}),
    )
    .await;
    assert_eq!((s, &w["balance"]), (201, &json!(800)), "{w}");

    let (s, r) = app
        .get("/api/v1/group/reports/income-summary", &office)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["report"], "group-income-summary");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{r}");
    let line = |t: &str| rows.iter().find(|x| x["tenant_id"] == t).unwrap().clone();
    let (la, lb, ld) = (line(&ta), line(&tb), line(&district));
    assert_eq!(
        (
            &la["top_ups"],
            &la["receivable"],
            &la["received"],
            &la["payments"]
        ),
        (&json!(1100), &json!(300), &json!(300), &json!(1))
    );
    assert_eq!((&lb["top_ups"], &lb["payments"]), (&json!(700), &json!(0)));
    assert_eq!((&ld["top_ups"], &ld["receivable"]), (&json!(0), &json!(0)));
    assert_eq!(la["time_zone"], "Asia/Shanghai");
    assert_eq!(
        (
            &r["totals"]["top_ups"],
            &r["totals"]["receivable"],
            &r["totals"]["payments"]
        ),
        (&json!(1800), &json!(300), &json!(1))
    );
    // Each line is the member's own income summary over the period, summed.
    let (s, own) = app.get("/api/v1/reports/income-summary", &a.admin).await;
    assert_eq!(s, 200, "{own}");
    for (key, total) in own["totals"].as_object().unwrap() {
        assert_eq!(&la[key], total, "{key}");
    }

    // As a sheet: a header and a line per member; bad periods are refused.
    let res = app
        .client
        .get(app.url("/api/v1/group/reports/income-summary?format=csv"))
        .bearer_auth(&office)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(
        csv.starts_with("tenant_id,tenant_name,time_zone,receivable,"),
        "{csv}"
    );
    let (s, body) = app
        .get(
            "/api/v1/group/reports/income-summary?from=2026-02-30",
            &office,
        )
        .await;
    assert_problem(s, &body, 422, "invalid");
    let (s, body) = app
        .get("/api/v1/group/reports/income-summary", &a.admin)
        .await;
    assert_problem(s, &body, 403, "edition");
}

async fn the_operator_keeps_groups_whole_and_tenants_editions_hold_at_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (d1, office) = app.tenant("k12", "advanced").await;
    let (d2, _) = app.tenant("enterprise", "professional").await;
    let (school, _) = app.tenant("k12", "standard").await;
    let (loner, _) = app.tenant("university", "advanced").await;

    // Only the operator forms groups, around a head whose edition has group management.
    let (s, body) = app
        .post(
            "/api/v1/tenant-groups",
            &office,
            json!({"name": "G", "head_tenant_id": d1}),
        )
        .await;
    assert_problem(s, &body, 403, "forbidden");
    let create = |name: &str, head: &str| {
        app.post(
            "/api/v1/tenant-groups",
            ROOT_TOKEN,
            json!({"name": name, "head_tenant_id": head}),
        )
    };
    let (s, body) = create("G", &school).await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(
        (
            body["errors"][0]["field"].as_str(),
            body["errors"][0]["rule"].as_str()
        ),
        (Some("head_tenant_id"), Some("capability"))
    );
    let (s, body) = create("G", &uuid::Uuid::now_v7().to_string()).await;
    assert_problem(s, &body, 422, "invalid");
    let (s, body) = create(" ", &d1).await;
    assert_problem(s, &body, 422, "invalid");
    let g1 = group(&app, "East", &d1).await;
    let g2 = group(&app, "West", &d2).await;
    let (s, body) = create("Again", &d1).await;
    assert_problem(s, &body, 409, "tenant_in_group");

    // A tenant is in one group; unknown tenants and groups are not found.
    let (s, body) = put_member(&app, &g1, &d2).await;
    assert_problem(s, &body, 409, "tenant_in_group");
    let (s, body) = put_member(&app, &g1, &uuid::Uuid::now_v7().to_string()).await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = put_member(&app, &uuid::Uuid::now_v7().to_string(), &school).await;
    assert_problem(s, &body, 404, "not_found");
    join(&app, &g1, &school).await;

    // The head stays while it heads; a group with members stays.
    let (s, body) = app
        .delete(
            &format!("/api/v1/tenant-groups/{g1}/tenants/{d1}"),
            ROOT_TOKEN,
        )
        .await;
    assert_problem(s, &body, 409, "group_head");
    let (s, body) = app
        .delete(&format!("/api/v1/tenant-groups/{g1}"), ROOT_TOKEN)
        .await;
    assert_problem(s, &body, 409, "group_not_empty");
    // A new head must be a member with group management.
    let (s, body) = new_head(&app, &g1, &school).await;
    assert_problem(s, &body, 422, "invalid");
    let (s, body) = new_head(&app, &g1, &loner).await;
    assert_problem(s, &body, 422, "invalid");
    assert_eq!(body["errors"][0]["field"], "head_tenant_id");
    let (s, renamed) = app
        .patch(
            &format!("/api/v1/tenant-groups/{g1}"),
            ROOT_TOKEN,
            json!({"name": "East District"}),
        )
        .await;
    assert_eq!(
        (s, renamed["name"].as_str()),
        (200, Some("East District")),
        "{renamed}"
    );

    // The operator's lists.
    let (s, members) = app
        .get(&format!("/api/v1/tenants?group_id={g1}"), ROOT_TOKEN)
        .await;
    assert_eq!(s, 200, "{members}");
    let mut ids: Vec<&str> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![d1.as_str(), school.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let (s, body) = app.get("/api/v1/tenants?group_id=nope", ROOT_TOKEN).await;
    assert_problem(s, &body, 422, "invalid");
    let (s, t) = app
        .get(&format!("/api/v1/tenants/{school}"), ROOT_TOKEN)
        .await;
    assert_eq!((s, t["group_id"].as_str()), (200, Some(g1.as_str())));
    let (s, body) = app.get("/api/v1/tenants", &office).await;
    assert_problem(s, &body, 403, "forbidden");
    let (s, groups) = app.get("/api/v1/tenant-groups", ROOT_TOKEN).await;
    assert_eq!(
        (s, groups["items"].as_array().unwrap().len()),
        (200, 2),
        "{groups}"
    );

    // An edition without group management takes the office's group away at once, and an
    // upgrade gives it back; basic_edu stays k12's.
    let (s, t) = edition(&app, &d1, "standard").await;
    assert_eq!((s, t["edition"].as_str()), (200, Some("standard")), "{t}");
    let (s, body) = app.get("/api/v1/group", &office).await;
    assert_problem(s, &body, 403, "edition");
    let (s, body) = get_in(&app, "/api/v1/users", &office, &school).await;
    assert_problem(s, &body, 403, "edition");
    let (s, _) = edition(&app, &d1, "advanced").await;
    assert_eq!(s, 200);
    let (s, _) = get_in(&app, "/api/v1/users", &office, &school).await;
    assert_eq!(s, 200);
    let (s, body) = edition(&app, &loner, "basic_edu").await;
    assert_problem(s, &body, 422, "invalid");
    let (_, t) = app
        .get(&format!("/api/v1/tenants/{loner}"), ROOT_TOKEN)
        .await;
    assert_eq!(t["edition"], "advanced");

    // Emptied, a group may go; its head is then in none.
    let (s, _) = app
        .delete(
            &format!("/api/v1/tenant-groups/{g1}/tenants/{school}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .delete(&format!("/api/v1/tenant-groups/{g1}"), ROOT_TOKEN)
        .await;
    assert_eq!(s, 204);
    let (s, body) = app
        .get(&format!("/api/v1/tenant-groups/{g1}"), ROOT_TOKEN)
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (_, t) = app.get("/api/v1/tenant", &office).await;
    assert_eq!(t["group_id"], Value::Null);
    let (s, body) = app.get("/api/v1/group", &office).await;
    assert_problem(s, &body, 403, "forbidden");
    let (_, log) = app
        .get("/api/v1/audit?action=tenant_group.delete", ROOT_TOKEN)
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");
    let _ = g2;
}

async fn a_group_admin_follows_a_members_live_topics_until_it_leaves(engine: Engine) {
    let Some(app) = spawn_with(engine, |c| {
        c.ws_revalidate = std::time::Duration::from_millis(200)
    })
    .await
    else {
        return;
    };
    let (district, office) = app.tenant("k12", "advanced").await;
    let school = shop_in(&app, "standard", 5000).await;
    let ts = app.tenant_of(&school.admin).await.to_string();
    let (outsider, _) = app.tenant("k12", "standard").await;
    let g = group(&app, "East District", &district).await;
    join(&app, &g, &ts).await;

    // Outside the group, or not a tenant: the handshake is refused as REST would be.
    for other in [outsider.as_str(), "nope"] {
        let refused = crate::realtime::Ws::connect_in(&app.base, &office, other).await;
        assert_eq!(refused.err(), Some(404), "{other}");
    }
    // In the school, the office hears its dashboard topic.
    let mut ws = crate::realtime::Ws::connect_in(&app.base, &office, &ts)
        .await
        .expect("a member's topics");
    let frames = ws.subscribe("tenant", None).await;
    assert_eq!(frames.last().unwrap()["op"], "subscribed", "{frames:?}");
    let (user, holder) = person(&app, &school.admin, "S-1").await;
    top_up(&app, &school, &user, 1000).await;
    let paid = pay(&app, &school, &code(&app, &holder).await, 250).await;
    loop {
        let e = ws.next_event().await;
        if e["type"] == "payment.succeeded" {
            assert_eq!(e["data"]["id"], paid["id"], "{e}");
            break;
        }
    }
    // Once the school leaves the group, the connection ends at the next check.
    let (s, _) = app
        .delete(
            &format!("/api/v1/tenant-groups/{g}/tenants/{ts}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(s, 204);
    let (_, reason) = ws.closed(std::time::Duration::from_secs(5)).await;
    assert_eq!(reason, "no longer acting in that tenant");
}

async fn a_sub_admin_granted_the_group_reaches_members_with_its_own_grants(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (district, office) = app.tenant("k12", "advanced").await;
    let (school, school_admin) = app.tenant("k12", "standard").await;
    let g = group(&app, "East District", &district).await;
    assert_eq!(join(&app, &g, &school).await, 201);
    app.user(&school_admin, "S-1").await;
    // The bureau's finance clerk: the group to view, payments to view.
    let finance = crate::groups::group(
        &app,
        &office,
        json!({"name": "District finance", "features": {"group": "view", "payments": "view"}}),
    )
    .await;
    let clerk =
        crate::groups::sub_admin(&app, &office, &app.user(&office, "C-1").await, &finance).await;
    let payroll = crate::groups::group(
        &app,
        &office,
        json!({"name": "Office payments", "features": {"payments": "manage"}}),
    )
    .await;
    let plain =
        crate::groups::sub_admin(&app, &office, &app.user(&office, "C-2").await, &payroll).await;

    // The clerk sees the group, its members and its money.
    for path in ["/api/v1/group", "/api/v1/group/tenants"] {
        let (s, body) = app.get(path, &clerk).await;
        assert_eq!(s, 200, "{path}: {body}");
    }
    let (s, report) = app
        .get("/api/v1/group/reports/income-summary", &clerk)
        .await;
    assert_eq!(s, 200, "{report}");
    // A sub-admin of the bureau without the group grant reaches none of it.
    let (s, body) = app.get("/api/v1/group", &plain).await;
    assert_problem(s, &body, 403, "not_granted");
    let (s, body) = get_in(&app, "/api/v1/merchants", &plain, &school).await;
    assert_problem(s, &body, 403, "forbidden");

    // In the school the clerk has their own grants: money to read, nobody's records (their
    // departments are the bureau's), nothing to change, nothing of a super admin's.
    let (s, body) = get_in(&app, "/api/v1/merchants", &clerk, &school).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = get_in(&app, "/api/v1/reports/income-summary", &clerk, &school).await;
    assert_eq!(s, 200, "{body}");
    let (s, users) = get_in(&app, "/api/v1/users", &clerk, &school).await;
    assert_eq!((s, &users["items"]), (200, &json!([])), "{users}");
    let (s, body) = post_in(
        &app,
        "/api/v1/merchants",
        &clerk,
        &school,
        None,
        json!({"name": "Canteen"}),
    )
    .await;
    assert_problem(s, &body, 403, "not_granted");
    let (s, body) = get_in(&app, "/api/v1/audit", &clerk, &school).await;
    assert_problem(s, &body, 403, "forbidden");
    let (s, body) = app
        .delete(&format!("/api/v1/group/people/{g}/links/{school}"), &clerk)
        .await;
    assert_problem(s, &body, 403, "not_granted");

    // Granted payments to manage, the clerk opens a canteen in the school, audited there as
    // the group's admin; without payments, the group's money is closed.
    let grant = |features: Value| {
        let (app, office) = (&app, &office);
        let path = format!("/api/v1/admin-groups/{}", finance["id"].as_str().unwrap());
        async move {
            let (s, body) = app
                .patch(&path, office, json!({ "features": features }))
                .await;
            assert_eq!(s, 200, "{body}");
        }
    };
    grant(json!({"group": "view", "payments": "manage"})).await;
    let (s, m) = post_in(
        &app,
        "/api/v1/merchants",
        &clerk,
        &school,
        None,
        json!({"name": "Canteen"}),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    let (_, me) = app.get("/api/v1/admins/me", &clerk).await;
    let (s, log) = app
        .get("/api/v1/audit?action=merchant.create", &school_admin)
        .await;
    assert_eq!(s, 200, "{log}");
    assert_eq!(
        log["items"][0]["actor"],
        format!("group_admin:{district}/{}", me["id"].as_str().unwrap())
    );
    grant(json!({"group": "view"})).await;
    let (s, body) = app
        .get("/api/v1/group/reports/income-summary", &clerk)
        .await;
    assert_problem(s, &body, 403, "not_granted");
}
