//! Crash safety: payments in flight, SIGKILL the server, start it again on the same
//! store: every payment that was answered 201 is there with the same status and
//! breakdown, and the ledger balances.

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{start_node, Engine, PgDatabase};
use crate::on_both_engines;

const ROOT: &str = "crash-test-root-token-0123456789abcdefghijkl";

fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> (Child, u16) {
    let mut env = vec![("ONECARD_ROOT_TOKEN", ROOT.to_string())];
    if let Some(url) = database_url {
        env.push(("ONECARD_DATABASE_URL", url.to_string()));
    }
    start_node(data_dir, &env)
}

pub async fn post(
    c: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
    key: Option<String>,
) -> (u16, Value) {
    let mut req = c.post(url).bearer_auth(token).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    match req.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

on_both_engines!(every_payment_answered_201_survives_a_sigkill);

async fn every_payment_answered_201_survives_a_sigkill(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => match PgDatabase::create().await {
            Some(pair) => Some(pair),
            None => return,
        },
    };
    let url = pg.as_ref().map(|(_, u)| u.clone());
    let (mut child, port) = start(dir.path(), url.as_deref());
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let (_, t) = post(
        &c,
        format!("{base}/api/v1/tenants"),
        ROOT,
        json!({"name": "Crash", "kind": "k12", "edition": "standard"}),
        None,
    )
    .await;
    let admin = t["admin_token"].as_str().unwrap().to_string();
    c.patch(format!("{base}/api/v1/tenant"))
        .bearer_auth(&admin)
        .json(&json!({"settings": {"require_agreement": false}}))
        .send()
        .await
        .unwrap();
    let (_, m) = post(
        &c,
        format!("{base}/api/v1/merchants"),
        &admin,
        json!({"name": "Canteen"}),
        None,
    )
    .await;
    let (_, till) = post(
        &c,
        format!(
            "{base}/api/v1/merchants/{}/terminals",
            m["id"].as_str().unwrap()
        ),
        &admin,
        json!({"name": "T"}),
        None,
    )
    .await;
    let till = till["token"].as_str().unwrap().to_string();
    let mut codes = Vec::new();
    for i in 0..20 {
        let (_, u) = post(
            &c,
            format!("{base}/api/v1/users"),
            &admin,
            json!({"name": "P", "number": format!("C{i}")}),
            None,
        )
        .await;
        let id = u["id"].as_str().unwrap().to_string();
        let (_, tok) = post(
            &c,
            format!("{base}/api/v1/users/{id}/tokens"),
            &admin,
            json!({}),
            None,
        )
        .await;
        let tok = tok["token"].as_str().unwrap().to_string();
        post(
            &c,
            format!("{base}/api/v1/users/{id}/wallet/topups"),
            &admin,
            json!({"amount": 100_000}),
            Some(format!("t{i}")),
        )
        .await;
        for _ in 0..40 {
            let (_, code) = post(
                &c,
                format!("{base}/api/v1/me/payment-codes"),
                &tok,
                json!({}),
                None,
            )
            .await;
            codes.push(code["code"].as_str().unwrap().to_string());
        }
    }
    // 800 payments from 16 tills at once; kill the server part-way through.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let codes = Arc::new(std::sync::Mutex::new(codes));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, base, till, answered, codes) = (
            c.clone(),
            base.clone(),
            till.clone(),
            answered.clone(),
            codes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(code) = codes.lock().unwrap().pop() else {
                    return;
                };
                let (s, p) = post(
                    &c,
                    format!("{base}/api/v1/payments"),
                    &till,
                    json!({"code": code, "amount": 10}),
                    Some(uuid::Uuid::new_v4().to_string()),
                )
                .await;
                match s {
                    201 => answered.lock().unwrap().push(p),
                    0 => return, // the server is gone
                    _ => {}
                }
            }
        }));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if answered.lock().unwrap().len() >= 150 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no drain, no flush
    child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 150);

    let (mut child, port) = start(dir.path(), url.as_deref());
    let base = format!("http://127.0.0.1:{port}");
    for p in &answered {
        let got: Value = c
            .get(format!(
                "{base}/api/v1/payments/{}",
                p["id"].as_str().unwrap()
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["status"], p["status"], "{p} came back as {got}");
        assert_eq!(got["breakdown"], p["breakdown"]);
        assert_eq!(got["amount"], p["amount"]);
    }
    let check: Value = c
        .get(format!("{base}/api/v1/ledger/check"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["balanced"], true, "{check}");
    assert_eq!(check["mismatched_wallets"], json!([]), "{check}");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(pg);
}
