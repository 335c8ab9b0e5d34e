//! `Idempotency-Key` on POST (API.md): the same key with the same body answers the
//! original response again (200 in place of 201, same body); with another body, 409.
//! Keys are scoped per caller (by token hash, and the member tenant a group admin acts in),
//! so two callers never collide.

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpResponse, ResponseError};
use onecard_schema::model::IdemBegin;
use sha2::{Digest, Sha256};

use crate::limits::{
    IDEMPOTENCY_KEY_CHARS_MAX, IDEMPOTENCY_PURGE_BATCH, IDEMPOTENCY_PURGE_S, IMPORT_BYTES_MAX,
};
use crate::problem::{ApiError, PROBLEM_JSON};
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";

/// Routes whose keys are kept with the money, in the same transaction (the wallet actors
/// handle them); this middleware leaves them alone.
pub const MONEY_ROUTES: &[&str] = &[
    "/api/v1/payments",
    "/api/v1/payments/{id}/refunds",
    "/api/v1/users/{id}/wallet/topups",
    "/api/v1/users/{id}/wallet/withdrawals",
    "/api/v1/wallets/topups/{id}/reversal",
    "/api/v1/me/arrears/repay",
    "/api/v1/collection-codes/{code}/payments",
];

/// The key of a request, validated; `Ok(None)` when it has none.
pub fn key_of(req: &actix_web::HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| bad_key())?;
    if key.is_empty()
        || key.chars().count() > IDEMPOTENCY_KEY_CHARS_MAX
        || key.chars().any(char::is_control)
    {
        return Err(bad_key());
    }
    Ok(Some(key.to_string()))
}

fn bad_key() -> ApiError {
    ApiError::bad_request(
        "invalid_idempotency_key",
        format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} visible characters"),
    )
}

/// What an idempotency key is bound to: the method, the path and the body bytes.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    h.update(body);
    h.finalize().into()
}

/// What a purge forgot: records of every other POST, and those kept with the money.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub requests: u64,
    pub money: u64,
}

/// Forgets the idempotency records older than the node's keep
/// (`ONECARD_IDEMPOTENCY_KEEP_DAYS`), `IDEMPOTENCY_PURGE_BATCH` per statement, so the
/// tables hold weeks of requests, not years. A retry with a forgotten key runs as a new
/// request (a payment's code has long expired by then, so it is declined).
pub async fn purge(state: &AppState) -> Result<Purged, ApiError> {
    let Ok(before) = state.clock.now().checked_sub(state.idempotency_keep) else {
        return Ok(Purged::default());
    };
    let store = &state.store;
    Ok(Purged {
        requests: crate::tasks::drain(IDEMPOTENCY_PURGE_BATCH, || {
            store.purge_idempotency(before, IDEMPOTENCY_PURGE_BATCH)
        })
        .await?,
        money: crate::tasks::drain(IDEMPOTENCY_PURGE_BATCH, || {
            store.purge_money_requests(before, IDEMPOTENCY_PURGE_BATCH)
        })
        .await?,
    })
}

/// The purge loop, every `IDEMPOTENCY_PURGE_S` on each node.
pub fn spawn_purge(state: std::sync::Arc<AppState>) {
    crate::tasks::every(
        state,
        std::time::Duration::from_secs(IDEMPOTENCY_PURGE_S),
        "idempotency purge",
        |state| async move {
            let gone = purge(&state).await?;
            if gone != Purged::default() {
                tracing::info!(
                    requests = gone.requests,
                    money = gone.money,
                    "idempotency records purged"
                );
            }
            Ok(())
        },
    );
}

/// A record still in progress after twice the request timeout belongs to a request that
/// can no longer finish: no request runs past its deadline (`crate::deadline`), so its
/// node stopped while it ran. A retry with the same body takes the key over and runs, rather
/// than being told `idempotency_in_progress` until the record is purged, weeks later.
fn stale_before(state: &AppState, now: jiff::Timestamp) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(2 * state.request_timeout)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(jiff::Timestamp::MIN)
}

/// A key taken for a request (`IdemBegin::New`). What became of it is recorded on a task of
/// its own (`settle`), so that it is recorded even if the request is given up on meanwhile
/// (its deadline passed, `crate::deadline`, or its client went away): a retry then replays
/// the answer rather than running again. A request given up on before its answer exists
/// gives the key back (`Drop`), so that a retry runs again rather than meeting
/// `idempotency_in_progress` until the record is stale (`stale_before`).
struct Taken {
    store: std::sync::Arc<dyn onecard_schema::Store>,
    key: Option<(String, String)>,
}

impl Taken {
    /// Records the answer (status and body), or gives the key back (`None`).
    async fn settle(mut self, answer: Option<(u16, Vec<u8>)>) {
        if let Some(task) = self.spawn(answer) {
            let _ = task.await;
        }
    }

    fn spawn(&mut self, answer: Option<(u16, Vec<u8>)>) -> Option<tokio::task::JoinHandle<()>> {
        let (scope, key) = self.key.take()?;
        // Not on a runtime only while the process stops; the record is then stale in time.
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let store = self.store.clone();
        Some(rt.spawn(async move {
            let done = match answer {
                Some((status, body)) => store.idem_finish(scope, key, status, body).await,
                None => store.idem_abort(scope, key).await,
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not record what became of an idempotency key");
            }
        }))
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.spawn(None);
    }
}

pub async fn idempotency(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.method() != Method::POST
        || !req.path().starts_with("/api/")
        || MONEY_ROUTES.contains(&&*crate::telemetry::route(&req))
    {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let key = match key_of(req.request()) {
        Ok(Some(k)) => k,
        Ok(None) => return Ok(next.call(req).await?.map_into_boxed_body()),
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // Read the body (bounded) to fingerprint it, then hand it on unchanged.
    let body =
        match crate::extract::read_limited(req.take_payload(), IMPORT_BYTES_MAX, "malformed_body")
            .await
        {
            Ok(body) => body,
            Err(e) => return Ok(req.into_response(e.error_response())),
        };
    let fingerprint = fingerprint(req.method().as_str(), req.path(), &body);
    // An app's signed request was authenticated before this (`apps::verify` runs first):
    // its keys are its own, like a token's.
    let app = req
        .extensions()
        .get::<crate::auth::AppCaller>()
        .and_then(|a| a.0.subject);
    let mut scope = match (app, crate::auth::bearer(req.request())) {
        (Some(app), _) => format!("app:{app}"),
        (None, Some(token)) => hex::encode(crate::auth::hash_token(token)),
        (None, None) => "anonymous".to_string(),
    };
    // A group admin's keys are their own in each member tenant they act in (a value that
    // is not a tenant id fails in the handler's access check).
    if let Some(member) = req.headers().get(crate::auth::MEMBER_TENANT_HEADER) {
        let member = member.as_bytes();
        scope.push('@');
        scope.push_str(&hex::encode(&member[..member.len().min(64)]));
    }
    let now = state.clock.now();
    let begin = state
        .store
        .idem_begin(
            scope.clone(),
            key.clone(),
            fingerprint,
            now,
            stale_before(&state, now),
        )
        .await;
    match begin {
        Err(e) => Ok(req.into_response(ApiError::from(e).error_response())),
        Ok(IdemBegin::Conflict) => Ok(req.into_response(
            ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was used with another request",
            )
            .error_response(),
        )),
        Ok(IdemBegin::InProgress) => {
            let mut res = ApiError::conflict(
                "idempotency_in_progress",
                "the first request with this Idempotency-Key is still running",
            )
            .error_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            Ok(req.into_response(res))
        }
        Ok(IdemBegin::Replay { status, body }) => {
            let status = if status == 201 {
                StatusCode::OK
            } else {
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
            };
            let content_type = if status.as_u16() >= 400 {
                PROBLEM_JSON
            } else {
                "application/json"
            };
            let res = HttpResponse::build(status)
                .insert_header((header::CONTENT_TYPE, content_type))
                .insert_header(("idempotent-replayed", "true"))
                .body(body);
            Ok(req.into_response(res))
        }
        Ok(IdemBegin::New) => {
            req.set_payload(Payload::from(body));
            let taken = Taken {
                store: state.store.clone(),
                key: Some((scope, key)),
            };
            let res = match next.call(req).await {
                Ok(res) => res,
                Err(e) => {
                    taken.settle(None).await;
                    return Err(e);
                }
            };
            let status = res.status();
            let (http_req, res) = res.into_parts();
            let (head, res_body) = res.into_parts();
            let bytes = body::to_bytes(res_body).await.unwrap_or_default();
            // Our failure (5xx): the key is given back, so that the retry runs again.
            let answer = (!status.is_server_error()).then(|| (status.as_u16(), bytes.to_vec()));
            taken.settle(answer).await;
            let res = head.set_body(BoxBody::new(bytes));
            Ok(ServiceResponse::new(http_req, res))
        }
    }
}
