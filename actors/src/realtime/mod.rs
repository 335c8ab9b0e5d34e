//! Real-time delivery: committed outbox events become numbered topic events.
//!
//! - The **relay** (`relay.rs`) takes events the ledger writer (or another writer) has
//!   just made durable, publishes them to the topic log and forgets them from the outbox;
//!   a sweep republishes what a crashed node left behind.
//! - The **topic log** (`TopicLog`) numbers events per topic (`seq`, 1-based, strictly
//!   increasing), keeps a bounded history for resume and hands every published event to
//!   the local hub. `MemoryLog` is the single-node log; the Redis log (in the edge crate,
//!   beside the Redis connection) keeps history in capped streams shared by every node.
//!   Both drop an event id they have already published, so a relay that resends after a
//!   crash never produces a second `seq` for the same event.
//! - The **hub** (`hub.rs`) routes each event to the sessions subscribed to its topic.

pub mod hub;
pub mod memory;
pub mod relay;

use std::sync::Arc;

use async_trait::async_trait;
use bytestring::ByteString;
use onecard_schema::ids::{EventId, TenantId};
use onecard_schema::wallet::PendingEvent;

pub use hub::Hub;
pub use memory::MemoryLog;
pub use relay::Relay;

/// A topic of one tenant: `terminal:<id>`, `user:<id>`, `merchant:<id>`, `tenant`, ….
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicKey {
    pub tenant: TenantId,
    pub topic: Arc<str>,
}

impl TopicKey {
    pub fn new(tenant: TenantId, topic: &str) -> Self {
        TopicKey {
            tenant,
            topic: Arc::from(topic),
        }
    }
}

/// One event on one topic. Its frame is encoded once, the first time it is sent, and
/// sent to every subscriber as is; an event on a topic nobody follows (most cardholders'
/// topics, most of the time) is never encoded unless someone resumes it.
#[derive(Clone, Debug)]
pub struct Published {
    pub key: TopicKey,
    pub seq: u64,
    pub event_id: EventId,
    pub kind: Arc<str>,
    /// The event's payload, JSON (shared by the event's topics).
    pub data: Arc<str>,
    frame: std::sync::OnceLock<ByteString>,
}

impl Published {
    pub fn new(key: TopicKey, seq: u64, event_id: EventId, kind: Arc<str>, data: Arc<str>) -> Self {
        Published {
            key,
            seq,
            event_id,
            kind,
            data,
            frame: std::sync::OnceLock::new(),
        }
    }

    /// `{"op":"event","topic":…,"seq":…,"type":…,"data":…}`.
    pub fn frame(&self) -> ByteString {
        self.frame
            .get_or_init(|| event_frame(&self.key.topic, self.seq, &self.kind, &self.data))
            .clone()
    }
}

/// `{"op":"event","topic":…,"seq":…,"type":…,"data":…}`; `data` is JSON already.
pub fn event_frame(topic: &str, seq: u64, kind: &str, data: &str) -> ByteString {
    let topic = serde_json::to_string(topic).unwrap_or_default();
    let kind = serde_json::to_string(kind).unwrap_or_default();
    ByteString::from(format!(
        r#"{{"op":"event","topic":{topic},"seq":{seq},"type":{kind},"data":{data}}}"#
    ))
}

/// What a subscriber asking for history gets.
#[derive(Clone, Debug)]
pub enum History {
    /// Every kept event with `seq > since` (none when `since` was not given), oldest
    /// first, and the latest `seq` at the time of reading.
    Events {
        epoch: String,
        latest: u64,
        events: Vec<Arc<Published>>,
    },
    /// `since` is older than the kept history, or the epoch changed: the client refetches
    /// state over REST, then subscribes without `since`.
    Expired { epoch: String, latest: u64 },
}

#[derive(Debug, thiserror::Error)]
#[error("topic log: {0}")]
pub struct LogError(pub String);

/// What else takes committed events once the topic log has them: the open platform's
/// webhooks. `take` must treat an event it has taken before as done (the relay hands an
/// event over again after a crash or a failed hand-over), and answers an error only when
/// the events should stay in the outbox for another try.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn take(&self, events: &[PendingEvent]) -> Result<(), LogError>;
}

/// A sink that takes nothing (a node without webhooks, tests).
pub struct NoSink;

#[async_trait]
impl EventSink for NoSink {
    async fn take(&self, _events: &[PendingEvent]) -> Result<(), LogError> {
        Ok(())
    }
}

/// Per-topic numbering, history and delivery to the local hub.
#[async_trait]
pub trait TopicLog: Send + Sync + 'static {
    /// Numbers and keeps each event on each of its topics, then delivers it. An event id
    /// seen before is skipped (a relay resending after a crash).
    async fn publish(&self, events: &[PendingEvent]) -> Result<(), LogError>;
    /// History of one topic after `since`. `epoch` is what the client saw last; a
    /// different one means the history it knew is gone.
    async fn history(
        &self,
        key: &TopicKey,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<History, LogError>;
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;
}

/// A fresh epoch: changes whenever a topic's history is lost (a restart of the in-memory
/// log, a Redis that lost its data).
pub fn new_epoch() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Decides, from what is kept, whether `since` can be served.
pub fn expired(since: u64, latest: u64, oldest_kept: Option<u64>) -> bool {
    if since > latest {
        return true; // a seq this history never gave out: another epoch's
    }
    if since == latest {
        return false;
    }
    // Events since+1..=latest must all be kept.
    oldest_kept.is_none_or(|oldest| oldest > since + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_since_inside_the_kept_history_is_served() {
        assert!(!expired(5, 5, None), "nothing missed");
        assert!(!expired(4, 9, Some(5)), "5..=9 kept");
        assert!(!expired(0, 3, Some(1)), "from the start");
    }

    #[test]
    fn a_since_older_than_the_kept_history_or_from_another_epoch_expires() {
        assert!(expired(3, 9, Some(5)), "4 was dropped");
        assert!(expired(3, 9, None), "nothing kept");
        assert!(expired(10, 9, Some(1)), "never given out");
    }

    #[test]
    fn frames_escape_the_topic_and_type() {
        let f = event_frame("user:\"x", 7, "payment.succeeded", r#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["topic"], "user:\"x");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["type"], "payment.succeeded");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["op"], "event");
    }
}
