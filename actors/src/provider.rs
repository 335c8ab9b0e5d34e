//! The payment provider behind deferred debits. Real providers plug in behind the trait;
//! the sandbox (the default) lets tests and demos decide per user whether debits succeed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use onecard_schema::ids::{PaymentId, UserId};
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
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SandboxAccount {
    /// Fen the sandbox will still collect; `None` is unlimited.
    pub available: Option<i64>,
    pub latency_ms: u64,
    /// Answer every debit with `ProviderUnavailable` (an outage, for tests and demos).
    pub unavailable: bool,
}

/// Per-user sandbox accounts, in memory.
#[derive(Default)]
pub struct Sandbox {
    accounts: Mutex<HashMap<UserId, SandboxAccount>>,
    settled: Mutex<HashMap<PaymentId, bool>>,
}

impl Sandbox {
    pub fn set(&self, user: UserId, account: SandboxAccount) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user, account);
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
}
