//! The canteen collection code half of the store (SPEC §13): a merchant's terminals, the
//! collection code a phone scanned, and the visits counted at count-only codes. A visit
//! carries its outbox event, written in the same transaction. Payments at a collection
//! code are ordinary payments: they go through the wallets and the ledger writer.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{MerchantId, TenantId, TerminalId, UserId, VisitId};
use crate::model::{Page, PageReq, Visit};
use crate::wallet::{OutboxEvent, Terminal};

/// What recording a visit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VisitWrite {
    /// Counted now, with its `collection.visit` event.
    Created,
    /// The person was counted at this code a moment ago: that visit.
    Repeat(Visit),
}

/// Which visits a list returns.
#[derive(Clone, Debug, Default)]
pub struct VisitFilter {
    /// Visits at any of these merchants (a merchant and those under it); all when `None`.
    pub merchants: Option<Vec<MerchantId>>,
    pub terminal: Option<TerminalId>,
    pub user: Option<UserId>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
}

#[async_trait]
pub trait CollectionStore: Send + Sync + 'static {
    /// The terminals, tills and collection codes, of these merchants of the tenant, oldest
    /// first.
    async fn list_terminals(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
    ) -> StoreResult<Vec<Terminal>>;
    /// The terminal whose collection code this is, of whichever tenant.
    async fn terminal_by_code(&self, code: String) -> StoreResult<Option<(TenantId, Terminal)>>;
    /// Stores a visit (its name and number are not stored) with its outbox event, unless
    /// the same person was counted at the same code at or after `repeat_since`: then that
    /// visit, unchanged (a double tap counts once). Visits at one code are serialised, so
    /// two taps at once count once too.
    async fn record_visit(
        &self,
        tenant: TenantId,
        visit: Visit,
        event: OutboxEvent,
        repeat_since: Timestamp,
    ) -> StoreResult<VisitWrite>;
    /// Oldest first, by id, with each person's name and number as they are now.
    async fn list_visits(
        &self,
        tenant: TenantId,
        filter: VisitFilter,
        page: PageReq<VisitId>,
    ) -> StoreResult<Page<Visit, VisitId>>;
    /// The visits at or after `from` and before `to` at these merchants' codes, counted by
    /// terminal; terminals without visits are left out.
    async fn count_visits(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<(TerminalId, u64)>>;
}
