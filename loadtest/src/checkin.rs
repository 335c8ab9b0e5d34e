//! `loadtest checkin`: a lecture hall's worth of people checking in to one event at once,
//! each from their own phone (token), then everyone scanning again (the answer is their
//! first check-in, written nothing). Every check-in writes its row and its outbox event
//! in one transaction, and all of them touch the one event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use hyper::header::HeaderValue;
use serde_json::{json, Value};

use super::conn::Conn;
use super::pay::{import_people, post, user_token, SETUP_CONCURRENCY};
use super::{connect, latency_histogram, new_tenant, Server, Target};

/// People named per designation request (the API's cap).
const DESIGNATE_CHUNK: usize = 1_000;

struct Hall {
    admin: String,
    event: String,
    code: String,
    people: Vec<HeaderValue>,
}

async fn setup(server: &Server, client: &reqwest::Client, people: usize) -> Result<Hall> {
    let base = &server.base;
    let admin = new_tenant(server, client, "Check-in", "advanced").await?;
    let ids = import_people(server, client, &admin, people).await?;
    let now = jiff::Timestamp::now();
    let event = post(
        client,
        format!("{base}/api/v1/events"),
        &admin,
        json!({"name": "Lecture", "starts_at": now.to_string(),
               "ends_at": (now + jiff::SignedDuration::from_hours(2)).to_string(),
               "designated": true}),
        None,
    )
    .await?;
    let event_id = event["id"].as_str().context("event id")?.to_string();
    for chunk in ids.chunks(DESIGNATE_CHUNK) {
        post(
            client,
            format!("{base}/api/v1/events/{event_id}/attendees"),
            &admin,
            json!({ "user_ids": chunk }),
            None,
        )
        .await?;
    }
    let tokens: Vec<Result<HeaderValue>> = stream::iter(ids)
        .map(|id| {
            let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
            async move {
                let token = user_token(&client, &base, &admin, &id).await?;
                Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    Ok(Hall {
        admin,
        event: event_id,
        code: event["code"].as_str().context("code")?.to_string(),
        people: tokens.into_iter().collect::<Result<Vec<_>>>()?,
    })
}

/// Everyone checks in once, `connections` at a time; answers the check-ins a second.
async fn pass(
    server: &Server,
    hall: &Arc<Hall>,
    connections: usize,
    want: u16,
    label: &str,
) -> Result<f64> {
    let cpu = server.cpu_mark();
    let next = Arc::new(AtomicUsize::new(0));
    let body = serde_json::to_vec(&json!({ "code": hall.code }))?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut conn = Conn::new(&server.base, None)?;
        let (hall, next, body) = (hall.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut wrong = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(person) = hall.people.get(i) else {
                    break;
                };
                let t = Instant::now();
                match conn
                    .post_json_as("/api/v1/check-ins", body.clone(), person, None)
                    .await
                {
                    Ok((status, _)) if status.as_u16() == want => {
                        h.saturating_record(t.elapsed().as_micros() as u64);
                    }
                    _ => wrong += 1,
                }
            }
            Ok::<_, anyhow::Error>((h, wrong))
        }));
    }
    let mut all = latency_histogram();
    let mut wrong = 0;
    for t in tasks {
        let (h, w) = t.await??;
        all.add(h)?;
        wrong += w;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = all.len() as f64 / secs;
    println!(
        "{label}: {} people, {connections} at a time, {secs:.2} s: {rate:.0} check-ins/s, \
         p50 {:.2} ms, p99 {:.2} ms, not {want}: {wrong}",
        hall.people.len(),
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("  {}", cpu.per(server, all.len(), "check-in"));
    if wrong > 0 {
        bail!("{wrong} answers were not {want}");
    }
    Ok(rate)
}

pub(crate) async fn run(target: Target, people: usize, connections: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let hall = Arc::new(setup(&server, &client, people).await?);
    println!(
        "checkin: one designated event, {people} people, against {}",
        server.base
    );
    let first = pass(&server, &hall, connections, 201, "first scans").await?;
    let again = pass(&server, &hall, connections, 200, "scanned again").await?;
    let event: Value = client
        .get(format!("{}/api/v1/events/{}", server.base, hall.event))
        .bearer_auth(&hall.admin)
        .send()
        .await?
        .json()
        .await?;
    if event["checked_in"].as_u64() != Some(people as u64) {
        bail!(
            "the event counts {} check-ins, not {people}",
            event["checked_in"]
        );
    }
    println!(
        "checked in: {people} of {people}; again / first: {:.2}",
        again / first
    );
    Ok(())
}
