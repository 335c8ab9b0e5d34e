//! The payment provider behind deferred debits. Real providers plug in behind the trait;
//! the sandbox (the default) lets tests and demos decide per user whether debits succeed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use onecard_schema::ids::{PaymentId, UserId};
use onecard_schema::money::Money;

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Collects a deferred debit; false when the provider declines it. Called again for
    /// the same payment after a restart, so a real provider must treat `payment` as an
    /// idempotency key.
    async fn deferred_debit(&self, user: UserId, payment: PaymentId, amount: Money) -> bool;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SandboxAccount {
    /// Fen the sandbox will still collect; `None` is unlimited.
    pub available: Option<i64>,
    pub latency_ms: u64,
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
    async fn deferred_debit(&self, user: UserId, payment: PaymentId, amount: Money) -> bool {
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
        if let Some(done) = self
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&payment)
        {
            return *done;
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
        ok
    }
}
