//! onecard-schema: the data layer. Migrations for both engines, typed ids, `Money`, the
//! records, and the `Store` interface with its SQLite and PostgreSQL engines.

pub mod booking_store;
pub mod card_store;
pub mod charge_store;
pub mod checkin_store;
pub mod collection_store;
pub mod error;
pub mod front_end_store;
pub mod group_store;
pub mod ids;
pub mod maintenance_store;
pub mod model;
pub mod money;
pub mod money_store;
pub mod notice_store;
pub mod person_store;
pub mod postgres;
mod postgres_booking;
mod postgres_cards;
mod postgres_charges;
mod postgres_checkin;
mod postgres_collection;
mod postgres_front_end;
mod postgres_groups;
mod postgres_maintenance;
mod postgres_money;
mod postgres_notices;
mod postgres_persons;
mod postgres_reports;
mod postgres_retention;
mod postgres_settlement;
mod postgres_shuttle;
mod postgres_visitors;
pub mod retention;
pub mod settlement_store;
pub mod shuttle_store;
pub mod sqlite;
mod sqlite_booking;
mod sqlite_cards;
mod sqlite_charges;
mod sqlite_checkin;
mod sqlite_collection;
mod sqlite_front_end;
mod sqlite_groups;
mod sqlite_maintenance;
mod sqlite_money;
mod sqlite_notices;
mod sqlite_persons;
mod sqlite_reports;
mod sqlite_retention;
mod sqlite_settlement;
mod sqlite_shuttle;
mod sqlite_vfs;
mod sqlite_visitors;
pub mod statement;
pub mod store;
pub mod visitor_store;
pub mod wallet;

pub use booking_store::BookingStore;
pub use card_store::CardStore;
pub use charge_store::ChargeStore;
pub use checkin_store::CheckinStore;
pub use collection_store::CollectionStore;
pub use error::{StoreError, StoreResult};
pub use front_end_store::FrontEndStore;
pub use group_store::TenantGroupStore;
pub use maintenance_store::MaintenanceStore;
pub use money_store::MoneyStore;
pub use notice_store::NoticeStore;
pub use person_store::PersonStore;
pub use retention::RetentionStore;
pub use settlement_store::SettlementStore;
pub use shuttle_store::ShuttleStore;
pub use store::Store;
pub use visitor_store::VisitorStore;

use std::sync::Arc;

/// Opens the store named by a URL: `sqlite://<path>` or `postgres://…`, and applies
/// pending migrations.
pub async fn open(url: &str, pool_size: usize) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path), pool_size).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url, pool_size).await?))
    } else {
        Err(StoreError::Unavailable(
            "database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}
