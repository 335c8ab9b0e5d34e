//! Shared pieces of the money handlers: turning a wallet's answer into HTTP.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use onecard_actors::wallet::{Answer, IdemKey, Outcome};

use crate::auth::Caller;
use crate::problem::ApiError;

/// The idempotency identity of a money request: the caller's scope, the key, and the
/// request's fingerprint.
pub fn idem(caller: &Caller, key: String, hash: [u8; 32]) -> IdemKey {
    IdemKey {
        scope: caller.scope(),
        key,
        hash,
    }
}

/// A wallet answer as an HTTP response; a replay answers 200 where the original was 201.
pub fn respond(outcome: Outcome, fresh: StatusCode) -> Result<HttpResponse, ApiError> {
    let (status, body, replayed) = match outcome {
        Outcome::Decided {
            answer: Answer::Payment { status, .. },
            body,
            ..
        } => (status, body, false),
        Outcome::Decided { body, .. } => (fresh.as_u16(), body, false),
        Outcome::Replay { status, body } => (if status == 201 { 200 } else { status }, body, true),
    };
    let mut res = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    res.content_type("application/json");
    if replayed {
        res.insert_header(("idempotent-replayed", "true"));
    }
    Ok(res.body(body))
}
