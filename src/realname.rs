//! The real-name check of a visitor form (SPEC §13): whether a visitor's name and resident
//! ID number belong together. Without a registry (`ONECARD_REAL_NAME=format`, the default)
//! only the number's form and check character are checked (`api::visitors`); with one, each
//! request also asks the operator's adapter for their real-name vendor.

use async_trait::async_trait;
use onecard_schema::ids::TenantId;
use serde::Deserialize;

/// Answers whether a name and an ID number belong together.
#[async_trait]
pub trait RealNameRegistry: Send + Sync + 'static {
    /// `Err` says why no answer came (nothing is decided then).
    async fn matches(&self, tenant: TenantId, name: &str, id_number: &str) -> Result<bool, String>;
}

/// The operator's adapter: each check is POSTed as `{"tenant_id","name","id_number"}`,
/// signed like webhooks (`X-Timestamp`, `X-Nonce`, `X-Signature`), and answered 200
/// `{"match": true|false}` within 5 seconds. Anything else is no answer.
pub struct HttpRealName(crate::adapter::Adapter);

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "match")]
    matches: bool,
}

impl HttpRealName {
    pub fn new(url: &str, secret: secrecy::SecretString) -> anyhow::Result<Self> {
        Ok(Self(crate::adapter::Adapter::new(
            url,
            secret,
            crate::limits::REAL_NAME_TIMEOUT,
            "OneCard-RealName",
        )?))
    }
}

#[async_trait]
impl RealNameRegistry for HttpRealName {
    async fn matches(&self, tenant: TenantId, name: &str, id_number: &str) -> Result<bool, String> {
        let answer = self
            .0
            .post(&serde_json::json!({
                "tenant_id": tenant, "name": name, "id_number": id_number,
            }))
            .await?;
        if !answer.status().is_success() {
            return Err(format!("answered {}", answer.status()));
        }
        let body = answer
            .bytes()
            .await
            .map_err(|_| "unreadable answer".to_string())?;
        serde_json::from_slice::<Answer>(&body)
            .map(|a| a.matches)
            .map_err(|_| "an answer without {\"match\": true|false}".to_string())
    }
}
