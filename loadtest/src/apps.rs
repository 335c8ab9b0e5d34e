//! `loadtest apps`: what an app's signed request costs against an admin's bearer request
//! for the same read, side by side in one run (bearer, signed, bearer again, so a drift
//! of the machine shows). A signed request costs the server an app lookup, an HMAC and a
//! nonce written to the store; a bearer one a token found in the node's cache.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use hyper::header::HeaderValue;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::conn::Conn;
use super::{connect, latency_histogram, new_tenant, pay, Server, Target};

/// One phase: `connections` clients reading `path` for `seconds`, each request signed by
/// `sign` (or sent with the bearer token alone).
async fn phase(
    server: &Server,
    token: Option<&str>,
    path: &str,
    app: Option<(String, String)>,
    connections: usize,
    seconds: u64,
    label: &str,
) -> Result<f64> {
    let cpu = server.cpu_mark();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in 0..connections {
        let mut conn = Conn::new(&server.base, token)?;
        let (path, app) = (path.to_string(), app.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let (mut errors, mut n) = (0u64, 0u64);
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                let answer = match &app {
                    None => conn.get(&path).await,
                    Some((key, secret)) => {
                        let headers = signed_headers(key, secret, &path, client, n)?;
                        conn.get_with(&path, &headers).await
                    }
                };
                match answer {
                    Ok((status, _)) if status.is_success() => {
                        h.saturating_record(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((h, errors))
        }));
    }
    let mut all = latency_histogram();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        all.add(h)?;
        errors += e;
    }
    let rate = all.len() as f64 / seconds as f64;
    println!(
        "{label}: {connections} connections, {seconds} s: {rate:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("  {}", cpu.per(server, all.len(), "request"));
    Ok(rate)
}

/// The four headers of a signed GET (docs/OPERATIONS.md, "Open platform").
fn signed_headers(
    key: &str,
    secret: &str,
    path: &str,
    client: usize,
    n: u64,
) -> Result<[(&'static str, HeaderValue); 4]> {
    let timestamp = jiff::Timestamp::now().as_second();
    let nonce = format!("lt{client:04}x{n:012}x{timestamp}");
    let text = format!(
        "GET\n{path}\n{timestamp}\n{nonce}\n{}",
        hex::encode(Sha256::digest(b""))
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())?;
    mac.update(text.as_bytes());
    Ok([
        ("x-app-key", HeaderValue::from_str(key)?),
        (
            "x-timestamp",
            HeaderValue::from_str(&timestamp.to_string())?,
        ),
        ("x-nonce", HeaderValue::from_str(&nonce)?),
        (
            "x-signature",
            HeaderValue::from_str(&hex::encode(mac.finalize().into_bytes()))?,
        ),
    ])
}

pub(crate) async fn run(target: Target, connections: usize, seconds: u64) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let admin = new_tenant(&server, &client, "Apps", "advanced").await?;
    let user = pay::post(
        &client,
        server.url("/api/v1/users")?.to_string(),
        &admin,
        json!({"name": "Li Lei", "number": "S0000001"}),
        None,
    )
    .await?;
    let app = pay::post(
        &client,
        server.url("/api/v1/apps")?.to_string(),
        &admin,
        json!({"name": "Gate", "kind": "headless", "scopes": ["directory_read"]}),
        None,
    )
    .await?;
    let creds = (
        app["app_key"].as_str().context("app key")?.to_string(),
        app["app_secret"]
            .as_str()
            .context("app secret")?
            .to_string(),
    );
    let path = format!("/api/v1/users/{}", user["id"].as_str().context("user id")?);
    println!(
        "apps: GET {path}, bearer then signed then bearer, against {}",
        server.base
    );
    let a = phase(
        &server,
        Some(&admin),
        &path,
        None,
        connections,
        seconds,
        "bearer",
    )
    .await?;
    let b = phase(
        &server,
        None,
        &path,
        Some(creds),
        connections,
        seconds,
        "signed",
    )
    .await?;
    let c = phase(
        &server,
        Some(&admin),
        &path,
        None,
        connections,
        seconds,
        "bearer",
    )
    .await?;
    println!(
        "signed / bearer: {:.2} (bearer {a:.0} and {c:.0} req/s around signed {b:.0})",
        2.0 * b / (a + c)
    );
    Ok(())
}
