//! Directory dashboard figures (analytics capability: standard edition and up).

use actix_web::{get, web};
use onecard_schema::model::DirectoryStats;

use crate::auth::{AnalyticsSuperAdmin, Auth};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// Users by status, identity and department.
#[utoipa::path(tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = DirectoryStats), Problems))]
#[get("/stats/directory")]
pub async fn get_directory_stats(
    state: web::Data<AppState>,
    caller: Auth<AnalyticsSuperAdmin>,
) -> Result<web::Json<DirectoryStats>, ApiError> {
    Ok(web::Json(
        state.store.directory_stats(caller.tenant()?).await?,
    ))
}

/// Frozen wallets and wallets in arrears (the live dashboard's counters).
#[utoipa::path(tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = onecard_schema::wallet::WalletStats), Problems))]
#[get("/stats/wallets")]
pub async fn get_wallet_stats(
    state: web::Data<AppState>,
    caller: Auth<crate::auth::PaymentsViewer>,
) -> Result<web::Json<onecard_schema::wallet::WalletStats>, ApiError> {
    Ok(web::Json(
        state
            .store
            .wallet_stats(caller.tenant()?, state.clock.now())
            .await?,
    ))
}
