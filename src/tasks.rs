//! A node's background tasks: each runs its work every so often for as long as the
//! server's state lives (arrears reminders, the purges of used payment codes and of old
//! idempotency records, the sweep for unanswered deferred debits, the ledger's seal).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::problem::ApiError;
use crate::state::AppState;

/// Runs `work` every `period` (the first time at once) until the server stops. A failed
/// round is logged and the next one runs as planned.
pub fn every<F, Fut>(state: Arc<AppState>, period: Duration, what: &'static str, work: F)
where
    F: Fn(Arc<AppState>) -> Fut + 'static,
    Fut: Future<Output = Result<(), ApiError>> + 'static,
{
    let weak = Arc::downgrade(&state);
    drop(state);
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            if let Err(e) = work(state).await {
                tracing::warn!(error = %e, task = what, "background task failed");
            }
        }
    });
}

/// Runs `step` (a store purge of up to `batch` rows) until a round takes fewer than
/// `batch`, and answers how many rows went in all. Each round is a short write of its own,
/// so the purge of a backlog never holds the store for long.
pub async fn drain<F, Fut>(batch: usize, mut step: F) -> Result<u64, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, onecard_schema::StoreError>>,
{
    let mut gone = 0;
    loop {
        let n = step().await?;
        gone += n;
        if n < batch as u64 {
            return Ok(gone);
        }
    }
}
