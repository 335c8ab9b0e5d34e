//! An operator's adapter the server POSTs signed JSON to: the text gateway
//! (`crate::texts`) and the real-name registry (`crate::realname`). Each request is signed
//! as webhooks are (`crate::apps::signed_post`), with the adapter's own secret, and has a
//! few seconds to be answered; redirects are not followed.

use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

pub struct Adapter {
    url: reqwest::Url,
    secret: SecretString,
    client: reqwest::Client,
}

impl Adapter {
    /// `agent` names the caller in `User-Agent` (`OneCard-Texts/<version>`).
    pub fn new(
        url: &str,
        secret: SecretString,
        timeout: Duration,
        agent: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            url: reqwest::Url::parse(url)?,
            secret,
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(format!("{agent}/{}", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }

    /// POSTs `body`, signed: the adapter's answer, or why none came.
    pub async fn post(&self, body: &serde_json::Value) -> Result<reqwest::Response, String> {
        let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let request = crate::apps::signed_post(
            &self.client,
            self.url.clone(),
            self.secret.expose_secret(),
            Timestamp::now().as_second(),
            &nonce,
            payload,
        );
        send(request).await.map_err(|e| e.to_string())
    }
}

/// Why an adapter gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    TimedOut,
    Unreachable,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoAnswer::TimedOut => "timed out",
            NoAnswer::Unreachable => "unreachable",
        })
    }
}

/// Sends a request to an adapter (this module's, or a tenant's channel adapter, whose
/// address and secret vary by tenant): its answer, or why none came.
pub async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, NoAnswer> {
    request.send().await.map_err(|e| {
        if e.is_timeout() {
            NoAnswer::TimedOut
        } else {
            NoAnswer::Unreachable
        }
    })
}
