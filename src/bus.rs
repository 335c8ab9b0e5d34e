//! The event bus: in-process by default, Redis when `ONECARD_REDIS_URL` is set. For now
//! it answers readiness; topic streams join it with the real-time layer.

use secrecy::ExposeSecret;

use crate::config::Config;

pub enum Bus {
    InProcess,
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl Bus {
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let Some(url) = &config.redis_url else {
            return Ok(Bus::InProcess);
        };
        let client = redis::Client::open(url.expose_secret())?;
        let conn = client.get_connection_manager().await?;
        Ok(Bus::Redis {
            conn,
            prefix: config.redis_prefix.clone(),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::InProcess => "in_process",
            Bus::Redis { .. } => "redis",
        }
    }

    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Bus::InProcess => Ok(()),
            Bus::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    pub fn prefix(&self) -> Option<&str> {
        match self {
            Bus::InProcess => None,
            Bus::Redis { prefix, .. } => Some(prefix),
        }
    }
}
