//! The payment provider behind deferred debits. Real providers plug in behind the trait;
//! the sandbox (the default) lets tests and demos decide per user whether debits succeed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use onecard_schema::ids::{ChargeId, PaymentId, TenantId, UserId};
use onecard_schema::money::Money;

/// The provider could not be asked, or gave no answer (a timeout, a network fault, its
/// own outage). Not a decline: the payment stays `accepted` and is asked again later.
#[derive(Debug, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Collects a deferred debit: true when collected, false when the provider declines
    /// it. Asked again for the same payment after a restart, after `ProviderUnavailable`,
    /// and possibly from two nodes at once, so a real provider must treat `payment` as an
    /// idempotency key.
    async fn deferred_debit(
        &self,
        user: UserId,
        payment: PaymentId,
        amount: Money,
    ) -> Result<bool, ProviderUnavailable>;

    /// Opens an order for a cardholder to pay `charge.amount` in the provider's own app
    /// (an online top-up). Answers what the phone hands the provider's app to pay it (a
    /// real provider's payment parameters; the sandbox's address to pay at). Asked again
    /// for the same charge only if the first answer was lost, so `charge.id` is the
    /// provider's idempotency key.
    async fn open_charge(
        &self,
        charge: &ChargeOrder,
    ) -> Result<serde_json::Value, ProviderUnavailable>;

    /// Where an order stands at the provider. An order it never opened is `Pending` (it
    /// may be on its way); the server closes it once it expires.
    async fn charge_state(&self, charge: ChargeId) -> Result<ChargeState, ProviderUnavailable>;

    /// Closes an order so that it can no longer be paid, and answers where it stands
    /// after: `Closed`, or `Paid` if it was paid first.
    async fn close_charge(&self, charge: ChargeId) -> Result<ChargeState, ProviderUnavailable>;
}

/// An online top-up's order, as the provider is asked to open it.
#[derive(Clone, Debug)]
pub struct ChargeOrder {
    pub id: ChargeId,
    pub tenant: TenantId,
    pub user: UserId,
    pub amount: Money,
    /// Unpaid by then, the order is closed.
    pub expires_at: jiff::Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeState {
    Pending,
    /// Paid, under the provider's transaction id (the top-up's bank reference).
    Paid {
        transaction: String,
    },
    Closed,
}

/// Why the sandbox would not take a cardholder's payment of an order.
#[derive(Debug, PartialEq, Eq)]
pub enum SandboxPayRefusal {
    /// The sandbox never opened it (another node's, or before a restart).
    Unknown,
    Closed,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SandboxAccount {
    /// Fen the sandbox will still collect; `None` is unlimited.
    pub available: Option<i64>,
    pub latency_ms: u64,
    /// Answer every debit with `ProviderUnavailable` (an outage, for tests and demos).
    pub unavailable: bool,
}

/// Per-user sandbox accounts and online top-ups' orders, in this node's memory.
#[derive(Default)]
pub struct Sandbox {
    accounts: Mutex<HashMap<UserId, SandboxAccount>>,
    settled: Mutex<HashMap<PaymentId, bool>>,
    charges: Mutex<HashMap<ChargeId, SandboxCharge>>,
}

#[derive(Clone, Debug)]
struct SandboxCharge {
    order: ChargeOrder,
    state: ChargeState,
}

impl Sandbox {
    pub fn set(&self, user: UserId, account: SandboxAccount) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user, account);
    }

    /// The cardholder pays an order in the sandbox's "app": it becomes `Paid` under a
    /// transaction id of its own (paying again answers the same), unless it was closed.
    pub fn pay(&self, charge: ChargeId) -> Result<String, SandboxPayRefusal> {
        let mut charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        let c = charges.get_mut(&charge).ok_or(SandboxPayRefusal::Unknown)?;
        match &c.state {
            ChargeState::Paid { transaction } => Ok(transaction.clone()),
            ChargeState::Closed => Err(SandboxPayRefusal::Closed),
            ChargeState::Pending => {
                let transaction = format!("SBX{}", charge.0.simple());
                c.state = ChargeState::Paid {
                    transaction: transaction.clone(),
                };
                Ok(transaction)
            }
        }
    }

    /// Whom an order the sandbox opened is for.
    pub fn order(&self, charge: ChargeId) -> Option<ChargeOrder> {
        self.charges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&charge)
            .map(|c| c.order.clone())
    }

    fn unavailable(&self, user: UserId) -> Result<(), ProviderUnavailable> {
        let down = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user)
            .is_some_and(|a| a.unavailable);
        if down {
            return Err(ProviderUnavailable(
                "the sandbox is set to be unavailable".into(),
            ));
        }
        Ok(())
    }

    fn charge_user(&self, charge: ChargeId) -> Option<UserId> {
        self.order(charge).map(|o| o.user)
    }
}

#[async_trait]
impl Provider for Sandbox {
    async fn deferred_debit(
        &self,
        user: UserId,
        payment: PaymentId,
        amount: Money,
    ) -> Result<bool, ProviderUnavailable> {
        let account = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user)
            .copied()
            .unwrap_or_default();
        if account.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(account.latency_ms)).await;
        }
        if account.unavailable {
            return Err(ProviderUnavailable(
                "the sandbox is set to be unavailable".into(),
            ));
        }
        if let Some(done) = self
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&payment)
        {
            return Ok(*done);
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = accounts.entry(user).or_default();
        let ok = match entry.available {
            None => true,
            Some(left) if left >= amount.0 => {
                entry.available = Some(left - amount.0);
                true
            }
            Some(_) => false,
        };
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(payment, ok);
        Ok(ok)
    }
    async fn open_charge(
        &self,
        charge: &ChargeOrder,
    ) -> Result<serde_json::Value, ProviderUnavailable> {
        self.unavailable(charge.user)?;
        self.charges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(charge.id)
            .or_insert_with(|| SandboxCharge {
                order: charge.clone(),
                state: ChargeState::Pending,
            });
        Ok(serde_json::json!({
            "sandbox_pay_url": format!("/api/v1/sandbox/provider/charges/{}/pay", charge.id),
        }))
    }

    async fn charge_state(&self, charge: ChargeId) -> Result<ChargeState, ProviderUnavailable> {
        if let Some(user) = self.charge_user(charge) {
            self.unavailable(user)?;
        }
        Ok(self
            .charges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&charge)
            .map_or(ChargeState::Pending, |c| c.state.clone()))
    }

    async fn close_charge(&self, charge: ChargeId) -> Result<ChargeState, ProviderUnavailable> {
        if let Some(user) = self.charge_user(charge) {
            self.unavailable(user)?;
        }
        let mut charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = charges.get_mut(&charge) else {
            return Ok(ChargeState::Closed);
        };
        if c.state == ChargeState::Pending {
            c.state = ChargeState::Closed;
        }
        Ok(c.state.clone())
    }
}
