//! Retention of personal records (docs/OPERATIONS.md, "Retention"): every
//! `RETENTION_EVERY_S` each node deletes, for every tenant that set a limit, the scenario
//! apps' records past it, `RETENTION_BATCH` per statement. Deleting twice is harmless, so
//! nodes need no turns. Each tenant's purge is written to its audit log with the counts.

use std::sync::Arc;

use jiff::SignedDuration;
use onecard_schema::ids::AuditId;
use onecard_schema::model::{Actor, Audit, PageReq, Tenant};
use onecard_schema::retention::RecordKind;

use crate::limits::{RETENTION_BATCH, RETENTION_EVERY_S};
use crate::problem::ApiError;
use crate::state::AppState;

/// One tenant's purge: how many records of each kind went.
pub async fn purge_tenant(
    state: &AppState,
    tenant: &Tenant,
) -> Result<Vec<(RecordKind, u64)>, ApiError> {
    let now = state.clock.now();
    let mut gone = Vec::new();
    for kind in RecordKind::ALL {
        let Some(days) = tenant.settings.retention.days(kind) else {
            continue;
        };
        let Ok(before) = now.checked_sub(SignedDuration::from_hours(24 * i64::from(days))) else {
            continue;
        };
        let n = crate::tasks::drain(RETENTION_BATCH, || {
            state
                .store
                .purge_records(tenant.id, kind, before, RETENTION_BATCH)
        })
        .await?;
        if n > 0 {
            metrics::counter!("records_purged_total", "kind" => kind.as_str()).increment(n);
            gone.push((kind, n));
        }
    }
    if !gone.is_empty() {
        let detail: serde_json::Map<String, serde_json::Value> = gone
            .iter()
            .map(|(k, n)| (k.as_str().to_string(), (*n).into()))
            .collect();
        tracing::info!(tenant = %tenant.id, purged = ?detail, "records past retention purged");
        state
            .store
            .write_audit(Audit {
                id: AuditId::new(),
                tenant_id: Some(tenant.id),
                actor: Actor::System,
                action: "retention.purge",
                target_type: "tenant",
                target_id: tenant.id.to_string(),
                request_id: String::new(),
                at: now,
                detail: detail.into(),
            })
            .await?;
    }
    Ok(gone)
}

/// Every tenant's purge, one page of tenants at a time.
pub async fn purge_all(state: &AppState) -> Result<u64, ApiError> {
    let mut after = None;
    let mut total = 0;
    loop {
        let page = state
            .store
            .list_tenants(None, PageReq { limit: 500, after })
            .await?;
        for tenant in page
            .items
            .iter()
            .filter(|t| !t.settings.retention.keeps_all())
        {
            total += purge_tenant(state, tenant)
                .await?
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>();
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(total),
        }
    }
}

/// The purge loop, every `RETENTION_EVERY_S` on each node.
pub fn spawn(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        std::time::Duration::from_secs(RETENTION_EVERY_S),
        "retention purge",
        |state| async move { purge_all(&state).await.map(|_| ()) },
    );
}
