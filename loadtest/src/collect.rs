//! `loadtest collect`: a canteen's lunchtime at collection codes, beside the same lunch at
//! tills, in one run. Everyone first pays once at a till with a prefetched payment code
//! (the `pay` scenario's path), then once at a stall's collection code from their phone
//! (signed in, amount entered), then is counted once at the door's count-only code. The
//! ratio of the two payment rates is what paying by collection code costs against a till.
//! Afterwards the ledger must balance, the merchant's totals count every payment, and the
//! door's day count everyone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hyper::header::HeaderValue;
use serde_json::{json, Value};

use super::conn::Conn;
use super::pay::{post, prefetch_codes, setup};
use super::{connect, latency_histogram, Server, Target};

/// Tills (8 a stall over 8 stalls, as `loadtest pay`).
const TILLS: usize = 64;

/// What one phase does for person `i`.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// Pays at a till with the person's prefetched payment code.
    Till,
    /// Pays at their stall's collection code from their phone.
    Code,
    /// Is counted at the door.
    Visit,
}

struct Canteen {
    admin: String,
    root: String,
    tills: Vec<String>,
    /// Payment codes, one a person, in order.
    codes: Vec<String>,
    /// The stalls' collection codes.
    windows: Vec<String>,
    door: String,
    people: Vec<HeaderValue>,
}

/// What person `i` pays (the same at the till and at the code): 5.00 to 19.99.
fn amount(i: usize) -> i64 {
    500 + (i as i64 * 37) % 1_500
}

async fn canteen(server: &Server, client: &reqwest::Client, people: usize) -> Result<Canteen> {
    let base = &server.base;
    let s = setup(server, client, TILLS, people, false, "standard").await?;
    let merchants: Value = client
        .get(format!("{base}/api/v1/merchants"))
        .bearer_auth(&s.admin)
        .send()
        .await?
        .json()
        .await?;
    let merchants = merchants["items"].as_array().context("merchants")?;
    let id_of = |m: &Value| m["id"].as_str().map(str::to_string);
    let root = merchants
        .iter()
        .find(|m| m["parent_id"].is_null())
        .and_then(id_of)
        .context("the canteen")?;
    let mut windows = Vec::new();
    for stall in merchants.iter().filter(|m| !m["parent_id"].is_null()) {
        let stall = id_of(stall).context("stall id")?;
        let t = post(
            client,
            format!("{base}/api/v1/merchants/{stall}/terminals"),
            &s.admin,
            json!({"name": "Window", "kind": "collection", "mode": "pay"}),
            None,
        )
        .await?;
        windows.push(
            t["collection"]["code"]
                .as_str()
                .context("code")?
                .to_string(),
        );
    }
    let door = post(
        client,
        format!("{base}/api/v1/merchants/{root}/terminals"),
        &s.admin,
        json!({"name": "Door", "kind": "collection", "mode": "count"}),
        None,
    )
    .await?;
    // One code a person, in order (prefetch_codes spreads them by a stride: fetch each
    // person's own instead).
    let mut codes = Vec::with_capacity(people);
    for chunk in s.cardholders.chunks(super::pay::SETUP_CONCURRENCY) {
        let got = futures::future::try_join_all(
            chunk
                .iter()
                .map(|c| prefetch_codes(client, base, std::slice::from_ref(c), 1)),
        )
        .await?;
        codes.extend(got.into_iter().flatten());
    }
    let people = s
        .cardholders
        .iter()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Canteen {
        admin: s.admin,
        root,
        tills: s.tills,
        codes,
        windows,
        door: door["collection"]["code"]
            .as_str()
            .context("door code")?
            .to_string(),
        people,
    })
}

/// Everyone once, `connections` at a time (a till each for `Phase::Till`); answers the
/// requests a second.
async fn pass(server: &Server, c: &Arc<Canteen>, connections: usize, phase: Phase) -> Result<f64> {
    let cpu = server.cpu_mark();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..connections {
        let till = (phase == Phase::Till).then(|| c.tills[k % c.tills.len()].as_str());
        let mut conn = Conn::new(&server.base, till)?;
        let (c, next) = (c.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut wrong = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(person) = c.people.get(i) else {
                    break;
                };
                let key = uuid::Uuid::new_v4().to_string();
                let t = Instant::now();
                let answer = match phase {
                    Phase::Till => {
                        let body =
                            serde_json::to_vec(&json!({"code": c.codes[i], "amount": amount(i)}))?;
                        conn.post_json("/api/v1/payments", body, Some(&key)).await
                    }
                    Phase::Code => {
                        let window = &c.windows[i % c.windows.len()];
                        let body = serde_json::to_vec(&json!({ "amount": amount(i) }))?;
                        conn.post_json_as(
                            &format!("/api/v1/collection-codes/{window}/payments"),
                            body,
                            person,
                            Some(&key),
                        )
                        .await
                    }
                    Phase::Visit => {
                        conn.post_json_as(
                            &format!("/api/v1/collection-codes/{}/visits", c.door),
                            b"{}".to_vec(),
                            person,
                            None,
                        )
                        .await
                    }
                };
                let ok = match &answer {
                    Ok((status, body)) if status.as_u16() == 201 => {
                        phase == Phase::Visit
                            || serde_json::from_slice::<Value>(body)
                                .is_ok_and(|v| v["status"] == "succeeded")
                    }
                    _ => false,
                };
                if ok {
                    h.saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    wrong.push(format!("{answer:?}"));
                }
            }
            Ok::<_, anyhow::Error>((h, wrong))
        }));
    }
    let mut all = latency_histogram();
    let mut wrong = Vec::new();
    for t in tasks {
        let (h, w) = t.await??;
        all.add(h)?;
        wrong.extend(w);
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = all.len() as f64 / secs;
    let label = match phase {
        Phase::Till => "at tills (payment codes)",
        Phase::Code => "at collection codes (phones)",
        Phase::Visit => "counted at the door",
    };
    println!(
        "{label}: {} people, {connections} at a time, {secs:.2} s: {rate:.0}/s, \
         p50 {:.2} ms, p99 {:.2} ms, failed: {}",
        c.people.len(),
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        wrong.len(),
    );
    println!("  {}", cpu.per(server, all.len(), "request"));
    if let Some(first) = wrong.first() {
        bail!("{} requests failed; the first: {first}", wrong.len());
    }
    Ok(rate)
}

async fn get(client: &reqwest::Client, server: &Server, admin: &str, path: &str) -> Result<Value> {
    Ok(client
        .get(format!("{}/api/v1{path}", server.base))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?)
}

pub(crate) async fn run(target: Target, people: usize, connections: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let c = Arc::new(canteen(&server, &client, people).await?);
    println!(
        "collect: {people} people with topped-up wallets, {TILLS} tills and a collection code \
         at each of 8 stalls, a count-only door; set up in {:.1} s against {}",
        t0.elapsed().as_secs_f64(),
        server.base
    );
    let tills = pass(&server, &c, connections, Phase::Till).await?;
    let codes = pass(&server, &c, connections, Phase::Code).await?;
    pass(&server, &c, connections, Phase::Visit).await?;
    println!("collection codes / tills: {:.2}", codes / tills);

    let check = get(&client, &server, &c.admin, "/ledger/check").await?;
    if check["balanced"] != true
        || check["mismatched_wallets"] != json!([])
        || check["mismatched_registers"] != json!([])
    {
        bail!("the ledger check failed: {check}");
    }
    let visits = get(
        &client,
        &server,
        &c.admin,
        &format!("/merchants/{}/visits", c.root),
    )
    .await?;
    if visits["count"].as_u64() != Some(people as u64) {
        bail!("the door counts {} visits, not {people}", visits["count"]);
    }
    // Merchant totals follow committed events off the payment's path: give them a moment.
    let want = 2 * people as u64;
    let mut totals = Value::Null;
    for _ in 0..100 {
        totals = get(
            &client,
            &server,
            &c.admin,
            &format!("/merchants/{}/totals", c.root),
        )
        .await?;
        if totals["rollup"]["count"].as_u64() == Some(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let gross: i64 = 2 * (0..people).map(amount).sum::<i64>();
    if totals["rollup"]["count"].as_u64() != Some(want)
        || totals["rollup"]["gross"].as_i64() != Some(gross)
    {
        bail!("the canteen's totals are {totals}, not {want} payments of {gross} fen");
    }
    println!(
        "checked: ledger balanced ({} entries); canteen totals {want} payments, {gross} fen; \
         door {people} visits",
        check["entries"]
    );
    Ok(())
}
