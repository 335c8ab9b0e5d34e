//! How long a tenant keeps personal records of its scenario apps (visitors' requests,
//! rides, check-ins, maintenance records, canteen visits), and the store's purge of
//! those past it. Money (payments, the ledger) is never purged: it is the books.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::StoreResult;
use crate::ids::TenantId;

/// Days each kind of record is kept; `null` (the default) keeps it for good.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Visitors' requests, counted from the end of the visit.
    #[serde(default)]
    pub visitor_requests_days: Option<u32>,
    /// Shuttle rides, from boarding.
    #[serde(default)]
    pub shuttle_rides_days: Option<u32>,
    /// Event check-ins, from the check-in (the events themselves stay).
    #[serde(default)]
    pub check_ins_days: Option<u32>,
    /// Equipment maintenance records, from the visit.
    #[serde(default)]
    pub maintenance_records_days: Option<u32>,
    /// Visits counted at canteen collection codes (count-only codes), from the scan.
    #[serde(default)]
    pub collection_visits_days: Option<u32>,
}

/// A kind of record a tenant may keep for a limited time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    VisitorRequests,
    ShuttleRides,
    CheckIns,
    MaintenanceRecords,
    CollectionVisits,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::VisitorRequests,
        RecordKind::ShuttleRides,
        RecordKind::CheckIns,
        RecordKind::MaintenanceRecords,
        RecordKind::CollectionVisits,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::VisitorRequests => "visitor_requests",
            RecordKind::ShuttleRides => "shuttle_rides",
            RecordKind::CheckIns => "check_ins",
            RecordKind::MaintenanceRecords => "maintenance_records",
            RecordKind::CollectionVisits => "collection_visits",
        }
    }
}

impl Retention {
    /// Whether every kind is kept for good (nothing to purge).
    pub fn keeps_all(&self) -> bool {
        RecordKind::ALL.iter().all(|k| self.days(*k).is_none())
    }

    pub fn days(&self, kind: RecordKind) -> Option<u32> {
        match kind {
            RecordKind::VisitorRequests => self.visitor_requests_days,
            RecordKind::ShuttleRides => self.shuttle_rides_days,
            RecordKind::CheckIns => self.check_ins_days,
            RecordKind::MaintenanceRecords => self.maintenance_records_days,
            RecordKind::CollectionVisits => self.collection_visits_days,
        }
    }

    pub fn days_mut(&mut self, kind: RecordKind) -> &mut Option<u32> {
        match kind {
            RecordKind::VisitorRequests => &mut self.visitor_requests_days,
            RecordKind::ShuttleRides => &mut self.shuttle_rides_days,
            RecordKind::CheckIns => &mut self.check_ins_days,
            RecordKind::MaintenanceRecords => &mut self.maintenance_records_days,
            RecordKind::CollectionVisits => &mut self.collection_visits_days,
        }
    }
}

/// The least UUIDv7 of the millisecond `at`: every id made before `at` sorts below it.
/// Ids are UUIDv7 (time first), so "made before" is an index range on the id.
pub fn id_floor(at: Timestamp) -> Uuid {
    let ms = at.as_millisecond().max(0) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Deletes up to `limit` of the tenant's records of `kind` that ended (a visit) or were
    /// made (the rest) before `before`, oldest first; answers how many went.
    async fn purge_records(
        &self,
        tenant: TenantId,
        kind: RecordKind,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_sorts_below_every_later_id_and_above_every_earlier_one() {
        let at = Timestamp::from_millisecond(1_765_000_000_123).unwrap();
        let floor = id_floor(at);
        assert_eq!(floor.get_version_num(), 7);
        let earlier = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_765_000_000,
            122_999_999,
        ));
        let later = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_765_000_000,
            123_000_000,
        ));
        assert!(
            earlier < floor && floor <= later,
            "{earlier} {floor} {later}"
        );
        // Their text forms (SQLite's) sort the same way.
        assert!(earlier.to_string() < floor.to_string());
        assert!(floor.to_string() <= later.to_string());
    }
}
