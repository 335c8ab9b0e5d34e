//! Online top-ups (docs/OPERATIONS.md "Online top-ups"): a cardholder pays the payment
//! provider from their phone and the wallet is credited once the provider says it was
//! paid. A charge is the order: opened `pending`, then `paid` (credited, with the
//! provider's transaction and the top-up register's line) or `closed` (never paid). The
//! money itself moves through the wallet actor like any top-up; this table only follows
//! the order, so that every node can ask the provider about the orders still open.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{ChargeId, TenantId, UserId};
use crate::model::{Page, PageReq};
use crate::money::Money;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Opened at the provider; not paid yet, or paid and not yet known to be.
    Pending,
    /// Paid at the provider and credited to the wallet.
    Paid,
    /// Closed unpaid: it expired, or the provider never opened it.
    Closed,
}

impl ChargeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Pending => "pending",
            ChargeStatus::Paid => "paid",
            ChargeStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ChargeStatus::Pending),
            "paid" => Some(ChargeStatus::Paid),
            "closed" => Some(ChargeStatus::Closed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub id: ChargeId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub amount: Money,
    /// The provider it was opened at (`sandbox`, …).
    pub provider: String,
    pub status: ChargeStatus,
    pub created_at: Timestamp,
    /// Not paid by then, it is closed at the provider.
    pub expires_at: Timestamp,
    /// The provider's transaction, once paid: the top-up's reference in the register.
    pub transaction: Option<String>,
    /// The top-up register's line (the ledger transaction), once credited.
    pub topup_id: Option<uuid::Uuid>,
    /// When it became `paid` or `closed`.
    pub settled_at: Option<Timestamp>,
}

/// How a pending charge ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeEnd {
    Paid {
        transaction: String,
        topup_id: uuid::Uuid,
        at: Timestamp,
    },
    Closed {
        at: Timestamp,
    },
}

impl ChargeEnd {
    /// What the charge's row says once ended: status, transaction, top-up line, when.
    pub fn columns(self) -> (ChargeStatus, Option<String>, Option<uuid::Uuid>, Timestamp) {
        match self {
            ChargeEnd::Paid {
                transaction,
                topup_id,
                at,
            } => (ChargeStatus::Paid, Some(transaction), Some(topup_id), at),
            ChargeEnd::Closed { at } => (ChargeStatus::Closed, None, None, at),
        }
    }
}

/// Which charges a list returns.
#[derive(Clone, Debug, Default)]
pub struct ChargeFilter {
    pub user: Option<UserId>,
    pub status: Option<ChargeStatus>,
    /// Opened at or after this.
    pub from: Option<Timestamp>,
    /// Opened before this.
    pub to: Option<Timestamp>,
}

#[async_trait]
pub trait ChargeStore: Send + Sync + 'static {
    async fn create_charge(&self, charge: Charge) -> StoreResult<()>;
    /// One charge of the tenant (`NotFound` otherwise).
    async fn get_charge(&self, tenant: TenantId, id: ChargeId) -> StoreResult<Charge>;
    /// Oldest first, by id.
    async fn list_charges(
        &self,
        tenant: TenantId,
        filter: ChargeFilter,
        page: PageReq<ChargeId>,
    ) -> StoreResult<Page<Charge, ChargeId>>;
    /// Pending charges of every tenant opened before `before`, oldest first, at most
    /// `limit`: those whose provider's notice may have been lost, or that expired.
    async fn pending_charges(&self, before: Timestamp, limit: u32) -> StoreResult<Vec<Charge>>;
    /// Ends a pending charge; a charge no longer pending is left as it is. Answers the
    /// charge as it stands after.
    async fn end_charge(
        &self,
        tenant: TenantId,
        id: ChargeId,
        end: ChargeEnd,
    ) -> StoreResult<Charge>;
}
