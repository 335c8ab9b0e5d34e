//! `loadtest ws`: many websocket connections on one node, then two latencies.
//!
//! 1. **Connections**: opens `--connections` websockets (client sockets bound round-robin
//!    to 127.0.0.2, .3, … so the source ports never run out), each subscribed to a topic
//!    of its own, and reports the server's RSS growth per connection.
//! 2. **Payment to till**: `--tills` tills each subscribed to their `terminal:` topic;
//!    payments at a steady `--rate` for `--seconds`; for each payment, the time from its
//!    201 at the loader to its event at the till's websocket.
//! 3. **Fan-out**: `--dashboards` of the open connections subscribe to the `tenant` topic;
//!    `--fanout-events` single payments, one at a time; for each subscriber and event, the
//!    time from the payment's 201 to the event's arrival.
//!
//! An event that arrives before its 201 counts as 0 ms.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::SinkExt;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::conn::Conn;
use super::pay::{pay, post, prefetch_codes, setup};
use super::{connect, Target};

pub struct WsArgs {
    pub connections: usize,
    pub source_ips: u8,
    pub tills: usize,
    pub rate: u64,
    pub seconds: u64,
    pub dashboards: usize,
    pub fanout_events: usize,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens one websocket from `source` with small client buffers (the loader holds tens of
/// thousands) and subscribes it; returns after `subscribed`.
async fn open(server: SocketAddr, source: Ipv4Addr, url: &str, topic: &str) -> Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(server).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    subscribe(&mut ws, topic).await?;
    Ok(ws)
}

async fn subscribe(ws: &mut Ws, topic: &str) -> Result<()> {
    ws.send(Message::text(
        json!({"op": "subscribe", "topic": topic}).to_string(),
    ))
    .await?;
    loop {
        match ws.next().await.context("closed while subscribing")?? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t)?;
                match v["op"].as_str() {
                    Some("subscribed") => return Ok(()),
                    Some("error") => bail!("subscribe refused: {v}"),
                    _ => {}
                }
            }
            Message::Close(c) => bail!("closed while subscribing: {c:?}"),
            _ => {}
        }
    }
}

/// Payment id and arrival time of each event a connection saw.
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// The payment id of an event frame, found without parsing the whole frame (the loader
/// reads tens of thousands at once).
fn payment_id(text: &str) -> Option<String> {
    if !text.starts_with(r#"{"op":"event""#) {
        return None;
    }
    let data = text.find(r#""data":{"#)? + 7;
    let rest = &text[data..];
    let at = [r#"{"id":""#, r#","id":""#]
        .iter()
        .filter_map(|k| rest.find(k).map(|i| i + k.len()))
        .min()?;
    let end = at + rest[at..].find('"')?;
    Some(rest[at..end].to_string())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(target: Target, a: WsArgs) -> Result<()> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < a.connections + a.tills + 1024 => println!(
            "ws: note: this process may open {n} files; {} connections need more",
            a.connections
        ),
        Ok(_) => {}
        Err(e) => println!("ws: could not raise the open file limit: {e}"),
    }
    let server = connect(&target)?;
    let addr: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .context("a http://ip:port base URL")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.tills * 2)
        .build()?;
    let t0 = Instant::now();
    let cardholders = 1_000;
    let setup = setup(&server, &client, a.tills, cardholders, false, "standard").await?;
    println!(
        "ws: set up {cardholders} cardholders and {} tills in {:.1} s",
        a.tills,
        t0.elapsed().as_secs_f64()
    );
    let url = format!("ws://{addr}/api/v1/ws?token={}", setup.admin);

    // 1. Connections.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = server.rss_kib();
    let t1 = Instant::now();
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let dashboards_ready = Arc::new(AtomicUsize::new(0));
    let arrivals: Arrivals = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut commands = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        commands.push(tx);
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % a.source_ips.max(1) as usize) as u8);
        let (url, gate, ready, failed, dashboards_ready, arrivals) = (
            url.clone(),
            gate.clone(),
            ready.clone(),
            failed.clone(),
            dashboards_ready.clone(),
            arrivals.clone(),
        );
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let topic = format!("user:{}", uuid::Uuid::new_v4());
            let mut ws = match open(addr, source, &url, &topic).await {
                Ok(ws) => ws,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("ws: connection {i} failed: {e:#}");
                    }
                    return;
                }
            };
            drop(permit);
            ready.fetch_add(1, Ordering::Relaxed);
            let mut dashboard = false;
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        None => break,
                        Some(()) if !dashboard => {
                            if subscribe(&mut ws, "tenant").await.is_ok() {
                                dashboard = true;
                                dashboards_ready.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(()) => {}
                    },
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            let at = Instant::now();
                            if let Some(id) = payment_id(&t) {
                                seen.push((id, at));
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut seen);
        });
    }
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < a.connections {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_secs = t1.elapsed().as_secs_f64();
    let held = ready.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_held = server.rss_kib();
    println!(
        "ws connections: {held} open and subscribed ({} failed) in {open_secs:.1} s = {:.0} handshakes/s, from {} source addresses",
        failed.load(Ordering::Relaxed),
        held as f64 / open_secs,
        a.source_ips
    );
    if let (Some(before), Some(after)) = (rss_before, rss_held) {
        println!(
            "ws memory: server RSS {before} KiB before, {after} KiB with {held} connections: {:.1} KiB per connection",
            after.saturating_sub(before) as f64 / held.max(1) as f64
        );
    }

    // 2. Payment to till, at a steady rate.
    let mut till_ws = Vec::new();
    for (i, token) in setup.tills.iter().enumerate() {
        let me: Value = client
            .get(format!("{}/api/v1/terminal", server.base))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let topic = me["topic"].as_str().context("terminal topic")?.to_string();
        let url = format!("ws://{addr}/api/v1/ws?token={token}");
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % a.source_ips.max(1) as usize) as u8);
        till_ws.push(open(addr, source, &url, &topic).await?);
    }
    let total = (a.rate * a.seconds) as usize;
    let codes = prefetch_codes(&client, &server.base, &setup.cardholders, total).await?;
    let answered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let till_seen: Arrivals = Arc::default();
    let mut readers = Vec::new();
    for mut ws in till_ws {
        let till_seen = till_seen.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let at = Instant::now();
                    if let Some(id) = payment_id(&t) {
                        till_seen
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, at));
                    }
                }
            }
        }));
    }
    let per_till: Vec<Vec<String>> = {
        let mut v = vec![Vec::new(); a.tills];
        for (i, c) in codes.into_iter().enumerate() {
            v[i % a.tills].push(c);
        }
        v
    };
    let t2 = Instant::now();
    let mut payers = Vec::new();
    for (till, codes) in setup.tills.iter().cloned().zip(per_till) {
        let answered = answered.clone();
        let mut conn = Conn::new(&server.base, Some(&till))?;
        let period = Duration::from_secs_f64(a.tills as f64 / a.rate as f64);
        payers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut http = histogram();
            for (n, code) in codes.into_iter().enumerate() {
                tick.tick().await;
                let t = Instant::now();
                let res = pay(&mut conn, &code, 1 + (n as i64 * 37 % 300)).await;
                if let Ok((status, reply)) = res {
                    if status == 201 {
                        let body: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
                        let at = Instant::now();
                        http.saturating_record(t.elapsed().as_micros() as u64);
                        if let Some(id) = body["id"].as_str() {
                            answered
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(id.to_string(), at);
                        }
                    }
                }
            }
            http
        }));
    }
    let mut http = histogram();
    for p in payers {
        http.add(p.await?)?;
    }
    let pay_secs = t2.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (till_lat, missing) = latencies(&answered, &till_seen, 1);
    println!(
        "ws payment→till: {} payments in {pay_secs:.1} s = {:.0}/s (HTTP p50 {:.2} ms, p99 {:.2} ms); 201→event at the till p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {missing} events not seen",
        http.len(),
        http.len() as f64 / pay_secs,
        ms(&http, 0.5),
        ms(&http, 0.99),
        ms(&till_lat, 0.5),
        ms(&till_lat, 0.99),
        till_lat.max() as f64 / 1000.0,
    );
    for r in readers {
        r.abort();
    }

    // 3. Fan-out to dashboards.
    let dashboards = a.dashboards.min(held);
    for tx in commands.iter().take(dashboards) {
        let _ = tx.send(()).await;
    }
    while dashboards_ready.load(Ordering::Relaxed) < dashboards {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cardholder = setup.cardholders[0].clone();
    for n in 0..a.fanout_events {
        let c = post(
            &client,
            format!("{}/api/v1/me/payment-codes", server.base),
            &cardholder,
            json!({}),
            None,
        )
        .await?;
        let p = post(
            &client,
            format!("{}/api/v1/payments", server.base),
            &setup.tills[0],
            json!({"code": c["code"], "amount": 100 + n}),
            Some(uuid::Uuid::new_v4().to_string()),
        )
        .await?;
        let at = Instant::now();
        answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(p["id"].as_str().context("id")?.to_string(), at);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(commands); // every connection task stops and hands in what it saw
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fan, missing) = latencies(&answered, &arrivals, dashboards);
    println!(
        "ws fan-out: {} events to {dashboards} dashboard subscribers = {} deliveries; 201→event p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {missing} deliveries missing",
        a.fanout_events,
        fan.len(),
        ms(&fan, 0.5),
        ms(&fan, 0.99),
        fan.max() as f64 / 1000.0,
    );
    Ok(())
}

/// For each answered payment, the delay from its 201 to each arrival of its event
/// (0 when the event came first), and how many expected arrivals never came.
fn latencies(
    answered: &Mutex<HashMap<String, Instant>>,
    arrivals: &Arrivals,
    expected: usize,
) -> (Histogram<u64>, usize) {
    let answered = answered.lock().unwrap_or_else(|p| p.into_inner());
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = histogram();
    let mut per_payment: HashMap<&str, usize> = HashMap::new();
    for (id, at) in arrivals.iter() {
        if let Some(t201) = answered.get(id) {
            h.saturating_record(at.saturating_duration_since(*t201).as_micros() as u64);
            *per_payment.entry(id.as_str()).or_default() += 1;
        }
    }
    let missing = answered
        .keys()
        .map(|id| expected.saturating_sub(per_payment.get(id.as_str()).copied().unwrap_or(0)))
        .sum();
    (h, missing)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_payment_id_not_another_id() {
        let f = r#"{"op":"event","topic":"tenant","seq":3,"type":"payment.succeeded","data":{"amount":1,"breakdown":{},"id":"P1","merchant_id":"M"}}"#;
        assert_eq!(super::payment_id(f).as_deref(), Some("P1"));
        let f = r#"{"op":"event","topic":"t","seq":1,"type":"x","data":{"id":"P2","user_id":"U"}}"#;
        assert_eq!(super::payment_id(f).as_deref(), Some("P2"));
        assert_eq!(super::payment_id(r#"{"op":"pong"}"#), None);
    }
}
