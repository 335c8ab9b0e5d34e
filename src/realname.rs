//! The real-name check of a visitor form (SPEC §13): whether a visitor's name and resident
//! ID number belong together. Without a registry (`ONECARD_REAL_NAME=format`, the default)
//! only the number's form and check character are checked (`api::visitors`); with one, each
//! request also asks the operator's adapter for their real-name vendor.

use async_trait::async_trait;
use jiff::Timestamp;
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
pub struct HttpRealName {
    url: reqwest::Url,
    secret: secrecy::SecretString,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "match")]
    matches: bool,
}

impl HttpRealName {
    pub fn new(url: &str, secret: secrecy::SecretString) -> anyhow::Result<Self> {
        Ok(Self {
            url: reqwest::Url::parse(url)?,
            secret,
            client: reqwest::Client::builder()
                .timeout(crate::limits::REAL_NAME_TIMEOUT)
                .connect_timeout(crate::limits::REAL_NAME_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("OneCard-RealName/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }
}

#[async_trait]
impl RealNameRegistry for HttpRealName {
    async fn matches(&self, tenant: TenantId, name: &str, id_number: &str) -> Result<bool, String> {
        use secrecy::ExposeSecret;
        let payload = serde_json::to_vec(&serde_json::json!({
            "tenant_id": tenant, "name": name, "id_number": id_number,
        }))
        .map_err(|e| e.to_string())?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let answer = crate::apps::signed_post(
            &self.client,
            self.url.clone(),
            self.secret.expose_secret(),
            Timestamp::now().as_second(),
            &nonce,
            payload,
        )
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else {
                "unreachable".to_string()
            }
        })?;
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
