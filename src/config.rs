//! Typed configuration from `ONECARD_*` environment variables. Defaults need no service
//! at all; unknown `ONECARD_*` keys are refused (a typo must not silently fall back to a
//! default); secrets are wrapped so that they never print.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::limits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…` (may carry a password, so it is secret).
    pub database_url: SecretString,
    pub redis_url: Option<SecretString>,
    /// Prefix for every Redis key, so that several deployments (or tests) share a Redis.
    pub redis_prefix: String,
    pub root_token: Option<SecretString>,
    pub master_key: Option<SecretString>,
    pub provider: String,
    /// Where the texts that prove a phone go (`ONECARD_TEXT_GATEWAY`).
    pub text_gateway: TextGateway,
    /// Who answers a visitor form's real-name check (`ONECARD_REAL_NAME`).
    pub real_name: RealName,
    /// How long a node waits for the payment provider's answer to a deferred debit before
    /// it counts the provider as unavailable (the payment stays `accepted`, asked again).
    pub provider_timeout: std::time::Duration,
    /// How long a request may take before it is answered 503 `unavailable` (what it
    /// started may still complete: a retry with the same Idempotency-Key finds out).
    pub request_timeout: std::time::Duration,
    pub log_format: LogFormat,
    pub db_pool_size: usize,
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    /// HTTP worker threads; 0 means two per core.
    pub workers: usize,
    /// Base URL people open binding links under (defaults to `http://<bind>`).
    pub public_url: Option<String>,
    /// Messages one wallet actor may have queued before callers get 503.
    pub wallet_mailbox: usize,
    /// Threads of wallet actors' own; 0 puts them on the commit thread (the ledger
    /// writer's), where a wallet's commit and its answer cross no thread.
    pub wallet_threads: usize,
    /// Events kept per topic for resume (in memory, or in each topic's Redis stream).
    pub ws_history: usize,
    /// Topics one websocket session may hold.
    pub ws_max_topics: usize,
    /// Deliveries (one topic's events of one published batch) a websocket session may
    /// have waiting for its socket before it is cut off with 1013.
    pub ws_queue: usize,
    /// Websocket ping interval and the silence after which a connection is closed
    /// (5 s and 15 s; not settable from the environment, tests shorten them).
    pub ws_heartbeat: std::time::Duration,
    pub ws_timeout: std::time::Duration,
    /// How often an open websocket re-checks its token (60 s; tests shorten it).
    pub ws_revalidate: std::time::Duration,
    /// When webhook deliveries are tried (not settable from the environment; tests
    /// shorten them).
    pub webhooks: crate::webhooks::WebhookTiming,
    /// Days an idempotency record is kept (money paths and every other POST). A retry
    /// with the same key after that is a new request.
    pub idempotency_keep_days: usize,
}

/// Where texts (SMS) go.
#[derive(Clone, Debug)]
pub enum TextGateway {
    /// Kept in memory for `GET /api/v1/sandbox/texts` (the default; for trials).
    Sandbox,
    /// POSTed, signed with `secret`, to the operator's SMS gateway adapter at `url`.
    Http { url: String, secret: SecretString },
}

/// Who answers a real-name check (a visitor's name and resident ID number).
#[derive(Clone, Debug)]
pub enum RealName {
    /// The ID number's form and check character only (the default): no registry is asked.
    Format,
    /// POSTed, signed with `secret`, to the operator's adapter for a real-name registry.
    Http { url: String, secret: SecretString },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown setting {0} (known: {known})", known = KNOWN.join(", "))]
    Unknown(String),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

const KNOWN: &[&str] = &[
    "ONECARD_BIND",
    "ONECARD_DATA_DIR",
    "ONECARD_DATABASE_URL",
    "ONECARD_REDIS_URL",
    "ONECARD_REDIS_PREFIX",
    "ONECARD_ROOT_TOKEN",
    "ONECARD_MASTER_KEY",
    "ONECARD_PROVIDER",
    "ONECARD_PROVIDER_TIMEOUT_MS",
    "ONECARD_TEXT_GATEWAY",
    "ONECARD_TEXT_GATEWAY_SECRET",
    "ONECARD_REAL_NAME",
    "ONECARD_REAL_NAME_SECRET",
    "ONECARD_REQUEST_TIMEOUT_MS",
    "ONECARD_LOG_FORMAT",
    "ONECARD_DB_POOL_SIZE",
    "ONECARD_RATE_LIMIT_PER_S",
    "ONECARD_RATE_LIMIT_BURST",
    "ONECARD_WORKERS",
    "ONECARD_PUBLIC_URL",
    "ONECARD_WALLET_MAILBOX",
    "ONECARD_WALLET_THREADS",
    "ONECARD_WS_HISTORY",
    "ONECARD_WS_MAX_TOPICS",
    "ONECARD_WS_QUEUE",
    "ONECARD_IDEMPOTENCY_KEEP_DAYS",
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds a config from `(key, value)` pairs; keys without the `ONECARD_` prefix are
    /// ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in vars {
            if k.starts_with("ONECARD_") {
                if !KNOWN.contains(&k.as_str()) {
                    return Err(ConfigError::Unknown(k));
                }
                map.insert(k, v);
            }
        }
        let get = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
        let data_dir = PathBuf::from(get("ONECARD_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let bind = get("ONECARD_BIND").unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind: SocketAddr = bind.parse().map_err(|e| ConfigError::Invalid {
            key: "ONECARD_BIND",
            message: format!("{bind:?} is not host:port ({e})"),
        })?;
        let database_url = get("ONECARD_DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("onecard.db").display()));
        if !(database_url.starts_with("sqlite://")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "ONECARD_DATABASE_URL",
                message: "must start with sqlite:// or postgres://".into(),
            });
        }
        let redis_url = get("ONECARD_REDIS_URL");
        if let Some(url) = &redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::Invalid {
                    key: "ONECARD_REDIS_URL",
                    message: "must start with redis:// or rediss://".into(),
                });
            }
        }
        let provider = get("ONECARD_PROVIDER").unwrap_or_else(|| "sandbox".into());
        if provider != "sandbox" {
            return Err(ConfigError::Invalid {
                key: "ONECARD_PROVIDER",
                message: format!("unknown provider {provider:?} (available: sandbox)"),
            });
        }
        let text_gateway = match adapter(
            &get,
            ("ONECARD_TEXT_GATEWAY", "sandbox"),
            "ONECARD_TEXT_GATEWAY_SECRET",
            "an SMS gateway adapter",
        )? {
            None => TextGateway::Sandbox,
            Some((url, secret)) => TextGateway::Http { url, secret },
        };
        let real_name = match adapter(
            &get,
            ("ONECARD_REAL_NAME", "format"),
            "ONECARD_REAL_NAME_SECRET",
            "a real-name registry adapter",
        )? {
            None => RealName::Format,
            Some((url, secret)) => RealName::Http { url, secret },
        };
        let log_format = match get("ONECARD_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "ONECARD_LOG_FORMAT",
                    message: format!("{other:?} is not pretty or json"),
                })
            }
        };
        let master_key = get("ONECARD_MASTER_KEY");
        if let Some(k) = &master_key {
            if k.len() < onecard_actors::keys::MASTER_KEY_BYTES_MIN {
                return Err(ConfigError::Invalid {
                    key: "ONECARD_MASTER_KEY",
                    message: format!(
                        "must be at least {} bytes",
                        onecard_actors::keys::MASTER_KEY_BYTES_MIN
                    ),
                });
            }
        }
        let root_token = get("ONECARD_ROOT_TOKEN");
        if root_token.as_ref().is_some_and(|t| t.len() < 32) {
            return Err(ConfigError::Invalid {
                key: "ONECARD_ROOT_TOKEN",
                message: "must be at least 32 characters".into(),
            });
        }
        Ok(Config {
            bind,
            data_dir,
            database_url: database_url.into(),
            redis_url: redis_url.map(Into::into),
            redis_prefix: get("ONECARD_REDIS_PREFIX").unwrap_or_else(|| "onecard:".into()),
            root_token: root_token.map(Into::into),
            master_key: master_key.map(Into::into),
            provider,
            text_gateway,
            real_name,
            provider_timeout: timeout_ms(
                &get,
                "ONECARD_PROVIDER_TIMEOUT_MS",
                limits::PROVIDER_TIMEOUT_MS_DEFAULT,
                600_000,
            )?,
            // A request taken just before SIGTERM must reach its deadline, and so an
            // answer, within the drain: a longer deadline would let shutdown cut it off
            // unanswered.
            request_timeout: timeout_ms(
                &get,
                "ONECARD_REQUEST_TIMEOUT_MS",
                limits::REQUEST_TIMEOUT_MS_DEFAULT,
                limits::SHUTDOWN_GRACE_S as usize * 1000,
            )?,
            log_format,
            db_pool_size: number(
                &get,
                "ONECARD_DB_POOL_SIZE",
                limits::DB_POOL_SIZE_DEFAULT,
                1,
                512,
            )?,
            rate_limit_per_s: number(
                &get,
                "ONECARD_RATE_LIMIT_PER_S",
                limits::RATE_LIMIT_PER_S_DEFAULT as usize,
                1,
                1_000_000,
            )? as u32,
            rate_limit_burst: number(
                &get,
                "ONECARD_RATE_LIMIT_BURST",
                limits::RATE_LIMIT_BURST_DEFAULT as usize,
                1,
                10_000_000,
            )? as u32,
            workers: number(&get, "ONECARD_WORKERS", 0, 0, 1024)?,
            public_url: get("ONECARD_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string()),
            wallet_mailbox: number(
                &get,
                "ONECARD_WALLET_MAILBOX",
                onecard_actors::wallet::WALLET_MAILBOX_DEFAULT,
                1,
                100_000,
            )?,
            wallet_threads: number(&get, "ONECARD_WALLET_THREADS", 0, 0, 256)?,
            ws_history: number(&get, "ONECARD_WS_HISTORY", 256, 1, 100_000)?,
            ws_max_topics: number(&get, "ONECARD_WS_MAX_TOPICS", 32, 1, 10_000)?,
            ws_queue: number(&get, "ONECARD_WS_QUEUE", 256, 16, 1_000_000)?,
            ws_heartbeat: std::time::Duration::from_secs(5),
            ws_timeout: std::time::Duration::from_secs(15),
            ws_revalidate: std::time::Duration::from_secs(60),
            webhooks: Default::default(),
            idempotency_keep_days: number(
                &get,
                "ONECARD_IDEMPOTENCY_KEEP_DAYS",
                limits::IDEMPOTENCY_KEEP_DAYS_DEFAULT,
                1,
                3_650,
            )?,
        })
    }

    /// A config for tests: everything under `data_dir`, bound to an ephemeral port.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut c = Config::from_vars(Vec::new()).expect("defaults are valid");
        c.bind = "127.0.0.1:0".parse().expect("valid literal address");
        c.database_url = format!("sqlite://{}", data_dir.join("onecard.db").display()).into();
        c.data_dir = data_dir;
        c.db_pool_size = 4;
        c.workers = 2;
        c
    }

    pub fn database_engine(&self) -> &'static str {
        if self.database_url.expose_secret().starts_with("sqlite://") {
            "sqlite"
        } else {
            "postgres"
        }
    }

    /// What `check-config` prints: every setting, secrets shown only as set/unset.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let secret =
            |s: &Option<SecretString>| if s.is_some() { "(set)" } else { "(unset)" }.to_string();
        vec![
            ("bind", self.bind.to_string()),
            ("data_dir", self.data_dir.display().to_string()),
            ("database", self.database_engine().to_string()),
            ("redis", secret(&self.redis_url)),
            ("redis_prefix", self.redis_prefix.clone()),
            ("root_token", secret(&self.root_token)),
            ("master_key", secret(&self.master_key)),
            ("provider", self.provider.clone()),
            (
                "text_gateway",
                match &self.text_gateway {
                    TextGateway::Sandbox => "sandbox".to_string(),
                    TextGateway::Http { url, .. } => url.clone(),
                },
            ),
            (
                "real_name",
                match &self.real_name {
                    RealName::Format => "format".to_string(),
                    RealName::Http { url, .. } => url.clone(),
                },
            ),
            (
                "provider_timeout",
                format!("{} ms", self.provider_timeout.as_millis()),
            ),
            (
                "request_timeout",
                format!("{} ms", self.request_timeout.as_millis()),
            ),
            (
                "log_format",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            ("db_pool_size", self.db_pool_size.to_string()),
            (
                "rate_limit",
                format!(
                    "{}/s burst {}",
                    self.rate_limit_per_s, self.rate_limit_burst
                ),
            ),
            (
                "workers",
                if self.workers == 0 {
                    "two per core".into()
                } else {
                    self.workers.to_string()
                },
            ),
            ("wallet_mailbox", self.wallet_mailbox.to_string()),
            (
                "wallet_threads",
                if self.wallet_threads == 0 {
                    "the commit thread".into()
                } else {
                    self.wallet_threads.to_string()
                },
            ),
            (
                "websocket",
                format!(
                    "history {} per topic, {} topics per session, queue {}",
                    self.ws_history, self.ws_max_topics, self.ws_queue
                ),
            ),
            (
                "idempotency_keep",
                format!("{} days", self.idempotency_keep_days),
            ),
        ]
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(raw) = get(key) else {
        return Ok(default);
    };
    match raw.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            key,
            message: format!("{raw:?} is not a number in {min}..={max}"),
        }),
    }
}

/// A time limit in milliseconds, 100 ms to `max_ms`.
fn timeout_ms(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    default: usize,
    max_ms: usize,
) -> Result<std::time::Duration, ConfigError> {
    let ms = number(get, key, default, 100, max_ms)?;
    Ok(std::time::Duration::from_millis(ms as u64))
}

/// An adapter setting: `(key, its built-in default's name)`. Unset or the default's name:
/// `None`. Otherwise an `http(s)://` address, which needs `secret_key` (32 or more
/// characters) to sign what goes to it.
fn adapter(
    get: &impl Fn(&str) -> Option<String>,
    (key, builtin): (&'static str, &str),
    secret_key: &'static str,
    what: &str,
) -> Result<Option<(String, SecretString)>, ConfigError> {
    let url = match get(key) {
        None => return Ok(None),
        Some(v) if v == builtin => return Ok(None),
        Some(url) => url,
    };
    if !crate::api::apps::webhook_address(&url) {
        return Err(ConfigError::Invalid {
            key,
            message: format!("{builtin}, or the http(s):// address of {what}"),
        });
    }
    let secret = get(secret_key)
        .filter(|s| s.len() >= 32)
        .ok_or(ConfigError::Invalid {
            key: secret_key,
            message: format!("at least 32 characters, to sign what goes to {what}"),
        })?;
    Ok(Some((url, secret.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_gateway_is_the_sandbox_or_a_signed_address() {
        let c = Config::from_vars(Vec::new()).unwrap();
        assert!(matches!(c.text_gateway, TextGateway::Sandbox));
        let url = ("ONECARD_TEXT_GATEWAY", "https://sms.example.edu/send");
        let refused = Config::from_vars(vars(&[url])).unwrap_err();
        assert!(
            refused.to_string().contains("ONECARD_TEXT_GATEWAY_SECRET"),
            "{refused}"
        );
        let short = ("ONECARD_TEXT_GATEWAY_SECRET", "too short");
        assert!(Config::from_vars(vars(&[url, short])).is_err());
        let secret = (
            "ONECARD_TEXT_GATEWAY_SECRET",
            "0123456789abcdefghijklmnopqrstuvwxyz",
        );
        let c = Config::from_vars(vars(&[url, secret])).unwrap();
        assert!(
            matches!(c.text_gateway, TextGateway::Http { ref url, .. } if url.ends_with("/send"))
        );
        let bad = ("ONECARD_TEXT_GATEWAY", "sms-gateway");
        assert!(Config::from_vars(vars(&[bad, secret])).is_err());
    }

    #[test]
    fn a_real_name_check_is_the_format_or_a_signed_registry_adapter() {
        let c = Config::from_vars(Vec::new()).unwrap();
        assert!(matches!(c.real_name, RealName::Format));
        let c = Config::from_vars(vars(&[("ONECARD_REAL_NAME", "format")])).unwrap();
        assert!(matches!(c.real_name, RealName::Format));
        let url = ("ONECARD_REAL_NAME", "https://idcheck.example.edu/verify");
        let refused = Config::from_vars(vars(&[url])).unwrap_err();
        assert!(
            refused.to_string().contains("ONECARD_REAL_NAME_SECRET"),
            "{refused}"
        );
        let secret = (
            "ONECARD_REAL_NAME_SECRET",
            "0123456789abcdefghijklmnopqrstuvwxyz",
        );
        let c = Config::from_vars(vars(&[url, secret])).unwrap();
        assert!(matches!(c.real_name, RealName::Http { ref url, .. } if url.ends_with("/verify")));
        let bad = ("ONECARD_REAL_NAME", "registry");
        assert!(Config::from_vars(vars(&[bad, secret])).is_err());
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_services() {
        let c = Config::from_vars(vars(&[("PATH", "/bin")])).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose_secret(), "sqlite://./data/onecard.db");
        assert!(c.redis_url.is_none());
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.wallet_threads, 0, "wallet actors share the commit thread");
        let c = Config::from_vars(vars(&[("ONECARD_WALLET_THREADS", "3")])).unwrap();
        assert_eq!(c.wallet_threads, 3);
    }

    #[test]
    fn unknown_onecard_keys_are_refused() {
        let err = Config::from_vars(vars(&[("ONECARD_DATABSE_URL", "x")])).unwrap_err();
        assert!(matches!(err, ConfigError::Unknown(k) if k == "ONECARD_DATABSE_URL"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("ONECARD_BIND", "nowhere"),
            ("ONECARD_DATABASE_URL", "mysql://x"),
            ("ONECARD_LOG_FORMAT", "xml"),
            ("ONECARD_MASTER_KEY", "short"),
            ("ONECARD_DB_POOL_SIZE", "0"),
            ("ONECARD_WALLET_THREADS", "257"),
            ("ONECARD_WALLET_THREADS", "two"),
        ] {
            let err = Config::from_vars(vars(&[(k, v)])).unwrap_err();
            assert!(err.to_string().starts_with(k), "{err}");
        }
    }

    #[test]
    fn a_request_deadline_ends_within_the_shutdown_drain() {
        let drain_ms = limits::SHUTDOWN_GRACE_S * 1000;
        let c = Config::from_vars(vars(&[(
            "ONECARD_REQUEST_TIMEOUT_MS",
            &drain_ms.to_string(),
        )]))
        .unwrap();
        assert_eq!(c.request_timeout.as_millis(), u128::from(drain_ms));
        let err = Config::from_vars(vars(&[(
            "ONECARD_REQUEST_TIMEOUT_MS",
            &(drain_ms + 1).to_string(),
        )]))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("ONECARD_REQUEST_TIMEOUT_MS"),
            "{err}"
        );
        // The provider's own limit is not bounded by the drain.
        let c = Config::from_vars(vars(&[("ONECARD_PROVIDER_TIMEOUT_MS", "120000")])).unwrap();
        assert_eq!(c.provider_timeout.as_secs(), 120);
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_vars(vars(&[("ONECARD_ROOT_TOKEN", &"s".repeat(40))])).unwrap();
        let shown = format!("{c:?} {:?}", c.describe());
        assert!(!shown.contains(&"s".repeat(40)));
    }
}
