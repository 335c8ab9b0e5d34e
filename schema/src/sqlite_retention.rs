//! The retention half of the SQLite engine: each purge is one bounded `DELETE` on the
//! single writer, found by the table's tenant-and-id (or merchant-and-time) index.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::params;

use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::retention::{id_floor, RecordKind, RetentionStore};
use crate::sqlite::{db, ms, SqliteStore};

/// The statement that picks a batch of records to delete: `?1` tenant, `?2` the least id
/// made at the cut-off, `?3` the cut-off (ms), `?4` the batch. The id bounds the index
/// range; the time decides (a visit by its end).
fn victims(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::VisitorRequests => {
            "DELETE FROM visitor_requests WHERE id IN (SELECT id FROM visitor_requests \
             WHERE tenant_id = ?1 AND id < ?2 AND ends_at < ?3 ORDER BY id LIMIT ?4)"
        }
        RecordKind::ShuttleRides => {
            "DELETE FROM shuttle_rides WHERE id IN (SELECT id FROM shuttle_rides \
             WHERE tenant_id = ?1 AND id < ?2 AND at < ?3 ORDER BY id LIMIT ?4)"
        }
        RecordKind::MaintenanceRecords => {
            "DELETE FROM maintenance_records WHERE id IN (SELECT id FROM maintenance_records \
             WHERE tenant_id = ?1 AND id < ?2 AND at < ?3 ORDER BY id LIMIT ?4)"
        }
        RecordKind::CheckIns => {
            "DELETE FROM check_ins WHERE id IN (SELECT c.id FROM check_ins c \
             JOIN checkin_events e ON e.id = c.event_id \
             WHERE e.tenant_id = ?1 AND c.id < ?2 AND c.at < ?3 LIMIT ?4)"
        }
        // By merchant and time, the index visits already have (no index of their own is
        // added to a table every door scan writes to).
        RecordKind::CollectionVisits => {
            "DELETE FROM collection_visits WHERE id IN (SELECT id FROM collection_visits \
             WHERE tenant_id = ?1 AND merchant_id IN \
             (SELECT id FROM merchants WHERE tenant_id = ?1) AND id < ?2 AND at < ?3 LIMIT ?4)"
        }
    }
}

#[async_trait]
impl RetentionStore for SqliteStore {
    async fn purge_records(
        &self,
        tenant: TenantId,
        kind: RecordKind,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        self.write(move |c| {
            let n = c
                .execute(
                    victims(kind),
                    params![
                        tenant.to_string(),
                        id_floor(before).to_string(),
                        ms(before),
                        limit as i64
                    ],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }
}
