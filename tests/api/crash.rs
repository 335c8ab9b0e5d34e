//! Crash safety: payments in flight, SIGKILL the server (or SIGTERM it, as a rolling
//! update does), start it again on the same store: every payment that was answered 201
//! is there with the same status and breakdown; a till that got no answer and retries
//! with the same Idempotency-Key is charged once, whether or not its first attempt
//! landed; and the ledger balances.

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

on_both_engines!(
    every_payment_answered_201_survives_a_sigkill,
    a_sigterm_drains_and_exits_0_and_retries_are_charged_once,
);

async fn every_payment_answered_201_survives_a_sigkill(engine: Engine) {
    stop_mid_run(engine, Stop::Kill).await;
}

async fn a_sigterm_drains_and_exits_0_and_retries_are_charged_once(engine: Engine) {
    stop_mid_run(engine, Stop::Term).await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// SIGKILL: no drain, no flush.
    Kill,
    /// SIGTERM: the server stops taking requests, finishes those it holds, exits 0.
    Term,
}

/// One till's attempt: its key and body, and the status it got (0: no answer).
struct Attempt {
    key: String,
    body: Value,
    status: u16,
}

async fn stop_mid_run(engine: Engine, stop: Stop) {
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
    let c = crate::helpers::client();
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
    let mut users = Vec::new();
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
        users.push(id.clone());
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
    // 800 payments from 16 tills at once; stop the server part-way through.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let unanswered = Arc::new(std::sync::Mutex::new(Vec::<Attempt>::new()));
    let codes = Arc::new(std::sync::Mutex::new(codes));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, base, till, answered, unanswered, codes) = (
            c.clone(),
            base.clone(),
            till.clone(),
            answered.clone(),
            unanswered.clone(),
            codes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(code) = codes.lock().unwrap().pop() else {
                    return;
                };
                let key = uuid::Uuid::new_v4().to_string();
                let body = json!({"code": code, "amount": 10});
                let (status, p) = post(
                    &c,
                    format!("{base}/api/v1/payments"),
                    &till,
                    body.clone(),
                    Some(key.clone()),
                )
                .await;
                if status == 201 {
                    answered.lock().unwrap().push(p);
                    continue;
                }
                unanswered
                    .lock()
                    .unwrap()
                    .push(Attempt { key, body, status });
                if status == 0 {
                    return; // the server is gone
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
    match stop {
        Stop::Kill => child.kill().unwrap(),
        Stop::Term => {
            let pid = child.id().to_string();
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            assert!(sent.success());
        }
    }
    let exit = child.wait().unwrap();
    if stop == Stop::Term {
        assert_eq!(exit.code(), Some(0), "SIGTERM drains and exits 0: {exit}");
    }
    for t in tasks {
        let _ = t.await;
    }
    let answered = answered.lock().unwrap().clone();
    let unanswered = std::mem::take(&mut *unanswered.lock().unwrap());
    assert!(answered.len() >= 150);
    for a in &unanswered {
        // A drain answers what it holds; it never answers a payment with an error.
        assert!(
            a.status == 0 || a.status == 503,
            "a payment in flight got {} on {stop:?}",
            a.status
        );
    }

    let (mut child, port) = start(dir.path(), url.as_deref());
    let base = format!("http://127.0.0.1:{port}");
    for p in &answered {
        let (_, got) = get(
            &c,
            format!("{base}/api/v1/payments/{}", p["id"].as_str().unwrap()),
            &admin,
        )
        .await;
        assert_eq!(got["status"], p["status"], "{p} came back as {got}");
        assert_eq!(got["breakdown"], p["breakdown"]);
        assert_eq!(got["amount"], p["amount"]);
    }
    // The tills retry what got no answer, with the same key and body: 200 if the first
    // attempt landed (its payment, replayed), 201 if it did not (paid now).
    let mut retried = std::collections::HashSet::new();
    for a in &unanswered {
        let (s, p) = post(
            &c,
            format!("{base}/api/v1/payments"),
            &till,
            a.body.clone(),
            Some(a.key.clone()),
        )
        .await;
        assert!(s == 200 || s == 201, "retry of {}: {s} {p}", a.key);
        if stop == Stop::Term {
            // A drain answers every payment it took: nothing it wrote went unanswered.
            assert_eq!(s, 201, "a payment drained by SIGTERM was not answered: {p}");
        }
        assert_eq!(p["status"], "succeeded", "{p}");
        retried.insert(p["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        retried.len(),
        unanswered.len(),
        "one payment per retried key"
    );
    // Every payment was 10 fen from one of twenty wallets of 100,000: each key answered
    // above was charged once, and nothing else was.
    let mut left = 0;
    for id in &users {
        let (s, w) = get(&c, format!("{base}/api/v1/users/{id}/wallet"), &admin).await;
        assert_eq!(s, 200, "{w}");
        left += w["balance"].as_i64().unwrap();
    }
    let paid = (answered.len() + retried.len()) as i64;
    assert_eq!(left, 20 * 100_000 - 10 * paid, "{paid} payments");
    let (_, check) = get(&c, format!("{base}/api/v1/ledger/check"), &admin).await;
    assert_eq!(check["balanced"], true, "{check}");
    assert_eq!(check["mismatched_wallets"], json!([]), "{check}");
    // The restarted node seals the ledger as it starts, so the check above may have
    // begun from a seal of the entries written before the crash: the check from every
    // entry agrees with it (nothing writes meanwhile).
    let (_, full) = get(&c, format!("{base}/api/v1/ledger/check?full=true"), &admin).await;
    assert_eq!(
        (
            &full["balanced"],
            &full["entries"],
            &full["mismatched_wallets"]
        ),
        (
            &check["balanced"],
            &check["entries"],
            &check["mismatched_wallets"]
        ),
        "{full} against {check}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(pg);
}

/// A GET with `token`: the status (0 when the server did not answer) and the body.
pub async fn get(c: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    match c.get(url).bearer_auth(token).send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}
