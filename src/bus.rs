//! The event bus: in-process by default, Redis when `ONECARD_REDIS_URL` is set.
//!
//! With Redis, topic history lives in Redis so that every node numbers events the same
//! way and a client may resume on any node:
//! - `<prefix>t:<tenant>:<topic>:meta` — a hash: `seq` (the per-topic counter) and `epoch`
//!   (new whenever the topic's history was lost);
//! - `<prefix>t:<tenant>:<topic>:s` — a capped stream, entry id `<seq>-1`, the history;
//! - `<prefix>all` — a capped stream of every event (one entry per event, listing its
//!   topics and their `seq`s), which every node follows with a blocking `XREAD` and hands
//!   to its hub. One stream per node to follow, however many topics its sessions hold;
//! - `<prefix>seen:<event id>` — set once an event is published, so a relay resending
//!   after a crash never produces a second `seq` (kept 10 minutes: resends come from the
//!   sweep within seconds, or from a node restarting within minutes).
//!
//! A topic's hash and stream expire a day after its last event, so Redis holds the
//! history of active topics only; a topic that comes back starts a new epoch.
//!
//! Publishing runs as one Lua script per batch, so an event's `seq`s, its history entries
//! and its firehose entry are written together.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use async_trait::async_trait;
use onecard_actors::realtime::hub::{Deliver, Hub};
use onecard_actors::realtime::{
    expired, new_epoch, History, LogError, MemoryLog, Published, TopicKey, TopicLog,
};
use onecard_schema::ids::{AppId, EventId, TenantId};
use onecard_schema::wallet::PendingEvent;
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use secrecy::ExposeSecret;

use crate::config::Config;

/// Events kept in memory in all (single node), whatever the per-topic bound.
const MEMORY_TOTAL: usize = 200_000;
/// Entries kept in the firehose stream (a node that falls further behind than this
/// misses live events; its clients still resume from per-topic history).
const FIREHOSE_MAX: usize = 100_000;
/// How long an event id is remembered to drop a resend.
const SEEN_TTL_S: u64 = 600;
/// How long a topic's counter and history outlive its last event.
const TOPIC_TTL_S: u64 = 86_400;

pub enum Bus {
    InProcess,
    Redis {
        client: redis::Client,
        conn: ConnectionManager,
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
            client,
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

    /// Records an app's request nonce where every node sees it, for `keep_s` seconds:
    /// `SET NX` with an expiry. True if it is new; `None` without Redis, where the store
    /// keeps nonces instead.
    pub async fn use_nonce(
        &self,
        app: AppId,
        nonce: &str,
        keep_s: u64,
    ) -> Option<Result<bool, String>> {
        match self {
            Bus::InProcess => None,
            Bus::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let set: Result<Option<String>, _> = redis::cmd("SET")
                    .arg(format!("{prefix}nonce:{app}:{nonce}"))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(keep_s)
                    .query_async(&mut conn)
                    .await;
                Some(
                    set.map(|answer| answer.is_some())
                        .map_err(|e| e.to_string()),
                )
            }
        }
    }

    pub fn prefix(&self) -> Option<&str> {
        match self {
            Bus::InProcess => None,
            Bus::Redis { prefix, .. } => Some(prefix),
        }
    }

    /// The topic log for this bus; with Redis, also starts following the firehose.
    pub fn topic_log(&self, hub: Addr<Hub>, history: usize) -> Arc<dyn TopicLog> {
        match self {
            Bus::InProcess => Arc::new(MemoryLog::new(hub, history, MEMORY_TOTAL)),
            Bus::Redis {
                client,
                conn,
                prefix,
            } => {
                let log = RedisLog {
                    conn: conn.clone(),
                    prefix: prefix.clone(),
                    history,
                };
                tokio::spawn(follow(client.clone(), format!("{prefix}all"), hub));
                Arc::new(log)
            }
        }
    }
}

const PUBLISH: &str = r#"
-- ARGV: prefix, history, firehose max, seen ttl, new epoch, topic ttl, then per event:
--       id, tenant, kind, data, topic count, topics...
local p = ARGV[1]
local i = 7
while i <= #ARGV do
  local id, tenant, kind, data = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local n = tonumber(ARGV[i+4])
  i = i + 5
  if redis.call('SET', p .. 'seen:' .. id, '1', 'NX', 'EX', ARGV[4]) then
    local seqs = {}
    for j = 0, n - 1 do
      local topic = ARGV[i + j]
      local base = p .. 't:' .. tenant .. ':' .. topic
      if redis.call('HSETNX', base .. ':meta', 'epoch', ARGV[5]) == 1 then
        -- New topic, or its counter was lost: whatever history is left is another epoch's.
        redis.call('DEL', base .. ':s')
      end
      local seq = redis.call('HINCRBY', base .. ':meta', 'seq', 1)
      redis.call('XADD', base .. ':s', 'MAXLEN', ARGV[2], seq .. '-1', 'k', kind, 'd', data, 'e', id)
      redis.call('EXPIRE', base .. ':meta', ARGV[6])
      redis.call('EXPIRE', base .. ':s', ARGV[6])
      seqs[#seqs + 1] = topic .. ' ' .. seq
    end
    redis.call('XADD', p .. 'all', 'MAXLEN', '~', ARGV[3], '*',
      'e', id, 't', tenant, 'k', kind, 'd', data, 'p', table.concat(seqs, '\n'))
  end
  i = i + n
end
redis.call('EXPIRE', p .. 'all', ARGV[6])
return 1
"#;

const HISTORY: &str = r#"
-- ARGV: topic base key, since (-1: none), new epoch, max entries, topic ttl
local base = ARGV[1]
local m = redis.call('HMGET', base .. ':meta', 'seq', 'epoch')
local seq = tonumber(m[1]) or 0
local epoch = m[2]
if not epoch then
  epoch = ARGV[3]
  redis.call('HSETNX', base .. ':meta', 'epoch', epoch)
  redis.call('EXPIRE', base .. ':meta', ARGV[5])
  redis.call('DEL', base .. ':s')
end
local since = tonumber(ARGV[2])
local entries = {}
if since >= 0 and since < seq then
  entries = redis.call('XRANGE', base .. ':s', (since + 1) .. '-1', '+', 'COUNT', ARGV[4])
end
return {seq, epoch, entries}
"#;

struct RedisLog {
    conn: ConnectionManager,
    prefix: String,
    history: usize,
}

fn log_err(e: redis::RedisError) -> LogError {
    LogError(e.to_string())
}

#[async_trait]
impl TopicLog for RedisLog {
    async fn publish(&self, events: &[PendingEvent]) -> Result<(), LogError> {
        if events.is_empty() {
            return Ok(());
        }
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(PUBLISH));
        let mut call = SCRIPT.prepare_invoke();
        call.arg(&self.prefix)
            .arg(self.history)
            .arg(FIREHOSE_MAX)
            .arg(SEEN_TTL_S)
            .arg(new_epoch())
            .arg(TOPIC_TTL_S);
        for p in events {
            call.arg(p.event.id.to_string())
                .arg(p.tenant_id.to_string())
                .arg(&p.event.kind)
                .arg(p.event.payload.as_str())
                .arg(p.event.topics.len());
            for t in &p.event.topics {
                call.arg(t);
            }
        }
        let mut conn = self.conn.clone();
        call.invoke_async::<i64>(&mut conn).await.map_err(log_err)?;
        Ok(())
    }

    async fn history(
        &self,
        key: &TopicKey,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<History, LogError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(HISTORY));
        let base = format!("{}t:{}:{}", self.prefix, key.tenant, key.topic);
        let mut conn = self.conn.clone();
        let (latest, epoch_now, entries): (u64, String, StreamRangeReply) = SCRIPT
            .arg(&base)
            .arg(since.map_or(-1, |s| s as i64))
            .arg(new_epoch())
            .arg(self.history * 2)
            .arg(TOPIC_TTL_S)
            .invoke_async(&mut conn)
            .await
            .map_err(log_err)?;
        let Some(since) = since else {
            return Ok(History::Events {
                epoch: epoch_now,
                latest,
                events: Vec::new(),
            });
        };
        let events: Vec<Arc<Published>> = entries
            .ids
            .iter()
            .filter_map(|e| entry_to_published(key, e))
            .map(Arc::new)
            .collect();
        let oldest = events.first().map(|e| e.seq);
        if epoch.is_some_and(|e| e != epoch_now) || expired(since, latest, oldest) {
            return Ok(History::Expired {
                epoch: epoch_now,
                latest,
            });
        }
        Ok(History::Events {
            epoch: epoch_now,
            latest,
            events,
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

fn entry_to_published(key: &TopicKey, e: &StreamId) -> Option<Published> {
    let seq: u64 = e.id.split('-').next()?.parse().ok()?;
    let kind: String = e.get("k")?;
    let data: String = e.get("d")?;
    let id: String = e.get("e")?;
    Some(Published::new(
        key.clone(),
        seq,
        EventId(id.parse().ok()?),
        Arc::from(kind.as_str()),
        Arc::from(data),
    ))
}

/// Follows the firehose from now on and hands every event, once per topic, to the hub.
/// Reconnects (and goes on from the last entry it saw) when Redis goes away.
async fn follow(client: redis::Client, stream: String, hub: Addr<Hub>) {
    let mut last = "$".to_string();
    loop {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "event follower cannot reach Redis; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let opts = StreamReadOptions::default().block(2000).count(1000);
            let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREAD")
                .arg(&opts)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last)
                .query_async(&mut conn)
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "event follower lost Redis; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            let Some(reply) = reply else { continue };
            let mut batch = Vec::new();
            for key in reply.keys {
                for entry in key.ids {
                    last.clone_from(&entry.id);
                    batch.extend(firehose_entry(&entry).into_iter().map(Arc::new));
                }
            }
            if !batch.is_empty() && hub.try_send(Deliver(Arc::from(batch))).is_err() {
                tracing::warn!("hub mailbox full: live subscribers miss events");
            }
        }
    }
}

fn firehose_entry(e: &StreamId) -> Vec<Published> {
    let (Some(id), Some(tenant), Some(kind), Some(data), Some(topics)) = (
        e.get::<String>("e"),
        e.get::<String>("t"),
        e.get::<String>("k"),
        e.get::<String>("d"),
        e.get::<String>("p"),
    ) else {
        return Vec::new();
    };
    let (Ok(id), Ok(tenant)) = (id.parse(), tenant.parse()) else {
        return Vec::new();
    };
    let kind: Arc<str> = Arc::from(kind.as_str());
    let data: Arc<str> = Arc::from(data);
    topics
        .lines()
        .filter_map(|line| {
            let (topic, seq) = line.rsplit_once(' ')?;
            Some(Published::new(
                TopicKey::new(TenantId(tenant), topic),
                seq.parse().ok()?,
                EventId(id),
                kind.clone(),
                data.clone(),
            ))
        })
        .collect()
}
