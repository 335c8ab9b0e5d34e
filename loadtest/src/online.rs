//! `loadtest online`: the evening rush of online top-ups, beside the same top-ups made by
//! the finance office, in one run. In a fresh tenant with online top-ups on, everyone is
//! first topped up once by the admin API (`POST /users/{id}/wallet/topups`: one request,
//! the reference), then tops up online from their phone (open the order, pay it in the
//! sandbox, whose notice credits it: two requests), then once more with the notice lost
//! (open, pay, and the phone's question credits it: three requests). Afterwards every
//! wallet must hold exactly what it was credited, the top-up register must have a line per
//! top-up, and the ledger must balance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::pay::{get_json, import_people, post, user_token, SETUP_CONCURRENCY};
use super::{connect, latency_histogram, ledger_balances, new_tenant, Server, Target};

/// How each round tops everyone up.
#[derive(Clone, Copy, PartialEq)]
enum Round {
    /// The finance office's one request.
    Admin,
    /// Open, and pay with the provider's notice.
    Notified,
    /// Open, pay with the notice lost, and the phone asks.
    Asked,
}

impl Round {
    fn name(self) -> &'static str {
        match self {
            Round::Admin => "by the admin API",
            Round::Notified => "online, credited by the notice",
            Round::Asked => "online, notice lost, credited by the phone's question",
        }
    }

    /// Fen each person gets in this round.
    fn amount(self) -> i64 {
        match self {
            Round::Admin => 500,
            Round::Notified => 1_000,
            Round::Asked => 2_000,
        }
    }
}

struct People {
    admin: String,
    ids: Vec<String>,
    tokens: Vec<String>,
}

/// One person's top-up in `round`: its latency in µs.
async fn top_up(
    client: &reqwest::Client,
    base: &str,
    people: &People,
    i: usize,
    round: Round,
) -> Result<u64> {
    let start = Instant::now();
    let amount = round.amount();
    let key = Some(format!("{}-{i}", round as u8));
    if round == Round::Admin {
        let id = &people.ids[i];
        let url = format!("{base}/api/v1/users/{id}/wallet/topups");
        post(client, url, &people.admin, json!({"amount": amount}), key).await?;
        return Ok(start.elapsed().as_micros() as u64);
    }
    let me = &people.tokens[i];
    let url = format!("{base}/api/v1/me/wallet/charges");
    let order = post(client, url, me, json!({"amount": amount}), key).await?;
    let id = order["id"].as_str().context("charge id")?;
    let notify = round == Round::Notified;
    let url = format!("{base}/api/v1/sandbox/provider/charges/{id}/pay");
    let mut charge = post(client, url, me, json!({"notify": notify}), None).await?;
    if !notify {
        charge = get_json(client, format!("{base}/api/v1/me/wallet/charges/{id}"), me).await?;
    }
    if charge["status"] != "paid" {
        bail!("person {i}'s top-up is {charge}");
    }
    Ok(start.elapsed().as_micros() as u64)
}

/// Everyone topped up once in `round`, `phones` at a time: top-ups a second, p50, p99 (ms).
async fn rush(
    client: &reqwest::Client,
    server: &Server,
    people: &Arc<People>,
    phones: usize,
    round: Round,
) -> Result<(f64, f64, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Mutex::new(latency_histogram()));
    let start = Instant::now();
    let workers = (0..phones).map(|_| {
        let (client, base) = (client.clone(), server.base.clone());
        let (people, next, all) = (people.clone(), next.clone(), all.clone());
        async move {
            let mut mine: Histogram<u64> = latency_histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= people.ids.len() {
                    break;
                }
                let us = top_up(&client, &base, &people, i, round).await?;
                mine.saturating_record(us);
            }
            all.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .add(&mine)?;
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(workers).await?;
    let secs = start.elapsed().as_secs_f64();
    let all = all.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok((
        people.ids.len() as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

pub async fn run(target: Target, people: usize, phones: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    println!("online: {people} people topped up three ways, {phones} at a time, against {base}");
    let admin = new_tenant(&server, &client, "Online top-ups", "standard").await?;
    client
        .patch(format!("{base}/api/v1/tenant"))
        .bearer_auth(&admin)
        .json(&json!({"settings": {"online_topups": {"enabled": true}}}))
        .send()
        .await?
        .error_for_status()?;
    let ids = import_people(&server, &client, &admin, people).await?;
    let tokens: Vec<Result<String>> = stream::iter(ids.iter().cloned())
        .map(|id| {
            let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
            async move { user_token(&client, &base, &admin, &id).await }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let tokens = tokens.into_iter().collect::<Result<Vec<_>>>()?;
    let everyone = Arc::new(People {
        admin: admin.clone(),
        ids,
        tokens,
    });
    let mut rates = Vec::new();
    for round in [Round::Admin, Round::Notified, Round::Asked] {
        let (rate, p50, p99) = rush(&client, &server, &everyone, phones, round).await?;
        println!(
            "  {}: {rate:.0} top-ups/s, p50 {p50:.1} ms, p99 {p99:.1} ms",
            round.name()
        );
        rates.push(rate);
    }
    println!(
        "  online against the admin API: {:.2}× with the notice, {:.2}× with the phone asking",
        rates[1] / rates[0],
        rates[2] / rates[0]
    );

    // Credited once each: every wallet holds the three rounds' sum, and the register has
    // a line per top-up.
    let want: i64 = [Round::Admin, Round::Notified, Round::Asked]
        .iter()
        .map(|r| r.amount())
        .sum();
    let balances: Vec<Result<i64>> = stream::iter(everyone.tokens.iter().cloned())
        .map(|me| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let w: Value = get_json(&client, format!("{base}/api/v1/me/wallet"), &me).await?;
                w["balance"].as_i64().context("balance")
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    for (i, b) in balances.into_iter().enumerate() {
        let b = b?;
        if b != want {
            bail!("person {i} holds {b} fen, not {want}");
        }
    }
    let mut lines = 0;
    let mut cursor = String::new();
    loop {
        let page: Value = get_json(
            &client,
            format!("{base}/api/v1/wallets/topups?limit=500{cursor}"),
            &admin,
        )
        .await?;
        lines += page["items"].as_array().context("items")?.len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    if lines != 3 * people {
        bail!("the top-up register has {lines} lines, not {}", 3 * people);
    }
    let check = ledger_balances(&server, &client, &admin, "the top-ups").await?;
    println!(
        "  every wallet holds {want} fen, the register {lines} lines; ledger balanced ({} entries)",
        check["entries"]
    );
    Ok(())
}
