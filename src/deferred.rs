//! Deferred debits the provider has not answered yet. A payment's wallet asks the provider
//! once the payment is committed; when the provider is unavailable, or the node stops
//! before its answer is recorded, the payment stays `accepted`. Every node looks for such
//! payments every `DEFERRED_SWEEP_S` and asks again (the provider treats the payment id as
//! an idempotency key, so asking twice collects once).

use std::sync::Arc;
use std::time::Duration;

use crate::problem::ApiError;
use crate::state::AppState;

/// How often each node looks for deferred debits left unanswered.
pub const DEFERRED_SWEEP_S: u64 = 60;
/// A payment `accepted` for longer than this is asked about again.
pub const DEFERRED_ASK_AGAIN_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);
/// Payments asked about again per sweep, oldest first.
pub const DEFERRED_SWEEP_BATCH: usize = 1_000;

/// Asks the provider again about payments `accepted` for longer than
/// `DEFERRED_ASK_AGAIN_AFTER`; answers how many were asked (not those this node is asking
/// about already). The answers are recorded as they come, by the payments' wallets.
pub async fn ask_again(state: &AppState) -> Result<usize, ApiError> {
    let before = state.clock.now() - DEFERRED_ASK_AGAIN_AFTER;
    let stale = state
        .store
        .stale_deferred(before, DEFERRED_SWEEP_BATCH)
        .await?;
    Ok(state.wallets.ask_provider(stale))
}

/// The sweep, every `DEFERRED_SWEEP_S` on each node.
pub fn spawn_sweep(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(DEFERRED_SWEEP_S),
        "deferred debit sweep",
        |state| async move {
            let asked = ask_again(&state).await?;
            if asked > 0 {
                tracing::info!(asked, "deferred debits asked again");
            }
            Ok(())
        },
    );
}
