//! The ledger check: the tenant's entries sum to zero, every movement balances, and
//! every wallet equals its entries.

use actix_web::{get, web};
use onecard_schema::wallet::LedgerCheck;

use crate::auth::{Admin, Auth};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// Check the tenant's ledger.
#[utoipa::path(tag = "ledger", security(("bearer" = [])), responses((status = 200, body = LedgerCheck), Problems))]
#[get("/ledger/check")]
pub async fn get_ledger_check(
    state: web::Data<AppState>,
    caller: Auth<Admin>,
) -> Result<web::Json<LedgerCheck>, ApiError> {
    Ok(web::Json(state.store.ledger_check(caller.tenant()?).await?))
}
