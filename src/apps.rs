//! Signed requests of the open platform's apps (SPEC §12). An app sends no bearer
//! token; it signs each request with its secret:
//!
//! ```text
//! X-App-Key:   <app id>
//! X-Timestamp: <unix seconds>            (within ±5 minutes of the server's clock)
//! X-Nonce:     <8 to 64 of A-Z a-z 0-9 _ ->  (never twice for one app)
//! X-Signature: hex(HMAC-SHA256(secret, METHOD \n PATH?QUERY \n TIMESTAMP \n NONCE \n
//!              hex(SHA-256(body))))
//! ```
//!
//! `verify`, a middleware, checks all of that before any extractor runs and leaves the
//! app's `Caller` in the request; `Auth<A>` then admits it where the access rule names a
//! scope the app holds. The nonce is recorded only once the signature holds, so nobody
//! can spend an app's nonces without its secret: in Redis when the node has it, else in
//! the store.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, ResponseError};
use hmac::{Hmac, KeyInit, Mac};
use jiff::SignedDuration;
use onecard_schema::ids::AppId;
use onecard_schema::model::TokenKind;
use sha2::{Digest, Sha256};

use crate::auth::{request_id, AppCaller, Caller};
use crate::limits::{APP_CLOCK_WINDOW_S, APP_NONCE_KEEP_S, JSON_BODY_BYTES_MAX};
use crate::problem::ApiError;
use crate::ratelimit::Limiter;
use crate::state::AppState;

pub const APP_KEY: &str = "x-app-key";
pub const TIMESTAMP: &str = "x-timestamp";
pub const NONCE: &str = "x-nonce";
pub const SIGNATURE: &str = "x-signature";

/// The text an app signs.
pub fn canonical(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

/// The MAC of `canonical` with `secret`: an app sends it hex-encoded as `X-Signature`.
fn mac(secret: &str, canonical: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any length");
    mac.update(canonical.as_bytes());
    mac
}

/// `X-Signature` for `canonical`: how the server signs its webhook deliveries to an app.
pub fn sign(secret: &str, canonical: &str) -> String {
    hex::encode(mac(secret, canonical).finalize().into_bytes())
}

/// A JSON POST of `body` to `url`, signed with `secret` as the server signs everything it
/// sends out (webhook deliveries, identity endpoints, the text gateway): `X-Timestamp`,
/// `X-Nonce` and `X-Signature` over `canonical`. The caller adds its own headers.
pub fn signed_post(
    client: &reqwest::Client,
    url: reqwest::Url,
    secret: &str,
    timestamp: i64,
    nonce: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let text = canonical("POST", &path, timestamp, nonce, &body);
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP, timestamp.to_string())
        .header(NONCE, nonce)
        .header(SIGNATURE, sign(secret, &text))
        .body(body)
}

fn valid_nonce(n: &str) -> bool {
    (8..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Authenticates a request that carries `X-App-Key`; passes every other one through.
pub async fn verify(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.headers().contains_key(APP_KEY) {
        let authenticated = authenticate(&mut req).await.and_then(|caller| {
            // The app's own budget, counted only once the request is known to be the
            // app's: its key is public, and anyone could spend a budget keyed by it
            // before that (unsigned requests are limited by address, `ratelimit`).
            if let (Some(limiter), Some(app)) =
                (req.app_data::<web::Data<Limiter>>(), caller.subject)
            {
                let key: [u8; 32] = Sha256::digest(format!("app:{app}").as_bytes()).into();
                limiter
                    .check(&key)
                    .map_err(|retry_after_s| ApiError::RateLimited {
                        retry_after_s: retry_after_s.max(1),
                    })?;
            }
            Ok(caller)
        });
        match authenticated {
            Ok(caller) => {
                req.extensions_mut().insert(AppCaller(caller));
            }
            Err(e) => return Ok(req.into_response(e.error_response())),
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

async fn authenticate(req: &mut ServiceRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let bad = |detail: &str| ApiError::credentials("bad_signature", detail);
    let app: AppId = header(APP_KEY)
        .and_then(|k| k.trim().parse().ok())
        .ok_or(ApiError::Unauthorized)?;
    let timestamp: i64 = header(TIMESTAMP)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("X-Timestamp must be the request's time in unix seconds"))?;
    let nonce = header(NONCE)
        .filter(|n| valid_nonce(n))
        .ok_or_else(|| bad("X-Nonce must be 8 to 64 of A-Z, a-z, 0-9, _ and -"))?;
    let signature = header(SIGNATURE)
        .and_then(|s| hex::decode(s).ok())
        .filter(|s| s.len() == 32)
        .ok_or_else(|| bad("X-Signature must be 64 hex digits"))?;
    let now = state.clock.now();
    if now.as_second().abs_diff(timestamp) > APP_CLOCK_WINDOW_S.unsigned_abs() {
        return Err(ApiError::credentials(
            "stale_timestamp",
            format!(
                "X-Timestamp is more than {APP_CLOCK_WINDOW_S} s from the server's clock ({})",
                now.as_second()
            ),
        ));
    }
    let body =
        crate::extract::read_limited(req.take_payload(), JSON_BODY_BYTES_MAX, "malformed_body")
            .await?;
    req.set_payload(Payload::from(body.clone()));
    let entry = match state.apps.get(&app) {
        Some(entry) => entry,
        None => {
            let entry = Arc::new(
                state
                    .store
                    .lookup_app(app)
                    .await?
                    .ok_or(ApiError::Unauthorized)?,
            );
            state.apps.put(app, entry.clone());
            entry
        }
    };
    let (tenant, edition, found) = &*entry;
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_string(), |p| p.as_str().to_string());
    let text = canonical(req.method().as_str(), &path, timestamp, &nonce, &body);
    let secret = state.keys.app_secret(found.id, found.secret_version);
    // Constant time.
    mac(&secret, &text).verify_slice(&signature).map_err(|_| {
        bad("the signature does not match this request (method, path and query, timestamp, nonce and body) and the app's current secret")
    })?;
    // With Redis (every deployment of several nodes has it) the nonce goes there, which
    // costs no commit; without, the store keeps it.
    let fresh = match state
        .bus
        .use_nonce(found.id, &nonce, APP_NONCE_KEEP_S.unsigned_abs())
        .await
    {
        Some(answer) => answer.map_err(|e| ApiError::Unavailable(format!("Redis: {e}")))?,
        None => state.store.use_app_nonce(found.id, nonce, now).await?,
    };
    if !fresh {
        return Err(ApiError::credentials(
            "nonce_reused",
            "this app sent this X-Nonce before: a new request needs a new nonce",
        ));
    }
    Ok(Caller {
        kind: TokenKind::App,
        tenant: Some(*tenant),
        subject: Some(found.id.0),
        role: None,
        grants: None,
        scopes: Some(Arc::new(found.scopes.clone())),
        edition: Some(*edition),
        request_id: request_id(req.request()),
        via_group: None,
    })
}

/// Forgets nonces older than the clock window allows to come back, every few minutes.
pub fn spawn_nonce_purge(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        std::time::Duration::from_secs(APP_NONCE_KEEP_S as u64 / 2),
        "app nonce purge",
        |state| async move {
            let before = state.clock.now() - SignedDuration::from_secs(APP_NONCE_KEEP_S);
            state.store.purge_app_nonces(before).await?;
            Ok(())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_text_names_every_part_and_the_body_by_its_hash() {
        let text = canonical(
            "POST",
            "/api/v1/users?x=1",
            1_700_000_000,
            "n0nce-01",
            b"{}",
        );
        assert_eq!(
            text,
            "POST\n/api/v1/users?x=1\n1700000000\nn0nce-01\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let sign = |secret| hex::encode(mac(secret, &text).finalize().into_bytes());
        assert_eq!(sign("secret").len(), 64);
        assert_ne!(sign("secret"), sign("secret2"));
    }

    #[test]
    fn nonces_are_8_to_64_url_safe_characters() {
        assert!(valid_nonce("abcdEF12"));
        assert!(valid_nonce(&"a".repeat(64)));
        assert!(!valid_nonce("short"));
        assert!(!valid_nonce(&"a".repeat(65)));
        assert!(!valid_nonce("has space"));
    }
}
