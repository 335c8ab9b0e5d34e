//! Per-token rate limits (governor), keyed by the SHA-256 of the bearer token, or of the
//! client address for anonymous requests and apps' signed ones (an app's own budget is
//! counted once its signature holds, `apps::verify`). Probes are never limited.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::limits::RATE_LIMIT_TRIM_S;
use crate::problem::ApiError;

pub struct Limiter {
    inner: DefaultKeyedRateLimiter<[u8; 32]>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(per_s: u32, burst: u32) -> Arc<Self> {
        Self::of(Quota::per_second(non_zero(per_s)).allow_burst(non_zero(burst)))
    }

    /// `per_min` a minute after a burst of `burst`.
    pub fn per_minute(per_min: u32, burst: u32) -> Arc<Self> {
        Self::of(Quota::per_minute(non_zero(per_min)).allow_burst(non_zero(burst)))
    }

    fn of(quota: Quota) -> Arc<Self> {
        Arc::new(Self {
            inner: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        })
    }

    /// Drops keys idle long enough to be full again; governor never evicts on its own.
    pub fn spawn_trim(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(RATE_LIMIT_TRIM_S));
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.inner.retain_recent();
                limiter.inner.shrink_to_fit();
            }
        });
    }

    /// `Err(seconds to wait)` when the key is over its quota.
    pub fn check(&self, key: &[u8; 32]) -> Result<(), u64> {
        self.inner.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

/// The key of a client address, for limits by address.
pub fn address_key(what: &str, addr: Option<std::net::SocketAddr>) -> [u8; 32] {
    let ip: Option<IpAddr> = addr.map(|a| a.ip());
    Sha256::digest(format!("{what}:{ip:?}").as_bytes()).into()
}

fn key_of(req: &ServiceRequest) -> [u8; 32] {
    // An app's signed request is counted here by address, like any request without a
    // token, and against the app's own budget once it is verified (`apps::verify`).
    if req.headers().contains_key(crate::apps::APP_KEY) {
        return address_key("ip", req.peer_addr());
    }
    if let Some(token) = crate::auth::bearer(req.request()) {
        return Sha256::digest(token.as_bytes()).into();
    }
    address_key("ip", req.peer_addr())
}

pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let path = req.path();
    let exempt = matches!(path, "/healthz" | "/readyz" | "/metrics");
    if !exempt {
        if let Some(limiter) = req.app_data::<web::Data<Limiter>>() {
            if let Err(retry_after_s) = limiter.check(&key_of(&req)) {
                metrics::counter!("rate_limited_total").increment(1);
                let res = ApiError::RateLimited {
                    retry_after_s: retry_after_s.max(1),
                }
                .error_response();
                return Ok(req.into_response(res));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
