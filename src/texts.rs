//! Text messages (SMS): the one-time codes that prove a phone when a person claims a card
//! by the `phone` or `registration` method. Two gateways sit behind `TextSender`: the
//! default sandbox inside the server, which keeps what it "sent" for
//! `GET /api/v1/sandbox/texts` (as the payment provider's sandbox does for deferred
//! debits), and `HttpTexts`, which POSTs each text, signed, to the operator's adapter for
//! their SMS vendor (`ONECARD_TEXT_GATEWAY`).

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

/// The operator's SMS gateway adapter: each text is POSTed as
/// `{"tenant_id","phone","text"}`, signed like webhooks (`X-Timestamp`, `X-Nonce`,
/// `X-Signature`: the hex HMAC-SHA256, with the gateway secret, of
/// `POST\n<path>\n<timestamp>\n<nonce>\n<hex SHA-256 of the body>`). Any 2xx answer
/// within 5 seconds means it took the text.
pub struct HttpTexts(crate::adapter::Adapter);

impl HttpTexts {
    pub fn new(url: &str, secret: secrecy::SecretString) -> anyhow::Result<Self> {
        Ok(Self(crate::adapter::Adapter::new(
            url,
            secret,
            crate::limits::TEXT_GATEWAY_TIMEOUT,
            "OneCard-Texts",
        )?))
    }
}

#[async_trait]
impl TextSender for HttpTexts {
    async fn send(&self, tenant: TenantId, phone: &str, body: &str) -> Result<(), String> {
        let answer = self
            .0
            .post(&serde_json::json!({
                "tenant_id": tenant, "phone": phone, "text": body,
            }))
            .await?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}
