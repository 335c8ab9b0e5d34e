//! Text messages (SMS): the one-time codes that prove a phone when a person claims a card
//! by the `phone` method. Real gateways plug in behind `TextSender`; the default is a
//! sandbox inside the server that keeps what it "sent" for `GET /api/v1/sandbox/texts`,
//! as the payment provider's sandbox does for deferred debits.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::Timestamp;
use onecard_schema::ids::TenantId;
use serde::Serialize;
use utoipa::ToSchema;

/// How many texts the sandbox keeps (the oldest go first).
const SANDBOX_KEEP: usize = 1000;

/// Sends a text to a phone.
#[async_trait]
pub trait TextSender: Send + Sync + 'static {
    /// `Err` says why the gateway did not take it.
    async fn send(&self, tenant: TenantId, phone: &str, body: &str) -> Result<(), String>;
}

/// A text the sandbox took.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SentText {
    #[serde(skip)]
    pub tenant: TenantId,
    pub phone: String,
    pub body: String,
    pub at: Timestamp,
}

/// The sandbox gateway: takes every text and keeps the latest.
#[derive(Default)]
pub struct SandboxTexts {
    sent: Mutex<VecDeque<SentText>>,
}

impl SandboxTexts {
    /// The tenant's texts to `phone` (every phone when `None`), newest first.
    pub fn sent_to(&self, tenant: TenantId, phone: Option<&str>) -> Vec<SentText> {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .rev()
            .filter(|t| t.tenant == tenant && phone.is_none_or(|p| t.phone == p))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl TextSender for SandboxTexts {
    async fn send(&self, tenant: TenantId, phone: &str, body: &str) -> Result<(), String> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.len() == SANDBOX_KEEP {
            sent.pop_front();
        }
        sent.push_back(SentText {
            tenant,
            phone: phone.to_string(),
            body: body.to_string(),
            at: Timestamp::now(),
        });
        Ok(())
    }
}
