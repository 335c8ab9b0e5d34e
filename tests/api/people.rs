//! Global identity (SPEC §1): a person links their records in member tenants of one group
//! by proving both cards, sees them together, opens a session in either, and unlinks;
//! the group's admins read and unlink; a tenant leaving the group or a deleted record
//! takes its link with it.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp, ROOT_TOKEN};
use crate::on_both_engines;

on_both_engines!(
    a_person_links_records_in_member_tenants_by_proving_both_cards,
    linked_records_open_sessions_and_leave_with_their_tenant,
    concurrent_links_give_a_person_one_record_per_tenant,
);

struct Member {
    id: String,
    admin: String,
}

/// A tenant of `edition` in `group` (none when `None`).
async fn member(app: &TestApp, edition: &str, group: Option<&str>) -> Member {
    let (id, admin) = app.tenant("k12", edition).await;
    if let Some(g) = group {
        let (s, t) = crate::tenant_groups::put_member(app, g, &id).await;
        assert_eq!(s, 201, "{t}");
    }
    Member { id, admin }
}

/// A group headed by a new advanced tenant: (group id, head).
async fn district(app: &TestApp) -> (String, Member) {
    let head = member(app, "advanced", None).await;
    let (s, g) = app
        .post(
            "/api/v1/tenant-groups",
            ROOT_TOKEN,
            json!({"name": "East District", "head_tenant_id": head.id}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    (g["id"].as_str().unwrap().to_string(), head)
}

/// A user of the tenant with a cardholder token: (user id, token).
async fn record(
    app: &TestApp,
    t: &Member,
    number: &str,
    id_number: Option<&str>,
) -> (String, String) {
    let mut body = json!({"name": "Wang Fang", "number": number});
    if let Some(n) = id_number {
        body["id_number"] = json!(n);
    }
    let (s, user) = app.post("/api/v1/users", &t.admin, body).await;
    assert_eq!(s, 201, "{user}");
    let id = user["id"].as_str().unwrap().to_string();
    let (s, tok) = app
        .post(&format!("/api/v1/users/{id}/tokens"), &t.admin, json!({}))
        .await;
    assert_eq!(s, 201, "{tok}");
    (id, tok["token"].as_str().unwrap().to_string())
}

/// The operator takes the tenant out of the group.
async fn leave(app: &TestApp, group: &str, t: &Member) {
    let (s, body) = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenant-groups/{group}/tenants/{}", t.id),
            Some(ROOT_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 204, "{body}");
}

async fn link_code(app: &TestApp, token: &str) -> String {
    let (s, c) = app
        .post("/api/v1/me/identity/link-codes", token, json!({}))
        .await;
    assert_eq!(s, 201, "{c}");
    c["code"].as_str().unwrap().to_string()
}

async fn redeem(app: &TestApp, token: &str, code: &str) -> (u16, Value) {
    app.post("/api/v1/me/identity/links", token, json!({"code": code}))
        .await
}

/// Whether the record may link (its tenant in a group, with global identity).
async fn linkable(app: &TestApp, token: &str) -> bool {
    let (s, me) = app.get("/api/v1/me/identity", token).await;
    assert_eq!(s, 200, "{me}");
    me["linkable"].as_bool().unwrap()
}

async fn identity(app: &TestApp, token: &str) -> Value {
    let (s, me) = app.get("/api/v1/me/identity", token).await;
    assert_eq!(s, 200, "{me}");
    me["person"].clone()
}

/// The person's records as (tenant, user) pairs, sorted.
fn records(person: &Value) -> Vec<(String, String)> {
    let mut r: Vec<_> = person["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["tenant_id"].as_str().unwrap().to_string(),
                l["user_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    r.sort();
    r
}

fn pairs(of: &[(&Member, &str)]) -> Vec<(String, String)> {
    let mut r: Vec<_> = of
        .iter()
        .map(|(t, u)| (t.id.clone(), u.to_string()))
        .collect();
    r.sort();
    r
}

async fn audit(app: &TestApp, t: &Member, action: &str) -> Vec<Value> {
    let (s, a) = app
        .get(&format!("/api/v1/audit?action={action}"), &t.admin)
        .await;
    assert_eq!(s, 200, "{a}");
    a["items"].as_array().unwrap().clone()
}

const ID: &str = "11010519491231002X";

async fn a_person_links_records_in_member_tenants_by_proving_both_cards(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (group, head) = district(&app).await;
    let a = member(&app, "advanced", Some(&group)).await;
    let b = member(&app, "advanced", Some(&group)).await;
    let c = member(&app, "advanced", Some(&group)).await;
    let outside = member(&app, "advanced", None).await;
    let (ua, ta) = record(&app, &a, "T1", Some(ID)).await;
    let (ub, tb) = record(&app, &b, "T7", Some(ID)).await;
    let (_, tx) = record(&app, &outside, "T1", Some(ID)).await;
    assert_eq!(identity(&app, &ta).await, Value::Null);
    assert!(linkable(&app, &ta).await);
    assert!(!linkable(&app, &tx).await, "a tenant of no group");

    // The code proves the first card; the redeeming token proves the second.
    let code = link_code(&app, &ta).await;
    let (s, e) = redeem(&app, &ta, &code).await;
    assert_problem(s, &e, 409, "link_not_allowed");
    let (s, e) = redeem(&app, &tx, &code).await;
    assert_problem(s, &e, 409, "link_not_allowed");
    let (s, e) = redeem(&app, &tb, "not-a-code").await;
    assert_problem(s, &e, 410, "link_code_used_or_expired");
    let (s, e) = redeem(&app, &tb, "").await;
    assert_problem(s, &e, 422, "invalid");
    // Refusals left the code unspent.
    let (s, person) = redeem(&app, &tb, &code).await;
    assert_eq!(s, 201, "{person}");
    assert_eq!(records(&person), pairs(&[(&a, &ua), (&b, &ub)]));
    assert_eq!(person["group_id"], group);
    let (s, e) = redeem(&app, &tb, &code).await;
    assert_problem(s, &e, 410, "link_code_used_or_expired");
    assert_eq!(identity(&app, &ta).await, person);
    // A second code of one card replaces the first; linking again changes nothing.
    let stale = link_code(&app, &tb).await;
    let fresh = link_code(&app, &tb).await;
    let (s, e) = redeem(&app, &ta, &stale).await;
    assert_problem(s, &e, 410, "link_code_used_or_expired");
    let (s, same) = redeem(&app, &ta, &fresh).await;
    assert_eq!((s, &same), (200, &person));
    // Each tenant's log has the act, by its own record, naming the person.
    for (t, u) in [(&a, &ua), (&b, &ub)] {
        let log = audit(&app, t, "identity.link").await;
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0]["target_id"], person["id"]);
        assert_eq!(log[0]["actor"], format!("user:{u}"));
    }

    // Different ID-document numbers are not one person; no number is no objection; a
    // person holds one record per tenant.
    let (_, tc_other) = record(&app, &c, "T2", Some("110105199003071239")).await;
    let (uc, tc) = record(&app, &c, "T3", None).await;
    let (_, tc_second) = record(&app, &c, "T4", None).await;
    let code = link_code(&app, &ta).await;
    let (s, e) = redeem(&app, &tc_other, &code).await;
    assert_problem(s, &e, 409, "identity_mismatch");
    let (s, three) = redeem(&app, &tc, &code).await;
    assert_eq!(s, 201, "{three}");
    assert_eq!(three["id"], person["id"]);
    assert_eq!(records(&three), pairs(&[(&a, &ua), (&b, &ub), (&c, &uc)]));
    let code = link_code(&app, &tb).await;
    let (s, e) = redeem(&app, &tc_second, &code).await;
    assert_problem(s, &e, 409, "tenant_already_linked");

    // Two people merge when they share no tenant, and not when they do.
    let d = member(&app, "advanced", Some(&group)).await;
    let e_ = member(&app, "advanced", Some(&group)).await;
    let (ud, td) = record(&app, &d, "T5", None).await;
    let (ue, te) = record(&app, &e_, "T6", None).await;
    let code = link_code(&app, &td).await;
    let (s, other) = redeem(&app, &te, &code).await;
    assert_eq!(s, 201, "{other}");
    assert_ne!(other["id"], person["id"]);
    let (_, td_second) = record(&app, &d, "T8", None).await;
    let code = link_code(&app, &td_second).await;
    let (s, e) = redeem(&app, &tc_second, &code).await;
    assert_eq!(s, 201, "{e}");
    let code = link_code(&app, &tc_second).await;
    let (s, refused) = redeem(&app, &tb, &code).await;
    assert_problem(s, &refused, 409, "tenant_already_linked");
    let code = link_code(&app, &td).await;
    let (s, merged) = redeem(&app, &tc, &code).await;
    assert_eq!(s, 201, "{merged}");
    assert_eq!(merged["id"], person["id"]);
    assert_eq!(
        records(&merged),
        pairs(&[(&a, &ua), (&b, &ub), (&c, &uc), (&d, &ud), (&e_, &ue)])
    );
    assert_eq!(identity(&app, &te).await["id"], person["id"]);

    // The group's admins find a member's person and take a record out; others may not.
    let (s, found) = app
        .get(
            &format!("/api/v1/group/people?tenant_id={}&user_id={ub}", b.id),
            &head.admin,
        )
        .await;
    assert_eq!((s, &found["id"]), (200, &person["id"]), "{found}");
    let pid = person["id"].as_str().unwrap();
    let (s, e) = app
        .get(&format!("/api/v1/group/people/{pid}"), &a.admin)
        .await;
    assert_problem(s, &e, 403, "forbidden");
    let (s, e) = app.get(&format!("/api/v1/group/people/{pid}"), &ta).await;
    assert_problem(s, &e, 403, "forbidden");
    let (s, _) = app
        .delete(
            &format!("/api/v1/group/people/{pid}/links/{}", e_.id),
            &head.admin,
        )
        .await;
    assert_eq!(s, 204);
    let (s, now) = app
        .get(&format!("/api/v1/group/people/{pid}"), &head.admin)
        .await;
    assert_eq!(s, 200, "{now}");
    assert_eq!(
        records(&now),
        pairs(&[(&a, &ua), (&b, &ub), (&c, &uc), (&d, &ud)])
    );
    assert_eq!(identity(&app, &te).await, Value::Null);
    let log = audit(&app, &e_, "identity.unlink").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with(&format!("group_admin:{}/", head.id)),
        "{log:?}"
    );

    // A person leaves on their own, record by record, whatever the edition: one record
    // left is no person.
    let (s, _) = app
        .patch(
            &format!("/api/v1/tenants/{}", a.id),
            ROOT_TOKEN,
            json!({"edition": "standard"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, e) = app
        .post("/api/v1/me/identity/link-codes", &ta, json!({}))
        .await;
    assert_problem(s, &e, 403, "edition");
    assert!(!linkable(&app, &ta).await);
    for t in [&b, &c, &d] {
        let (s, e) = app
            .delete(&format!("/api/v1/me/identity/links/{}", t.id), &ta)
            .await;
        assert_eq!(s, 204, "{e}");
    }
    assert_eq!(identity(&app, &ta).await, Value::Null);
    assert_eq!(identity(&app, &tb).await, Value::Null);
    let (s, _) = app
        .delete(&format!("/api/v1/me/identity/links/{}", b.id), &ta)
        .await;
    assert_eq!(s, 404);
}

async fn linked_records_open_sessions_and_leave_with_their_tenant(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (group, _) = district(&app).await;
    let a = member(&app, "advanced", Some(&group)).await;
    let b = member(&app, "advanced", Some(&group)).await;
    let c = member(&app, "advanced", Some(&group)).await;
    let (ua, ta) = record(&app, &a, "T1", Some(ID)).await;
    let (ub, tb) = record(&app, &b, "T1", Some(ID)).await;
    let (_, tc) = record(&app, &c, "T1", None).await;
    let session = |token: String, tenant: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/me/identity/sessions",
                &token,
                json!({"tenant_id": tenant}),
            )
            .await
        }
    };
    let (s, e) = session(ta.clone(), b.id.clone()).await;
    assert_eq!(s, 404, "not linked yet: {e}");
    let code = link_code(&app, &tb).await;
    let (s, person) = redeem(&app, &ta, &code).await;
    assert_eq!(s, 201, "{person}");

    // From A's card, a session in B: B's record, on this phone; B's earlier phone ends.
    let (s, opened) = session(ta.clone(), b.id.clone()).await;
    assert_eq!(s, 201, "{opened}");
    assert_eq!(
        (&opened["tenant_id"], &opened["user_id"]),
        (&json!(b.id), &json!(ub))
    );
    let tb_new = opened["token"].as_str().unwrap().to_string();
    let (s, _) = app.get("/api/v1/me/identity", &tb).await;
    assert_eq!(s, 401);
    assert_eq!(identity(&app, &tb_new).await["id"], person["id"]);
    let (s, me) = app.get("/api/v1/me", &tb_new).await;
    assert_eq!((s, &me["user_id"]), (200, &json!(ub)), "{me}");
    // Only where the person has a record, and only an active one.
    let (s, _) = session(ta.clone(), c.id.clone()).await;
    assert_eq!(s, 404);
    let (s, _) = session(ta.clone(), "not-an-id".into()).await;
    assert_eq!(s, 422);
    let (s, u) = app
        .patch(
            &format!("/api/v1/users/{ub}"),
            &b.admin,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let (s, _) = session(ta.clone(), b.id.clone()).await;
    assert_eq!(s, 404);
    // Nor is a suspended record linked to anyone.
    let code = link_code(&app, &tc).await;
    let (s, e) = redeem(&app, &tb_new, &code).await;
    assert_problem(s, &e, 409, "link_not_allowed");
    let (s, _) = app
        .patch(
            &format!("/api/v1/users/{ub}"),
            &b.admin,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(s, 200);
    let log = audit(&app, &b, "identity.session").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["actor"], format!("user:{ua}"));

    // A tenant that leaves the group takes its records out: a person of two is dissolved.
    let code = link_code(&app, &tc).await;
    let (s, three) = redeem(&app, &ta, &code).await;
    assert_eq!(s, 201, "{three}");
    leave(&app, &group, &c).await;
    assert_eq!(identity(&app, &tc).await, Value::Null);
    assert_eq!(records(&identity(&app, &ta).await).len(), 2);
    let (s, e) = app
        .post("/api/v1/me/identity/link-codes", &tc, json!({}))
        .await;
    assert_problem(s, &e, 409, "link_not_allowed");
    leave(&app, &group, &b).await;
    assert_eq!(identity(&app, &ta).await, Value::Null);
    assert_eq!(identity(&app, &tb_new).await, Value::Null);

    // A deleted record leaves its person too.
    let d = member(&app, "advanced", Some(&group)).await;
    let (ud, td) = record(&app, &d, "T1", None).await;
    let code = link_code(&app, &td).await;
    let (s, _) = redeem(&app, &ta, &code).await;
    assert_eq!(s, 201);
    let (s, _) = app.delete(&format!("/api/v1/users/{ud}"), &d.admin).await;
    assert_eq!(s, 204);
    assert_eq!(identity(&app, &ta).await, Value::Null);
}

async fn concurrent_links_give_a_person_one_record_per_tenant(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (group, _) = district(&app).await;
    let a = member(&app, "advanced", Some(&group)).await;
    let b = member(&app, "advanced", Some(&group)).await;
    let (ua, ta) = record(&app, &a, "T1", None).await;
    let mut codes = Vec::new();
    let mut users = Vec::new();
    for i in 0..6 {
        let (u, t) = record(&app, &b, &format!("B{i}"), None).await;
        codes.push(link_code(&app, &t).await);
        users.push(u);
    }
    let answers = futures::future::join_all(codes.iter().map(|code| redeem(&app, &ta, code))).await;
    let won: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].0 == 201)
        .collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (s, e) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_problem(*s, e, 409, "tenant_already_linked");
    }
    let person = identity(&app, &ta).await;
    assert_eq!(records(&person), pairs(&[(&a, &ua), (&b, &users[won[0]])]));
}
