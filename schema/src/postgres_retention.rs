//! The retention half of the PostgreSQL engine: each purge is one bounded `DELETE`, found
//! by the table's tenant-and-id (or merchant-and-time) index.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::postgres::{pg, PgStore};
use crate::retention::{id_floor, RecordKind, RetentionStore};

/// As the SQLite engine's: `$1` tenant, `$2` the least id made at the cut-off, `$3` the
/// cut-off, `$4` the batch.
fn victims(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::VisitorRequests => {
            "DELETE FROM visitor_requests WHERE id IN (SELECT id FROM visitor_requests \
             WHERE tenant_id = $1 AND id < $2 AND ends_at < $3 ORDER BY id LIMIT $4)"
        }
        RecordKind::ShuttleRides => {
            "DELETE FROM shuttle_rides WHERE id IN (SELECT id FROM shuttle_rides \
             WHERE tenant_id = $1 AND id < $2 AND at < $3 ORDER BY id LIMIT $4)"
        }
        RecordKind::MaintenanceRecords => {
            "DELETE FROM maintenance_records WHERE id IN (SELECT id FROM maintenance_records \
             WHERE tenant_id = $1 AND id < $2 AND at < $3 ORDER BY id LIMIT $4)"
        }
        RecordKind::CheckIns => {
            "DELETE FROM check_ins WHERE id IN (SELECT c.id FROM check_ins c \
             JOIN checkin_events e ON e.id = c.event_id \
             WHERE e.tenant_id = $1 AND c.id < $2 AND c.at < $3 LIMIT $4)"
        }
        RecordKind::CollectionVisits => {
            "DELETE FROM collection_visits WHERE id IN (SELECT v.id FROM merchants m \
             JOIN collection_visits v ON v.tenant_id = m.tenant_id AND v.merchant_id = m.id \
             WHERE m.tenant_id = $1 AND v.id < $2 AND v.at < $3 LIMIT $4)"
        }
    }
}

#[async_trait]
impl RetentionStore for PgStore {
    async fn purge_records(
        &self,
        tenant: TenantId,
        kind: RecordKind,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute(
            victims(kind),
            &[&tenant.0, &id_floor(before), &before, &(limit as i64)],
        )
        .await
        .map_err(pg)
    }
}
