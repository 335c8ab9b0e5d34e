//! Every request has a deadline (`ONECARD_REQUEST_TIMEOUT_MS`). A store that is alive but
//! does not answer (a storage stall, a lock held by hand, a frozen server whose kernel
//! still acknowledges what it is sent) would otherwise hold a till, and the HTTP worker's
//! request, for as long as it lasts. Past the deadline the request is answered 503
//! `unavailable` with `Retry-After`, and the server stops waiting for it.
//!
//! What the request started may still complete. A money operation is decided and written
//! by its wallet actor, which goes on; its idempotency record is written with it, so a
//! retry with the same Idempotency-Key answers what was done, or does it once. Any other
//! keyed POST records its answer if it has one, or gives its key back
//! (`crate::idempotency`), so that the retry replays it or runs again.
//!
//! `/readyz` bounds its own waits, shorter, and answers which of the store and the bus
//! failed. Only the wait for the response is bounded: a websocket's handshake answers at
//! once and its session lives on; a response body streams as long as it takes.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::problem::ApiError;
use crate::state::AppState;

pub async fn deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.request_timeout);
    // Readiness bounds its own waits (`READY_PING_MS`), so as to say which service failed.
    let Some(limit) = limit.filter(|_| req.path() != "/readyz") else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(res) => Ok(res?.map_into_boxed_body()),
        // An error, not a response: a response needs the request, which the router
        // must hold alone while it routes (a clone kept here would make it panic).
        // actix answers the error with its problem+json response all the same.
        Err(_) => Err(ApiError::Unavailable(format!(
            "no answer within {} ms (ONECARD_REQUEST_TIMEOUT_MS); what the request started may \
             still complete: retry with the same Idempotency-Key",
            limit.as_millis()
        ))
        .into()),
    }
}
