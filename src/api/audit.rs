//! The audit log: every admin write, who, what, target, when, request id. Super admins
//! see their tenant's; the platform operator sees platform actions (tenant creation).

use actix_web::{get, web};
use jiff::Timestamp;
use onecard_schema::ids::AuditId;
use onecard_schema::model::{AuditEntry, AuditFilter};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ListParams, Paged};
use crate::auth::{Auth, RootOrSuperAdmin};
use crate::extract::Query;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// e.g. `user.create`.
    pub action: Option<String>,
    /// `root`, `admin:<id>` or `link`.
    pub actor: Option<String>,
    pub target_id: Option<String>,
    /// Inclusive, RFC 3339.
    pub from: Option<Timestamp>,
    /// Exclusive, RFC 3339.
    pub to: Option<Timestamp>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Audit entries, newest first.
#[utoipa::path(tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Paged<AuditEntry>), Problems))]
#[get("/audit")]
pub async fn list_audit(
    state: web::Data<AppState>,
    caller: Auth<RootOrSuperAdmin>,
    Query(q): Query<AuditQuery>,
) -> Result<web::Json<Paged<AuditEntry>>, ApiError> {
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page(AuditId)?;
    let filter = AuditFilter {
        action: q.action,
        actor: q.actor,
        target_id: q.target_id,
        from: q.from,
        to: q.to,
    };
    let result = state.store.list_audit(caller.tenant, filter, page).await?;
    Ok(web::Json(Paged::new(
        result.items,
        result.next.map(|a| a.0),
    )))
}
