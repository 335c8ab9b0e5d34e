//! The visitor half of the store (SPEC §13): each tenant's visitor form, and visitors'
//! requests with their host's decision, cancellation and entry. Events (a request made, a
//! visitor let in) are written in the same transaction.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::StoreResult;
use crate::ids::{TenantId, UserId, VisitorRequestId};
use crate::model::{Audit, Page, PageReq, VisitStatus, VisitorForm, VisitorRequest};
use crate::wallet::OutboxEvent;

/// A request to store, with the hashes it is found and checked by.
#[derive(Clone, Debug)]
pub struct NewVisitorRequest {
    pub request: VisitorRequest,
    /// SHA-256 of the pass in the visitor's link and QR code.
    pub pass_hash: [u8; 32],
    /// The keyed hash of the ID number, under a real-name check.
    pub id_hash: Option<[u8; 32]>,
}

/// Which requests a list returns.
#[derive(Clone, Debug, Default)]
pub struct VisitorFilter {
    pub host: Option<UserId>,
    pub status: Option<VisitStatus>,
    /// Visits starting at or after this.
    pub from: Option<Timestamp>,
    /// Visits starting before this.
    pub to: Option<Timestamp>,
}

/// Requests of visits starting in a period, by where they stand, and how many came in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct VisitorCounts {
    pub requests: u64,
    pub pending: u64,
    pub approved: u64,
    pub rejected: u64,
    pub cancelled: u64,
    /// Approved visitors let in at a gate.
    pub entered: u64,
}

#[async_trait]
pub trait VisitorStore: Send + Sync + 'static {
    /// The tenant's form; the default form until one is saved.
    async fn visitor_form(&self, tenant: TenantId) -> StoreResult<VisitorForm>;
    async fn put_visitor_form(
        &self,
        tenant: TenantId,
        form: VisitorForm,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Stores a pending request with its `visitor.requested` event; the host must be a
    /// user of the tenant (`InvalidReference` on `host`).
    async fn create_visitor_request(
        &self,
        tenant: TenantId,
        new: NewVisitorRequest,
        event: OutboxEvent,
    ) -> StoreResult<()>;
    async fn get_visitor_request(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
    ) -> StoreResult<VisitorRequest>;
    /// The request whose pass hashes to this, of whichever tenant.
    async fn visitor_request_by_pass(
        &self,
        pass_hash: [u8; 32],
    ) -> StoreResult<Option<(TenantId, VisitorRequest)>>;
    /// Moves a request standing in one of `from` to `to`, with `reason`, at `at`: the
    /// host's decision (`host` given: `NotFound` for another host's request) or the
    /// visitor's cancellation. `not_pending` when it stands elsewhere.
    #[allow(clippy::too_many_arguments)]
    async fn move_visitor_request(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
        host: Option<UserId>,
        from: Vec<VisitStatus>,
        to: VisitStatus,
        reason: Option<String>,
        at: Timestamp,
    ) -> StoreResult<VisitorRequest>;
    /// Lets an approved visitor in: the first entry keeps its time, with its
    /// `visitor.entered` event; answers the request and whether this was the first entry.
    /// `not_pending` unless the request is approved.
    async fn enter_visitor(
        &self,
        tenant: TenantId,
        id: VisitorRequestId,
        at: Timestamp,
        event: OutboxEvent,
    ) -> StoreResult<(VisitorRequest, bool)>;
    /// Oldest first, by id.
    async fn list_visitor_requests(
        &self,
        tenant: TenantId,
        filter: VisitorFilter,
        page: PageReq<VisitorRequestId>,
    ) -> StoreResult<Page<VisitorRequest, VisitorRequestId>>;
    /// Requests of visits starting at or after `from` and before `to`.
    async fn count_visitor_requests(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<VisitorCounts>;
}

impl VisitorCounts {
    /// Adds `n` requests standing at `status`, `entered` of them let in.
    pub(crate) fn add(&mut self, status: VisitStatus, n: u64, entered: u64) {
        self.requests += n;
        self.entered += entered;
        *match status {
            VisitStatus::Pending => &mut self.pending,
            VisitStatus::Approved => &mut self.approved,
            VisitStatus::Rejected => &mut self.rejected,
            VisitStatus::Cancelled => &mut self.cancelled,
        } += n;
    }
}

/// A request standing elsewhere than a move needs.
pub(crate) fn not_movable(status: VisitStatus) -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "not_pending",
        None,
        match status {
            VisitStatus::Pending => "this request is still pending",
            VisitStatus::Approved => "this request was already approved",
            VisitStatus::Rejected => "this request was rejected",
            VisitStatus::Cancelled => "this request was cancelled",
        },
    )
}
