//! Shared pieces of the money handlers: turning a wallet's answer into HTTP, and running
//! a batch of wallet operations.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use onecard_actors::wallet::{Answer, IdemKey, Op, Outcome, Policy, WalletError};
use onecard_schema::ids::{TenantId, UserId};

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

/// The idempotency identity of a money request: the caller's scope, the key, and the
/// request's fingerprint.
pub fn idem(caller: &Caller, key: String, hash: [u8; 32]) -> IdemKey {
    IdemKey {
        scope: caller.scope(),
        key,
        hash,
    }
}

/// Wallet calls a batch runs at once: enough that their commits share the group commit's
/// batches.
const BATCH_CALLS_AT_ONCE: usize = 32;

/// The idempotency identity of one item of a batch (a person of a batch withdrawal, a row
/// of a top-up file): the batch's key with `/{item}` after it, and the batch's request
/// hash extended by `salt`. The same whenever the batch is sent again, so that items done
/// before are answered from their own records, never done twice.
pub fn item_idem(
    caller: &Caller,
    key: &str,
    hash: [u8; 32],
    item: impl std::fmt::Display,
    salt: &[u8],
) -> IdemKey {
    use sha2::{Digest, Sha256};
    let hash: [u8; 32] = Sha256::new()
        .chain_update(hash)
        .chain_update(salt)
        .finalize()
        .into();
    idem(caller, format!("{key}/{item}"), hash)
}

/// A batch's wallet operations, `BATCH_CALLS_AT_ONCE` at a time; the outcomes in the
/// order given.
pub async fn batch_calls(
    state: &AppState,
    tenant: TenantId,
    policy: Policy,
    calls: Vec<(UserId, Op, IdemKey)>,
) -> Vec<Result<Outcome, WalletError>> {
    use futures_util::StreamExt;
    futures_util::stream::iter(calls.into_iter().map(|(user, op, idem)| {
        let policy = policy.clone();
        async move {
            state
                .wallets
                .call(tenant, user, op, policy, Some(idem))
                .await
        }
    }))
    .buffered(BATCH_CALLS_AT_ONCE)
    .collect()
    .await
}

/// One operation on `user`'s wallet under the tenant's policy (and the request's
/// idempotency identity, if any), answered as HTTP with `fresh` for a new answer
/// (`respond`).
pub async fn wallet_call(
    state: &AppState,
    tenant: TenantId,
    user: UserId,
    op: Op,
    idem: Option<IdemKey>,
    fresh: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let policy = state.policy(tenant).await?;
    let outcome = state.wallets.call(tenant, user, op, policy, idem).await?;
    respond(outcome, fresh)
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
