//! The hub: which session listens to which topic, and the fan-out of each event to them.
//!
//! Events come in batches (one per publish: a whole group commit's worth), and each
//! session gets one message per topic per batch, so a burst costs a session one mailbox
//! slot, not hundreds. The hub never waits on a session: it offers each message with
//! `try_send`, and a session whose mailbox is full has fallen too far behind (its socket
//! stopped draining, so actix stopped running it), so the hub drops all its subscriptions
//! and tells it once, with `Lagged`, to close with 1013.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::{Published, TopicKey};

/// Events for subscribers, in `seq` order per topic. To the hub: any topics; from the hub
/// to a session: one topic's events of one batch.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Arc<[Arc<Published>]>);

impl Deliver {
    pub fn one(event: Published) -> Self {
        Deliver(Arc::from(vec![Arc::new(event)]))
    }
}

/// The session fell behind and was unsubscribed from everything.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Lagged;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub key: TopicKey,
    pub session: u64,
    pub to: Recipient<Deliver>,
    pub lagged: Recipient<Lagged>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub key: TopicKey,
    pub session: u64,
}

/// The session is gone: forget every subscription it had.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: u64,
}

/// Also hand every event of topics starting with `prefix` to `to` (merchant actors follow
/// `merchant:` this way). Sent with `do_send`: a tap is in-process and never slow for long.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tap {
    pub prefix: &'static str,
    pub to: Recipient<Deliver>,
}

struct Sub {
    session: u64,
    to: Recipient<Deliver>,
    lagged: Recipient<Lagged>,
}

#[derive(Default)]
pub struct Hub {
    topics: HashMap<TopicKey, Vec<Sub>>,
    by_session: HashMap<u64, Vec<TopicKey>>,
    taps: Vec<Tap>,
}

/// Subscriptions held, events delivered and sessions cut off (exported as metrics).
pub static SUBSCRIPTIONS: AtomicU64 = AtomicU64::new(0);
pub static DELIVERED: AtomicU64 = AtomicU64::new(0);
pub static LAGGED: AtomicU64 = AtomicU64::new(0);

impl Hub {
    /// Subscribers of a topic on this node.
    pub fn subscribers(&self, key: &TopicKey) -> usize {
        self.topics.get(key).map_or(0, Vec::len)
    }

    fn drop_session(&mut self, session: u64) {
        for key in self.by_session.remove(&session).unwrap_or_default() {
            if let Some(subs) = self.topics.get_mut(&key) {
                let before = subs.len();
                subs.retain(|s| s.session != session);
                SUBSCRIPTIONS.fetch_sub((before - subs.len()) as u64, Ordering::Relaxed);
                if subs.is_empty() {
                    self.topics.remove(&key);
                }
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Events arrive in bursts of a whole group commit.
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        let subs = self.topics.entry(msg.key.clone()).or_default();
        if subs.iter().any(|s| s.session == msg.session) {
            return;
        }
        subs.push(Sub {
            session: msg.session,
            to: msg.to,
            lagged: msg.lagged,
        });
        SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed);
        self.by_session
            .entry(msg.session)
            .or_default()
            .push(msg.key);
    }
}

impl Handler<Tap> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Tap, _: &mut Self::Context) {
        self.taps.push(msg);
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        if let Some(subs) = self.topics.get_mut(&msg.key) {
            let before = subs.len();
            subs.retain(|s| s.session != msg.session);
            SUBSCRIPTIONS.fetch_sub((before - subs.len()) as u64, Ordering::Relaxed);
            if subs.is_empty() {
                self.topics.remove(&msg.key);
            }
        }
        if let Some(keys) = self.by_session.get_mut(&msg.session) {
            keys.retain(|k| *k != msg.key);
        }
    }
}

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        self.drop_session(msg.session);
    }
}

impl Handler<Deliver> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        for tap in &self.taps {
            let events: Vec<Arc<Published>> = msg
                .0
                .iter()
                .filter(|e| e.key.topic.starts_with(tap.prefix))
                .cloned()
                .collect();
            if !events.is_empty() {
                tap.to.do_send(Deliver(Arc::from(events)));
            }
        }
        // Split the batch by topic (only topics someone here listens to), keeping each
        // topic's order.
        let mut by_topic: HashMap<&TopicKey, Vec<Arc<Published>>> = HashMap::new();
        for e in msg.0.iter() {
            if self.topics.contains_key(&e.key) {
                by_topic.entry(&e.key).or_default().push(e.clone());
            }
        }
        let mut behind = Vec::new();
        for (key, events) in by_topic {
            let Some(subs) = self.topics.get(key) else {
                continue;
            };
            let events: Arc<[Arc<Published>]> = Arc::from(events);
            for s in subs {
                match s.to.try_send(Deliver(events.clone())) {
                    Ok(()) => {
                        DELIVERED.fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                    // Full: too far behind. Closed: stopped, not yet gone.
                    Err(SendError::Full(_) | SendError::Closed(_)) => {
                        behind.push((s.session, s.lagged.clone()));
                    }
                }
            }
        }
        behind.sort_by_key(|(s, _)| *s);
        behind.dedup_by_key(|(s, _)| *s);
        for (session, lagged) in behind {
            self.drop_session(session);
            LAGGED.fetch_add(1, Ordering::Relaxed);
            // One message past the bound, once: the session closes itself on it.
            lagged.do_send(Lagged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecard_schema::ids::{EventId, TenantId};

    struct Probe {
        got: Arc<std::sync::Mutex<Vec<u64>>>,
        lagged: Arc<std::sync::atomic::AtomicBool>,
    }
    impl Actor for Probe {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Probe {
        type Result = ();
        fn handle(&mut self, m: Deliver, _: &mut Self::Context) {
            self.got.lock().unwrap().extend(m.0.iter().map(|e| e.seq));
        }
    }
    impl Handler<Lagged> for Probe {
        type Result = ();
        fn handle(&mut self, _: Lagged, _: &mut Self::Context) {
            self.lagged.store(true, Ordering::SeqCst);
        }
    }

    fn event(key: &TopicKey, seq: u64) -> Deliver {
        Deliver::one(Published::new(
            key.clone(),
            seq,
            EventId::new(),
            Arc::from("t"),
            Arc::from("{}"),
        ))
    }

    #[actix::test]
    async fn events_reach_subscribers_of_their_topic_only_until_they_unsubscribe() {
        let hub = Hub::default().start();
        let tenant = TenantId::new();
        let a = TopicKey::new(tenant, "terminal:a");
        let b = TopicKey::new(tenant, "terminal:b");
        let other_tenant = TopicKey::new(TenantId::new(), "terminal:a");
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let probe = Probe {
            got: got.clone(),
            lagged: Default::default(),
        }
        .start();
        hub.send(Subscribe {
            key: a.clone(),
            session: 1,
            to: probe.clone().recipient(),
            lagged: probe.clone().recipient(),
        })
        .await
        .unwrap();
        hub.send(event(&a, 1)).await.unwrap();
        hub.send(event(&b, 1)).await.unwrap();
        hub.send(event(&other_tenant, 9)).await.unwrap();
        hub.send(Unsubscribe {
            key: a.clone(),
            session: 1,
        })
        .await
        .unwrap();
        hub.send(event(&a, 2)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(*got.lock().unwrap(), vec![1]);
    }
}
