//! `loadtest pay` and `loadtest naive`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::conn::Conn;
use super::{
    connect, import_csv, latency_histogram, new_tenant, students_csv, CpuMark, Server, Target,
};

/// Concurrency of the set-up requests (tokens, top-ups, codes).
pub(crate) const SETUP_CONCURRENCY: usize = 64;

pub(crate) async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
    key: Option<String>,
) -> Result<Value> {
    let mut req = client.post(url).bearer_auth(token).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(body)
}

/// GETs `url` as `token`: the answer's JSON, once it says 2xx.
pub(crate) async fn get_json(client: &reqwest::Client, url: String, token: &str) -> Result<Value> {
    Ok(client
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// A new cardholder token for user `id`, issued by the tenant's admin.
pub(crate) async fn user_token(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    id: &str,
) -> Result<String> {
    let t = post(
        client,
        format!("{base}/api/v1/users/{id}/tokens"),
        admin,
        json!({}),
        None,
    )
    .await?;
    Ok(t["token"].as_str().context("token")?.to_string())
}

/// Imports `n` students into the tenant (`students_csv`) and answers their ids.
pub(crate) async fn import_people(
    server: &Server,
    client: &reqwest::Client,
    admin: &str,
    n: usize,
) -> Result<Vec<String>> {
    import_csv(server, client, admin, &students_csv(n)).await?;
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(server.url(&format!("/api/v1/users?limit=500{cursor}"))?)
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        for u in page["items"].as_array().context("items")? {
            ids.push(u["id"].as_str().context("id")?.to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    Ok(ids)
}

/// Where payments are made.
const PAYMENTS: &str = "/api/v1/payments";

pub(crate) struct Setup {
    pub admin: String,
    pub tills: Vec<String>,
    pub cardholders: Vec<String>,
}

pub(crate) async fn setup(
    server: &Server,
    client: &reqwest::Client,
    tills: usize,
    cardholders: usize,
    hot: bool,
    edition: &str,
) -> Result<Setup> {
    let base = &server.base;
    let admin = new_tenant(server, client, "Load", edition).await?;
    let res = client
        .patch(format!("{base}/api/v1/tenant"))
        .bearer_auth(&admin)
        .json(&json!({"settings": {"require_agreement": false}}))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("tenant settings: {}", res.status());
    }
    let root = post(
        client,
        format!("{base}/api/v1/merchants"),
        &admin,
        json!({"name": "Catering", "single_limit": 100_000}),
        None,
    )
    .await?;
    let mut stalls = Vec::new();
    for i in 0..8 {
        let m = post(
            client,
            format!("{base}/api/v1/merchants"),
            &admin,
            json!({"name": format!("Stall {i}"), "parent_id": root["id"], "single_limit": 100_000}),
            None,
        )
        .await?;
        stalls.push(m["id"].as_str().context("merchant id")?.to_string());
    }
    let mut till_tokens = Vec::new();
    for i in 0..tills {
        let stall = if hot {
            &stalls[0]
        } else {
            &stalls[i % stalls.len()]
        };
        let t = post(
            client,
            format!("{base}/api/v1/merchants/{stall}/terminals"),
            &admin,
            json!({"name": format!("Till {i}")}),
            None,
        )
        .await?;
        till_tokens.push(t["token"].as_str().context("terminal token")?.to_string());
    }
    let ids = import_people(server, client, &admin, cardholders).await?;
    let tokens: Vec<Result<String>> = stream::iter(ids.iter().cloned())
        .map(|id| {
            let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
            async move {
                let token = user_token(&client, &base, &admin, &id).await?;
                post(
                    &client,
                    format!("{base}/api/v1/users/{id}/wallet/topups"),
                    &admin,
                    json!({"amount": 10_000_000}),
                    Some(format!("seed-{id}")),
                )
                .await?;
                Ok(token)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let cardholders = tokens.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Setup {
        admin,
        tills: till_tokens,
        cardholders,
    })
}

/// `n` payment codes, as the cardholders' phones hold them: fetched ahead, spread over
/// the cardholders, each to be used once.
pub(crate) async fn prefetch_codes(
    client: &reqwest::Client,
    base: &str,
    cardholders: &[String],
    n: usize,
) -> Result<Vec<String>> {
    let codes: Vec<Result<String>> = stream::iter(0..n)
        .map(|i| {
            let (client, base) = (client.clone(), base.to_string());
            let token = cardholders[(i * 7919) % cardholders.len()].clone();
            async move {
                let c = post(
                    &client,
                    format!("{base}/api/v1/me/payment-codes"),
                    &token,
                    json!({}),
                    None,
                )
                .await?;
                Ok(c["code"].as_str().context("code")?.to_string())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    codes.into_iter().collect()
}

/// The body a till posts to `/api/v1/payments`.
#[derive(serde::Serialize)]
struct PayRequest<'a> {
    code: &'a str,
    amount: i64,
}

/// A till's payment of `amount` with `code`, under an Idempotency-Key of its own. A body
/// that cannot be encoded is an error like any failed request.
pub(crate) async fn pay(
    conn: &mut Conn,
    code: &str,
    amount: i64,
) -> Result<(hyper::StatusCode, bytes::Bytes)> {
    let body = serde_json::to_vec(&PayRequest { code, amount })?;
    let key = uuid::Uuid::new_v4().to_string();
    conn.post_json(PAYMENTS, body, Some(&key)).await
}

/// The one field of the server's answer that the loader counts by.
#[derive(serde::Deserialize)]
struct PayReply {
    status: Option<String>,
}

pub async fn run(
    target: Target,
    tills: usize,
    cardholders: usize,
    payments: usize,
    hot: bool,
    latency_log: Option<&std::path::Path>,
    webhook: bool,
) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(tills * 2)
        .build()?;
    let t0 = Instant::now();
    let edition = if webhook { "advanced" } else { "standard" };
    let setup = setup(&server, &client, tills, cardholders, hot, edition).await?;
    let hooks = if webhook {
        let (port, got) = crate::hooks::start().await?;
        post(
            &client,
            format!("{}/api/v1/apps", server.base),
            &setup.admin,
            json!({"name": "Gate", "kind": "headless", "scopes": ["payments_read"],
                   "webhook_url": format!("http://127.0.0.1:{port}/hook"),
                   "webhook_events": ["payment.succeeded"]}),
            None,
        )
        .await?;
        Some(got)
    } else {
        None
    };
    let rss_before = server.rss_kib();
    println!(
        "pay: set up {cardholders} cardholders with topped-up wallets, {tills} tills{} in {:.1} s",
        if hot {
            " at one stall"
        } else {
            " over 8 stalls"
        },
        t0.elapsed().as_secs_f64()
    );
    // Codes are what the cardholders' phones hold: fetched ahead, each used once.
    let t1 = Instant::now();
    let codes: VecDeque<String> =
        prefetch_codes(&client, &server.base, &setup.cardholders, payments)
            .await?
            .into();
    let rss_warm = server.rss_kib();
    println!(
        "pay: prefetched {} codes in {:.1} s",
        codes.len(),
        t1.elapsed().as_secs_f64()
    );
    let queue = Arc::new(Mutex::new(codes));
    let ledger_before = ledger_counters(&client, &server).await;
    let cpu = server.cpu_mark();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for till in setup.tills.clone() {
        // Each till is a device of its own with its own connection, as in a canteen, not
        // 64 tasks taking turns at one shared connection pool.
        let queue = queue.clone();
        let mut conn = Conn::new(&server.base, Some(&till))?;
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
            let mut n = 0u64;
            let mut taken = 0i64;
            // (start, latency) of each answered payment, µs; start counts from `start`.
            let mut times: Vec<(u64, u64)> = Vec::new();
            loop {
                let Some(code) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    break;
                };
                n += 1;
                let amount = 1 + (n * 37 % 300) as i64;
                let t = Instant::now();
                let res = pay(&mut conn, &code, amount).await;
                let label = match res {
                    Ok((status, reply)) => {
                        // Only the payment's status is read; the rest of the reply is
                        // skipped, not built into a map of values.
                        let reply = serde_json::from_slice::<PayReply>(&reply).ok();
                        let latency = t.elapsed().as_micros() as u64;
                        h.saturating_record(latency);
                        times.push(((t - start).as_micros() as u64, latency));
                        match reply {
                            Some(PayReply { status: Some(s) }) if status == 201 => {
                                if s == "succeeded" {
                                    taken += amount;
                                }
                                s
                            }
                            _ if status == 201 => "?".to_string(),
                            _ => format!("http {status}"),
                        }
                    }
                    Err(_) => "error".to_string(),
                };
                *statuses.entry(label).or_default() += 1;
            }
            (h, statuses, times, taken)
        }));
    }
    let mut all = latency_histogram();
    let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
    let mut times = Vec::with_capacity(payments);
    let mut taken = 0;
    for t in tasks {
        let (h, s, t, took) = t.await?;
        taken += took;
        all.add(h)?;
        times.extend(t);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.per(&server, all.len(), "payment");
    if let Some(got) = hooks {
        let succeeded = statuses.get("succeeded").copied().unwrap_or(0);
        let ended = Instant::now();
        // The deliveries still on their way when the payments ended, given a minute.
        while got.count.load(Ordering::Relaxed) < succeeded && ended.elapsed().as_secs() < 60 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let n = got.count.load(Ordering::Relaxed);
        let last = *got.last.lock().unwrap_or_else(|p| p.into_inner());
        let after = last.map_or(0.0, |l| l.saturating_duration_since(ended).as_secs_f64());
        println!(
            "webhooks: {n} deliveries of {succeeded} succeeded payments; {:.0} deliveries/s from the first payment to the last delivery; the last {after:.2} s after the last payment",
            n as f64 / last.map_or(secs, |l| (l - start).as_secs_f64()).max(secs),
        );
    }
    let ledger_after = ledger_counters(&client, &server).await;
    let check_start = Instant::now();
    let check: Value = client
        .get(format!("{}/api/v1/ledger/check", server.base))
        .bearer_auth(&setup.admin)
        .send()
        .await?
        .json()
        .await?;
    let check_ms = check_start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "pay{}: {} payments in {secs:.1} s = {:.0} payments/s; p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; {statuses:?}; ledger balanced: {} ({} entries, {} wallets differing from their entries; checked in {check_ms:.0} ms)",
        if hot { " (hot stall)" } else { "" },
        all.len(),
        all.len() as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
        check["balanced"],
        check["entries"],
        check["mismatched_wallets"].as_array().map_or(0, Vec::len),
    );
    println!("{cpu}");
    // The lowest value of p99's bucket, so that every payment in that bucket counts.
    let p99 = all.lowest_equivalent(all.value_at_quantile(0.99));
    println!("{}", Tail::of(&mut times, p99));
    println!(
        "{}",
        time_reports(&client, &server, &setup.admin, taken).await?
    );
    println!(
        "{}",
        time_spending(&client, &server, &setup.admin, taken).await?
    );
    println!(
        "{}",
        time_detail(&client, &server, &setup.admin, taken).await?
    );
    if let Some(path) = latency_log {
        write_latency_log(path, &times)
            .with_context(|| format!("writing the latency log {}", path.display()))?;
    }
    if let (Some(a), Some(b)) = (ledger_before, ledger_after) {
        let batches = b[0].saturating_sub(a[0]);
        let per_batch = |i: usize| b[i].saturating_sub(a[i]) as f64 / batches.max(1) as f64;
        println!(
            "group commit: {batches} batches, {:.1} commits per batch, {:.2} ms mean batch write",
            per_batch(1),
            per_batch(2) / 1000.0
        );
    }
    if let (Some(before), Some(warm)) = (rss_before, rss_warm) {
        println!(
            "memory: RSS {before} KiB with cold wallets, {warm} KiB with {cardholders} wallet actors cached: ~{:.1} KiB per cached wallet actor",
            (warm.saturating_sub(before)) as f64 / cardholders as f64
        );
    }
    Ok(())
}

/// Times each financial report over the run (yesterday to tomorrow in UTC holds the
/// tenant's local day) and checks that the income summary's receivable is what the tills
/// took and that the merchant reports add up to it.
async fn time_reports(
    client: &reqwest::Client,
    server: &Server,
    admin: &str,
    taken: i64,
) -> Result<String> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let (from, to) = (today.yesterday()?, today.tomorrow()?);
    let mut line = String::from("reports:");
    let mut totals = Vec::new();
    for (kind, field, format) in [
        ("income-summary", "receivable", "json"),
        ("merchant-clearing", "gross", "json"),
        ("merchant-summary", "gross", "json"),
        ("merchant-split", "gross", "json"),
        ("merchant-receipts", "amount", "json"),
        ("merchant-receipts", "", "xlsx"),
    ] {
        let url = format!(
            "{}/api/v1/reports/{kind}?from={from}&to={to}&format={format}",
            server.base
        );
        let (status, body, ms) = timed_get(client, &url, admin).await?;
        if !status.is_success() {
            bail!("report {kind}: {status}");
        }
        line.push_str(&format!(
            " {kind} ({format}, {} KiB) {ms:.0} ms;",
            body.len() / 1024
        ));
        if format == "json" {
            let r: Value = serde_json::from_slice(&body)?;
            totals.push(r["totals"][field].as_i64().unwrap_or(-1));
        }
    }
    let agree = totals.iter().all(|t| *t == taken);
    line.push_str(&format!(
        " every report's sales = what the tills took ({taken} fen): {agree}"
    ));
    Ok(line)
}

/// Times the transaction detail of the run (every payment of the last hour, as CSV and
/// XLSX) and checks that the CSV lists a payment a row adding up to what the tills took.
async fn time_detail(
    client: &reqwest::Client,
    server: &Server,
    admin: &str,
    taken: i64,
) -> Result<String> {
    let now = jiff::Timestamp::now();
    let (from, to) = (
        now - jiff::SignedDuration::from_hours(1),
        now + jiff::SignedDuration::from_mins(1),
    );
    let mut line = String::from("transaction detail:");
    for format in ["csv", "xlsx"] {
        let url = format!(
            "{}/api/v1/payments/export?from={from}&to={to}&format={format}",
            server.base
        );
        let (status, body, ms) = timed_get(client, &url, admin).await?;
        if !status.is_success() {
            bail!("transaction detail ({format}): {status}");
        }
        line.push_str(&format!(
            " {format} ({} KiB) {ms:.0} ms;",
            body.len() / 1024
        ));
        if format == "csv" {
            let mut rows = 0;
            let mut sum = 0i64;
            for r in csv::Reader::from_reader(&body[..]).records() {
                let r = r?;
                rows += 1;
                sum += r.get(5).context("amount")?.parse::<i64>()?;
            }
            line.push_str(&format!(
                " {rows} payments, their amounts = what the tills took ({taken} fen): {};",
                sum == taken
            ));
        }
    }
    Ok(line)
}

/// A GET as `token`: its status, its body and the milliseconds until the body was in.
async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<(reqwest::StatusCode, Vec<u8>, f64)> {
    let t = Instant::now();
    let res = client.get(url).bearer_auth(token).send().await?;
    let status = res.status();
    let body = res.bytes().await?.to_vec();
    Ok((status, body, t.elapsed().as_secs_f64() * 1000.0))
}

/// Moves the run's tenant to the advanced edition and times the spending analysis over
/// the run (by person, department and identity; one as CSV), checking that the
/// cardholders' gross by identity is what the tills took.
async fn time_spending(
    client: &reqwest::Client,
    server: &Server,
    admin: &str,
    taken: i64,
) -> Result<String> {
    let tenant: Value = client
        .get(format!("{}/api/v1/tenant", server.base))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?;
    let id = tenant["id"].as_str().context("tenant id")?;
    let res = client
        .patch(format!("{}/api/v1/tenants/{id}", server.base))
        .bearer_auth(&server.root)
        .json(&json!({"edition": "advanced"}))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("edition: {}", res.status());
    }
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let (from, to) = (today.yesterday()?, today.tomorrow()?);
    let mut line = String::from("spending:");
    let mut gross = -1;
    for (by, format) in [
        ("user", "json"),
        ("department", "json"),
        ("identity", "json"),
        ("user", "csv"),
    ] {
        let url = format!(
            "{}/api/v1/analytics/spending?from={from}&to={to}&by={by}&format={format}",
            server.base
        );
        // The admin's token carries the tenant's edition for a few seconds (its cache).
        let started = Instant::now();
        let (status, body, ms) = loop {
            let got = timed_get(client, &url, admin).await?;
            if got.0 != reqwest::StatusCode::FORBIDDEN
                || started.elapsed() > Duration::from_secs(10)
            {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if !status.is_success() {
            bail!("spending by {by}: {status}");
        }
        line.push_str(&format!(
            " by {by} ({format}, {} KiB) {ms:.0} ms;",
            body.len() / 1024
        ));
        if by == "identity" {
            let r: Value = serde_json::from_slice(&body)?;
            gross = r["totals"]["gross"].as_i64().unwrap_or(-1);
        }
    }
    line.push_str(&format!(
        " cardholders' gross = what the tills took ({taken} fen): {}",
        gross == taken
    ));
    Ok(line)
}

/// Where the slowest payments fell: spread over the run, or bunched in a few moments
/// when every till waited at once (a stall).
struct Tail {
    /// Tenths of a second that held a payment at or above the run's p99, and all of them.
    slow_windows: usize,
    windows: usize,
    /// The p99 of each whole second of the run, lowest and highest, µs.
    per_second: Option<(u64, u64)>,
}

impl Tail {
    const WINDOW_US: u64 = 100_000;

    /// `times`: (start, latency) in µs, sorted here by start.
    fn of(times: &mut [(u64, u64)], p99: u64) -> Tail {
        times.sort_unstable();
        let windows = times
            .last()
            .map_or(0, |t| (t.0 / Self::WINDOW_US) as usize + 1);
        let mut slow: Vec<u64> = times
            .iter()
            .filter(|t| t.1 >= p99)
            .map(|t| t.0 / Self::WINDOW_US)
            .collect();
        slow.dedup();
        let mut seconds: Vec<&[(u64, u64)]> = times
            .chunk_by(|a, b| a.0 / 1_000_000 == b.0 / 1_000_000)
            .collect();
        // Whole seconds only: the last one holds the run's stragglers.
        seconds.pop();
        let mut per_second: Option<(u64, u64)> = None;
        for second in seconds {
            let mut lat: Vec<u64> = second.iter().map(|t| t.1).collect();
            lat.sort_unstable();
            let p = lat[lat.len() * 99 / 100];
            per_second = Some(per_second.map_or((p, p), |(lo, hi)| (lo.min(p), hi.max(p))));
        }
        Tail {
            slow_windows: slow.len(),
            windows,
            per_second,
        }
    }
}

impl std::fmt::Display for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tail: the payments at or above p99 fell in {} of {} tenths of a second",
            self.slow_windows, self.windows
        )?;
        if let Some((lo, hi)) = self.per_second {
            write!(
                f,
                "; p99 of each whole second {:.2}–{:.2} ms",
                lo as f64 / 1000.0,
                hi as f64 / 1000.0
            )?;
        }
        Ok(())
    }
}

/// One line per payment, in order of start: `start_us,latency_us`.
fn write_latency_log(path: &std::path::Path, times: &[(u64, u64)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "start_us,latency_us")?;
    for (start, latency) in times {
        writeln!(out, "{start},{latency}")?;
    }
    out.flush()
}

pub async fn naive(
    url: &str,
    cardholders: usize,
    seconds: u64,
    clients: &[usize],
    hot: bool,
) -> Result<()> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute(
        "DROP TABLE IF EXISTS naive_payments, naive_wallets, naive_merchants; \
         CREATE TABLE naive_wallets (user_id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0)); \
         CREATE TABLE naive_payments (id bigserial PRIMARY KEY, user_id bigint NOT NULL, merchant_id bigint NOT NULL, \
           amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now()); \
         CREATE TABLE naive_merchants (id bigint PRIMARY KEY, gross bigint NOT NULL, count bigint NOT NULL);",
    )
    .await?;
    c.execute(
        "INSERT INTO naive_wallets SELECT g, 1000000000 FROM generate_series(0, $1::bigint - 1) g",
        &[&(cardholders as i64)],
    )
    .await?;
    c.execute(
        "INSERT INTO naive_merchants SELECT g, 0, 0 FROM generate_series(0, 7) g",
        &[],
    )
    .await?;
    let mut best = (0usize, 0f64);
    for &n in clients {
        // Every client connects and prepares first; the clock and the CPU marks start once
        // all are ready, and end before any connection (and its backend's CPU count) goes.
        let ready = Arc::new(tokio::sync::Barrier::new(n + 1));
        let done = Arc::new(tokio::sync::Barrier::new(n + 1));
        let marked = Arc::new(tokio::sync::Barrier::new(n + 1));
        let mut tasks = Vec::new();
        for w in 0..n {
            let url = url.to_string();
            let (ready, done, marked) = (ready.clone(), done.clone(), marked.clone());
            tasks.push(tokio::spawn(async move {
                // Every barrier is reached whatever happens, so a failed client cannot
                // leave the others (or the caller) waiting.
                let prepared = async {
                    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    let st = [
                        c.prepare("SELECT balance FROM naive_wallets WHERE user_id = $1 FOR UPDATE").await?,
                        c.prepare("UPDATE naive_wallets SET balance = balance - $2 WHERE user_id = $1").await?,
                        c.prepare("INSERT INTO naive_payments (user_id, merchant_id, amount) VALUES ($1, $2, $3)").await?,
                        c.prepare("UPDATE naive_merchants SET gross = gross + $2, count = count + 1 WHERE id = $1").await?,
                    ];
                    anyhow::Ok((c, st))
                }
                .await;
                ready.wait().await;
                let deadline = Instant::now() + Duration::from_secs(seconds);
                let run = async {
                    let (c, [lock, debit, insert, totals]) = prepared?;
                    let mut h = latency_histogram();
                    let mut i = w as i64;
                    while Instant::now() < deadline {
                        i += 7919;
                        let (user, amount, merchant) = (i % cardholders as i64, 1 + i % 300, if hot { 0 } else { i % 8 });
                        let t = Instant::now();
                        c.batch_execute("BEGIN").await?;
                        let bal: i64 = c.query_one(&lock, &[&user]).await?.get(0);
                        if bal >= amount {
                            c.execute(&debit, &[&user, &amount]).await?;
                            c.execute(&insert, &[&user, &merchant, &amount]).await?;
                            if hot {
                                c.execute(&totals, &[&merchant, &amount]).await?;
                            }
                        }
                        c.batch_execute("COMMIT").await?;
                        h.saturating_record(t.elapsed().as_micros() as u64);
                    }
                    anyhow::Ok((c, h))
                }
                .await;
                done.wait().await;
                // The connection (and its backend, whose CPU the mark reads) closes only
                // once the caller has taken its last mark: a backend gone by then would
                // drop out of the count.
                marked.wait().await;
                run.map(|(_, h)| h)
            }));
        }
        ready.wait().await;
        let cpu = CpuMark::database_and_loader();
        done.wait().await;
        let cpu = cpu.per_database_later();
        marked.wait().await;
        let mut all = latency_histogram();
        for t in tasks {
            all.add(t.await??)?;
        }
        let rate = all.len() as f64 / seconds as f64;
        println!(
            "naive{}: {n} clients: {rate:.0} payments/s, p50 {:.2} ms, p99 {:.2} ms",
            if hot { " (hot row)" } else { "" },
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0
        );
        println!("  {}", cpu.per(all.len(), "payment"));
        if rate > best.1 {
            best = (n, rate);
        }
    }
    println!(
        "naive{} best: {:.0} payments/s at {} clients",
        if hot { " (hot row)" } else { "" },
        best.1,
        best.0
    );
    c.batch_execute("DROP TABLE IF EXISTS naive_payments, naive_wallets, naive_merchants")
        .await?;
    Ok(())
}

/// The server's group-commit counters from `/metrics`: batches, commits, and microseconds
/// spent writing batches.
async fn ledger_counters(client: &reqwest::Client, server: &Server) -> Option<[u64; 3]> {
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|v| v as u64)
    };
    Some([
        value("ledger_batches_total")?,
        value("ledger_commits_total")?,
        value("ledger_batch_write_microseconds_total")?,
    ])
}

#[cfg(test)]
mod tests {
    use super::Tail;

    /// 1,000 payments a second for 3 s, each 5 ms, or 60 ms where `slow` says so.
    fn run(slow: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        (0..3_000u64)
            .map(|i| {
                let start = i * 1_000;
                (start, if slow(i) { 60_000 } else { 5_000 })
            })
            .collect()
    }

    #[test]
    fn a_stall_puts_the_slow_payments_in_one_window() {
        // Every payment of 1.20–1.26 s waited for one stall.
        let mut times = run(|i| (1_200..1_230).contains(&i));
        let tail = Tail::of(&mut times, 60_000);
        assert_eq!((tail.slow_windows, tail.windows), (1, 30));
        // The stall's second has its p99 in the stall; the others do not.
        assert_eq!(tail.per_second, Some((5_000, 60_000)));
    }

    #[test]
    fn slow_payments_spread_over_the_run_fill_many_windows() {
        let mut times = run(|i| i % 100 == 7);
        times.reverse();
        let tail = Tail::of(&mut times, 60_000);
        assert_eq!((tail.slow_windows, tail.windows), (30, 30));
        assert_eq!(
            tail.to_string(),
            "tail: the payments at or above p99 fell in 30 of 30 tenths of a second; \
             p99 of each whole second 60.00–60.00 ms"
        );
    }
}
