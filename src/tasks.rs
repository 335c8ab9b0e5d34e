//! A node's background tasks: each runs its work every so often for as long as the
//! server's state lives (arrears reminders, the purge of used payment codes).

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
