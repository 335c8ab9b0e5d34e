//! The single-node topic log: a bounded ring per topic, in memory. Its epoch is new at
//! every start, so a client resuming across a restart is told `history_expired`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use actix::Addr;
use async_trait::async_trait;
use onecard_schema::ids::{EventId, TenantId};
use onecard_schema::wallet::PendingEvent;

use super::hub::{Deliver, Hub};
use super::{expired, new_epoch, History, LogError, Published, TopicKey, TopicLog};

/// Event ids remembered to drop a resend (well past one sweep's worth).
const SEEN_MAX: usize = 200_000;

pub struct MemoryLog {
    inner: Mutex<Inner>,
    hub: Addr<Hub>,
    epoch: String,
    per_topic: usize,
    total: usize,
}

#[derive(Default)]
struct Inner {
    /// Rings by tenant, then by topic: found by the topic's text, without a key made
    /// (and allocated) per event.
    topics: HashMap<TenantId, HashMap<Arc<str>, Ring>>,
    /// Every kept event, oldest first, to hold the total under `total`.
    order: VecDeque<(TopicKey, u64)>,
    seen: HashSet<EventId>,
    seen_order: VecDeque<EventId>,
}

struct Ring {
    /// The topic's key, shared by all its events.
    key: TopicKey,
    latest: u64,
    events: VecDeque<Arc<Published>>,
}

impl MemoryLog {
    /// Keeps up to `per_topic` events of each topic and `total` in all.
    pub fn new(hub: Addr<Hub>, per_topic: usize, total: usize) -> Self {
        MemoryLog {
            inner: Mutex::default(),
            hub,
            epoch: new_epoch(),
            per_topic: per_topic.max(1),
            total: total.max(1),
        }
    }

    fn append(&self, events: &[PendingEvent]) -> Vec<Arc<Published>> {
        let mut out = Vec::new();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        for p in events {
            if !inner.seen.insert(p.event.id) {
                continue;
            }
            inner.seen_order.push_back(p.event.id);
            if inner.seen_order.len() > SEEN_MAX {
                if let Some(old) = inner.seen_order.pop_front() {
                    inner.seen.remove(&old);
                }
            }
            let data = p.event.payload.shared();
            let kind: Arc<str> = Arc::from(p.event.kind.as_str());
            let rings = inner.topics.entry(p.tenant_id).or_default();
            for topic in &p.event.topics {
                let ring = match rings.get_mut(topic.as_str()) {
                    Some(ring) => ring,
                    None => {
                        let key = TopicKey::new(p.tenant_id, topic);
                        rings.entry(key.topic.clone()).or_insert(Ring {
                            key,
                            latest: 0,
                            events: VecDeque::new(),
                        })
                    }
                };
                ring.latest += 1;
                let key = ring.key.clone();
                let published = Arc::new(Published::new(
                    key.clone(),
                    ring.latest,
                    p.event.id,
                    kind.clone(),
                    data.clone(),
                ));
                ring.events.push_back(published.clone());
                if ring.events.len() > self.per_topic {
                    ring.events.pop_front();
                }
                let seq = ring.latest;
                inner.order.push_back((key, seq));
                out.push(published);
            }
            while inner.order.len() > self.total {
                let Some((key, seq)) = inner.order.pop_front() else {
                    break;
                };
                if let Some(ring) = ring_mut(&mut inner.topics, &key) {
                    if ring.events.front().is_some_and(|e| e.seq == seq) {
                        ring.events.pop_front();
                    }
                }
            }
        }
        out
    }
}

fn ring_mut<'a>(
    topics: &'a mut HashMap<TenantId, HashMap<Arc<str>, Ring>>,
    key: &TopicKey,
) -> Option<&'a mut Ring> {
    topics.get_mut(&key.tenant)?.get_mut(&*key.topic)
}

#[async_trait]
impl TopicLog for MemoryLog {
    async fn publish(&self, events: &[PendingEvent]) -> Result<(), LogError> {
        let published = self.append(events);
        if !published.is_empty() && self.hub.try_send(Deliver(Arc::from(published))).is_err() {
            // A full hub mailbox means the node is overloaded; the events are still in
            // history for a client that resumes.
            tracing::warn!("hub mailbox full: live subscribers miss events");
        }
        Ok(())
    }

    async fn history(
        &self,
        key: &TopicKey,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<History, LogError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ring = inner
            .topics
            .get(&key.tenant)
            .and_then(|rings| rings.get(&*key.topic));
        let (latest, oldest, kept) = match ring {
            Some(r) => (r.latest, r.events.front().map(|e| e.seq), &r.events),
            None => (0, None, &VecDeque::new() as &VecDeque<Arc<Published>>),
        };
        let epoch_now = self.epoch.clone();
        let Some(since) = since else {
            return Ok(History::Events {
                epoch: epoch_now,
                latest,
                events: Vec::new(),
            });
        };
        if epoch.is_some_and(|e| e != self.epoch) || expired(since, latest, oldest) {
            return Ok(History::Expired {
                epoch: epoch_now,
                latest,
            });
        }
        let events = kept.iter().filter(|e| e.seq > since).cloned().collect();
        Ok(History::Events {
            epoch: epoch_now,
            latest,
            events,
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Actor;
    use onecard_schema::ids::TenantId;
    use onecard_schema::wallet::{OutboxEvent, Payload};

    fn pending(tenant: TenantId, topics: &[&str]) -> PendingEvent {
        let id = EventId::new();
        PendingEvent {
            tenant_id: tenant,
            outbox_key: id,
            event: OutboxEvent {
                id,
                topics: topics.iter().map(|t| t.to_string()).collect(),
                kind: "payment.succeeded".into(),
                payload: Payload::of(&serde_json::json!({"amount": 1})),
            },
            created_at: jiff::Timestamp::now(),
        }
    }

    fn seqs(h: &History) -> Vec<u64> {
        match h {
            History::Events { events, .. } => events.iter().map(|e| e.seq).collect(),
            History::Expired { .. } => panic!("expired"),
        }
    }

    #[actix::test]
    async fn numbers_per_topic_drops_resends_and_expires_what_it_no_longer_keeps() {
        let log = MemoryLog::new(Hub::default().start(), 3, 100);
        let t = TenantId::new();
        let first = pending(t, &["terminal:a", "tenant"]);
        log.publish(std::slice::from_ref(&first)).await.unwrap();
        log.publish(&[first.clone(), pending(t, &["terminal:a"])])
            .await
            .unwrap();
        let a = TopicKey::new(t, "terminal:a");
        let tenant = TopicKey::new(t, "tenant");
        assert_eq!(seqs(&log.history(&a, Some(0), None).await.unwrap()), [1, 2]);
        assert_eq!(
            seqs(&log.history(&tenant, Some(0), None).await.unwrap()),
            [1]
        );
        for _ in 0..3 {
            log.publish(&[pending(t, &["terminal:a"])]).await.unwrap();
        }
        // 5 published, 3 kept (3..=5): since 2 is served, since 1 is not.
        assert_eq!(
            seqs(&log.history(&a, Some(2), None).await.unwrap()),
            [3, 4, 5]
        );
        assert!(matches!(
            log.history(&a, Some(1), None).await.unwrap(),
            History::Expired { latest: 5, .. }
        ));
        assert!(matches!(
            log.history(&a, Some(5), Some("another-epoch"))
                .await
                .unwrap(),
            History::Expired { .. }
        ));
        let other = TopicKey::new(TenantId::new(), "terminal:a");
        assert_eq!(
            seqs(&log.history(&other, Some(0), None).await.unwrap()),
            Vec::<u64>::new()
        );
    }

    #[actix::test]
    async fn the_total_bound_evicts_the_oldest_events_of_any_topic() {
        let log = MemoryLog::new(Hub::default().start(), 100, 4);
        let t = TenantId::new();
        for _ in 0..3 {
            log.publish(&[pending(t, &["user:a"])]).await.unwrap();
        }
        for _ in 0..3 {
            log.publish(&[pending(t, &["user:b"])]).await.unwrap();
        }
        let a = TopicKey::new(t, "user:a");
        assert_eq!(seqs(&log.history(&a, Some(2), None).await.unwrap()), [3]);
        assert!(matches!(
            log.history(&a, Some(1), None).await.unwrap(),
            History::Expired { .. }
        ));
    }
}
