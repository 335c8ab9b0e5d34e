//! The ledger check: the tenant's entries sum to zero, every movement balances, and
//! every wallet equals its entries. Each node seals the ledger every `LEDGER_SEAL_S`
//! (docs/OPERATIONS.md, "The ledger check"), so that the check reads only the entries
//! since the seal; `?full=true` reads every entry instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{get, web};
use onecard_schema::wallet::LedgerCheck;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Auth, PaymentsViewer};
use crate::extract::Query;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// How often each node adds the entries written since the seal to it.
pub const LEDGER_SEAL_S: u64 = 600;

/// Entries this node has sealed since it started (exported as a metric by the edge).
pub static SEALED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckQuery {
    /// Read every entry instead of starting from the seal's sums. Its time grows with
    /// the whole ledger, and like any request it is bounded by the request timeout.
    pub full: Option<bool>,
}

/// Check the tenant's ledger.
#[utoipa::path(tag = "ledger", params(CheckQuery), security(("bearer" = [])),
    responses((status = 200, body = LedgerCheck), Problems))]
#[get("/ledger/check")]
pub async fn get_ledger_check(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(q): Query<CheckQuery>,
) -> Result<web::Json<LedgerCheck>, ApiError> {
    let tenant = caller.tenant()?;
    let check = if q.full.unwrap_or(false) {
        state.store.ledger_check_full(tenant).await?
    } else {
        state.store.ledger_check(tenant).await?
    };
    Ok(web::Json(check))
}

/// The seal loop, every `LEDGER_SEAL_S` on each node (the nodes take turns through the
/// store).
pub fn spawn_seal(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(LEDGER_SEAL_S),
        "ledger seal",
        |state| async move {
            let sealed = state.store.seal_ledger(state.clock.now()).await?;
            if sealed > 0 {
                SEALED.fetch_add(sealed, Ordering::Relaxed);
                tracing::info!(sealed, "ledger entries sealed");
            }
            Ok(())
        },
    );
}
