//! The open platform's webhooks (SPEC §12): an app names an address and the event types
//! it wants, and each committed event of those types reaches it as a signed `POST`,
//! retried with backoff until the app acknowledges it with a 2xx answer.
//!
//! - **Into the store.** The outbox relay hands every event it has published to
//!   `Webhooks::take` before the outbox forgets it. For each app of the event's tenant that
//!   wants that type (and holds the scope that reads it, on an edition with the open API)
//!   the store gets one delivery row, unique per app and event, so an event handed over
//!   twice (a crash, two nodes' sweeps) is delivered once. A failed write leaves the event
//!   in the outbox for the sweep: no committed event is lost between the two.
//! - **Out to the app.** The node that stores a delivery stores it leased to itself and
//!   sends it at once, from memory. Every node's deliverer also claims due deliveries
//!   (retries, and those whose lease ran out) with a lease of its own (on PostgreSQL
//!   `FOR UPDATE SKIP LOCKED`, so nodes share the work without sending one delivery twice
//!   at once). A node sends 32 at a time, at most 8 to one app; an app's further
//!   deliveries wait for its turn, so an app whose server hangs holds up only its own.
//!   Outcomes are recorded many per statement. A failure waits
//!   `retry_base × 2^(attempt−1)`, at most an hour, ±20 %; after `give_up` (3 days) the
//!   delivery is `failed` and an admin may send it again. A node that stops mid-send
//!   leaves its deliveries to be taken again when their lease ends.
//! - **Signed like the app's own requests** (`crate::apps`): the same headers and the same
//!   text, `POST \n PATH?QUERY \n TIMESTAMP \n NONCE \n hex(SHA-256(body))`, with the path
//!   and query of the webhook address and a nonce new for every attempt. `X-Event-Id`
//!   stays the same across attempts: apps de-duplicate by it.
//!
//! Deliveries are not ordered: a retried event may arrive after a later one. Each body
//! carries the event's time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use onecard_actors::clock::Clock;
use onecard_actors::domain::edition::{has_capability, Capability};
use onecard_actors::realtime::relay::gather;
use onecard_actors::realtime::{EventSink, LogError};
use onecard_schema::ids::{AppId, DeliveryId, TenantId};
use onecard_schema::model::{
    ClaimedDelivery, DeliveryOutcome, DeliveryStatus, NewDelivery, WebhookEvent,
};
use onecard_schema::wallet::PendingEvent;
use onecard_schema::Store;
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::cache::TtlCache;
use crate::state::AppState;

/// Deliveries one node sends at once.
const IN_FLIGHT_MAX: usize = 32;
/// Deliveries one node sends to one app at once. More for that app wait for its turn
/// (a claim leaves an app whose places are all taken), so an app that answers slowly
/// waits for its own deliveries and never holds up the others'.
const PER_APP_MAX: usize = 8;
/// Deliveries waiting in memory for their app's turn; past that, they wait for their
/// lease to end and a claim.
const PER_APP_WAITING_MAX: usize = 4_096;
/// The longest wait between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// Bytes of an answer read (and dropped) so that its connection can be reused.
const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// Characters of an attempt's error kept for admins.
const ERROR_CHARS_MAX: usize = 300;
/// Finished deliveries are kept this long for admins to look at, then purged.
const KEEP_FINISHED: SignedDuration = SignedDuration::from_hours(24 * 30);
/// Finished deliveries purged per statement.
const PURGE_BATCH: usize = 1_000;
/// Deliveries stored by this node waiting for a sending slot; past that, they wait for
/// their lease to run out and a claim.
const HANDOFF_MAX: usize = 16_384;
/// Outcomes recorded per statement, at most, and how long the first waits for others.
const FINISH_MAX: usize = 1_024;
const FINISH_GATHER: Duration = Duration::from_millis(5);

/// When deliveries are tried, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct WebhookTiming {
    /// How often a node looks for due deliveries when nothing wakes it (1 s).
    pub poll: Duration,
    /// The wait after a first failed attempt, doubling after each (10 s).
    pub retry_base: Duration,
    /// How long an event is retried before its delivery is given up (3 days).
    pub give_up: SignedDuration,
    /// How long one attempt may take, connecting included (10 s).
    pub timeout: Duration,
}

impl Default for WebhookTiming {
    fn default() -> Self {
        WebhookTiming {
            poll: Duration::from_secs(1),
            retry_base: Duration::from_secs(10),
            give_up: SignedDuration::from_hours(72),
            timeout: Duration::from_secs(10),
        }
    }
}

/// An app that wants some of a tenant's events, and where they go.
struct Subscriber {
    app: AppId,
    events: Vec<WebhookEvent>,
    url: Arc<str>,
    secret_version: i32,
}

/// The relay's sink for webhooks, and what wakes this node's deliverer.
pub struct Webhooks {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    timing: WebhookTiming,
    /// Who wants what, by tenant; reloaded every few seconds, and at once after this
    /// node changes an app.
    subscribers: TtlCache<(), Arc<HashMap<TenantId, Vec<Subscriber>>>>,
    wake: Notify,
    /// Deliveries this node stored leased to itself, for its deliverer to send now.
    handoff: mpsc::Sender<ClaimedDelivery>,
    handed: Mutex<Option<mpsc::Receiver<ClaimedDelivery>>>,
}

impl Webhooks {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, timing: WebhookTiming) -> Self {
        let (handoff, handed) = mpsc::channel(HANDOFF_MAX);
        Webhooks {
            store,
            clock,
            timing,
            subscribers: TtlCache::default(),
            wake: Notify::new(),
            handoff,
            handed: Mutex::new(Some(handed)),
        }
    }

    pub fn timing(&self) -> WebhookTiming {
        self.timing
    }

    /// An app changed on this node: events from now on follow its new settings.
    pub fn forget_subscribers(&self) {
        self.subscribers.remove(&());
    }

    /// Deliveries are due now (a new one, an admin's redelivery): the deliverer looks.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn subscribers(&self) -> Result<Arc<HashMap<TenantId, Vec<Subscriber>>>, LogError> {
        if let Some(s) = self.subscribers.get(&()) {
            return Ok(s);
        }
        let rows = self
            .store
            .webhook_subscriptions()
            .await
            .map_err(|e| LogError(format!("webhooks: {e}")))?;
        let mut by_tenant: HashMap<TenantId, Vec<Subscriber>> = HashMap::new();
        for s in rows {
            if !has_capability(s.edition, Capability::OpenApi) {
                continue;
            }
            // An event type stays out while the app lacks the scope that reads it.
            let events = s
                .events
                .into_iter()
                .filter(|e| s.scopes.contains(&e.scope()))
                .collect::<Vec<_>>();
            if !events.is_empty() {
                by_tenant.entry(s.tenant).or_default().push(Subscriber {
                    app: s.app,
                    events,
                    url: s.url.into(),
                    secret_version: s.secret_version,
                });
            }
        }
        let by_tenant = Arc::new(by_tenant);
        self.subscribers.put((), by_tenant.clone());
        Ok(by_tenant)
    }
}

/// How long a node keeps a delivery it is sending from the others.
fn lease(timing: WebhookTiming) -> SignedDuration {
    SignedDuration::try_from(timing.timeout * 3).unwrap_or(SignedDuration::from_secs(30))
}

/// The deliveries `events` make at `now`: one per event and app that wants it, leased to
/// this node, which sends it at once. Only tenant-wide events and check-ins go to apps (a
/// cardholder's own reminders do not).
fn deliveries(
    subscribers: &HashMap<TenantId, Vec<Subscriber>>,
    events: &[PendingEvent],
    now: Timestamp,
    timing: WebhookTiming,
) -> Vec<ClaimedDelivery> {
    let mut out = Vec::new();
    for e in events {
        let Some(subs) = subscribers.get(&e.tenant_id) else {
            continue;
        };
        let Some(kind) = WebhookEvent::parse(&e.event.kind) else {
            continue;
        };
        // Once each: by the tenant's topic, or an event's for check-ins.
        if !e
            .event
            .topics
            .iter()
            .any(|t| t == "tenant" || t.starts_with("event:"))
        {
            continue;
        }
        for s in subs.iter().filter(|s| s.events.contains(&kind)) {
            out.push(ClaimedDelivery {
                delivery: NewDelivery {
                    id: DeliveryId::new(),
                    tenant: e.tenant_id,
                    app: s.app,
                    event_id: e.event.id.0,
                    kind: kind.as_str().into(),
                    payload: e.event.payload.as_str().into(),
                    event_at: e.created_at,
                    give_up_at: now + timing.give_up,
                    created_at: now,
                    lease_until: Some(now + lease(timing)),
                },
                attempt: 1,
                url: s.url.to_string(),
                secret_version: s.secret_version,
            });
        }
    }
    out
}

#[async_trait]
impl EventSink for Webhooks {
    async fn take(&self, events: &[PendingEvent]) -> Result<(), LogError> {
        let subscribers = self.subscribers().await?;
        if subscribers.is_empty() {
            return Ok(());
        }
        let made = deliveries(&subscribers, events, self.clock.now(), self.timing);
        if made.is_empty() {
            return Ok(());
        }
        let new: HashSet<DeliveryId> = self
            .store
            .enqueue_deliveries(made.iter().map(|c| c.delivery.clone()).collect())
            .await
            .map_err(|e| LogError(format!("webhooks: {e}")))?
            .into_iter()
            .collect();
        // Only the ones stored now are this node's to send: an event handed over again
        // already has its delivery, sent or leased by whoever stored it.
        for c in made.into_iter().filter(|c| new.contains(&c.delivery.id)) {
            if self.handoff.try_send(c).is_err() {
                tracing::warn!("webhook deliverer busy: a delivery waits for its lease to end");
                break;
            }
        }
        Ok(())
    }
}

/// The wait after failed attempt number `attempt` (1-based), before jitter.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// What to do after a failed attempt: retry at some time before `give_up_at`, or give up.
fn after_failure(c: &ClaimedDelivery, timing: WebhookTiming, now: Timestamp) -> Option<Timestamp> {
    let wait = backoff(timing.retry_base, c.attempt).mul_f64(rand::random_range(0.8..1.2));
    let at = now + SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
    (at <= c.delivery.give_up_at).then_some(at)
}

/// The body of a delivery: the same for every attempt.
fn body(d: &NewDelivery) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: uuid::Uuid,
        #[serde(rename = "type")]
        kind: &'a str,
        created_at: Timestamp,
        tenant_id: TenantId,
        data: &'a serde_json::value::RawValue,
    }
    let null = serde_json::value::RawValue::from_string("null".into()).expect("valid JSON");
    let data: Box<serde_json::value::RawValue> = serde_json::from_str(&d.payload).unwrap_or(null);
    serde_json::to_vec(&Body {
        id: d.event_id,
        kind: &d.kind,
        created_at: d.event_at,
        tenant_id: d.tenant,
        data: &data,
    })
    .unwrap_or_default()
}

/// One attempt: the answer's status, and why it failed if it did.
async fn attempt(
    client: &reqwest::Client,
    state: &AppState,
    c: &ClaimedDelivery,
) -> (Option<i32>, Option<String>) {
    let Ok(url) = reqwest::Url::parse(&c.url) else {
        return (None, Some("the app has no valid webhook address".into()));
    };
    let nonce = format!("{}-{}", c.delivery.id, c.attempt);
    let secret = state.keys.app_secret(c.delivery.app, c.secret_version);
    let timestamp = state.clock.now().as_second();
    let sent = crate::apps::signed_post(client, url, &secret, timestamp, &nonce, body(&c.delivery))
        .header(crate::apps::APP_KEY, c.delivery.app.to_string())
        .header("x-event-id", c.delivery.event_id.to_string())
        .header("x-event-type", &c.delivery.kind)
        .header("x-delivery-id", c.delivery.id.to_string())
        .header("x-delivery-attempt", c.attempt.to_string())
        .send()
        .await;
    let mut answer = match sent {
        Ok(answer) => answer,
        Err(e) => return (None, Some(describe(&e))),
    };
    let status = answer.status();
    let mut read = 0;
    while let Ok(Some(chunk)) = answer.chunk().await {
        read += chunk.len();
        if read > ANSWER_BYTES_MAX {
            break;
        }
    }
    let code = Some(i32::from(status.as_u16()));
    if status.is_success() {
        (code, None)
    } else if status.is_redirection() {
        (
            code,
            Some(format!("answered {status}: redirects are not followed")),
        )
    } else {
        (code, Some(format!("answered {status}")))
    }
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The chain names the cause (refused, reset, DNS, TLS) without the address again.
    let mut text = what.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(ERROR_CHARS_MAX).collect()
}

/// This node's deliveries by app: how many it is sending to each, and those waiting for
/// their app's turn.
#[derive(Default)]
struct PerApp(Mutex<HashMap<AppId, Lane>>);

#[derive(Default)]
struct Lane {
    sending: usize,
    waiting: std::collections::VecDeque<ClaimedDelivery>,
}

impl PerApp {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<AppId, Lane>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `c` back to send now if its app has room; else it waits for its app's turn (or,
    /// past `PER_APP_WAITING_MAX`, for its lease to end and a claim).
    fn offer(&self, c: ClaimedDelivery) -> Option<ClaimedDelivery> {
        let mut map = self.map();
        let lane = map.entry(c.delivery.app).or_default();
        if lane.sending < PER_APP_MAX {
            lane.sending += 1;
            Some(c)
        } else {
            if lane.waiting.len() < PER_APP_WAITING_MAX {
                lane.waiting.push_back(c);
            }
            None
        }
    }

    /// A send to `app` ended: the next delivery waiting for it, to send in its place.
    fn next(&self, app: AppId) -> Option<ClaimedDelivery> {
        let mut map = self.map();
        let lane = map.get_mut(&app)?;
        if let Some(c) = lane.waiting.pop_front() {
            return Some(c);
        }
        lane.sending = lane.sending.saturating_sub(1);
        if lane.sending == 0 {
            map.remove(&app);
        }
        None
    }

    /// The apps with every sending place taken, for a claim to leave.
    fn busy(&self) -> Vec<AppId> {
        self.map()
            .iter()
            .filter(|(_, lane)| lane.sending >= PER_APP_MAX)
            .map(|(app, _)| *app)
            .collect()
    }
}

/// Sends one claimed delivery and hands what came of it to `done`.
async fn deliver(
    client: reqwest::Client,
    state: Arc<AppState>,
    c: ClaimedDelivery,
    done: mpsc::UnboundedSender<Vec<DeliveryOutcome>>,
) {
    let timing = state.webhooks.timing();
    // One handed over that waited past its lease (every slot was busy) is a claim's now:
    // sending it too would send it twice.
    if c.delivery
        .lease_until
        .is_some_and(|until| state.clock.now() >= until)
    {
        return;
    }
    let (http_status, error) = attempt(&client, &state, &c).await;
    let now = state.clock.now();
    let (status, retry_at) = match &error {
        None => (DeliveryStatus::Delivered, None),
        Some(_) => match after_failure(&c, timing, now) {
            Some(at) => (DeliveryStatus::Pending, Some(at)),
            None => (DeliveryStatus::Failed, None),
        },
    };
    metrics::counter!("webhook_attempts_total", "outcome" => status.as_str()).increment(1);
    if let Some(e) = &error {
        tracing::info!(delivery = %c.delivery.id, app = %c.delivery.app, attempt = c.attempt,
            error = %e, gave_up = retry_at.is_none(), "webhook attempt failed");
    }
    let _ = done.send(vec![DeliveryOutcome {
        id: c.delivery.id,
        attempt: c.attempt,
        at: now,
        http_status,
        error,
        status,
        retry_at,
    }]);
}

/// Records outcomes, many per statement.
async fn finish(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Vec<DeliveryOutcome>>) {
    while let Some(outcomes) = gather(&mut rx, FINISH_GATHER, FINISH_MAX).await {
        if let Err(e) = store.finish_deliveries(outcomes).await {
            // Their leases run out and they are tried again.
            tracing::warn!(error = %e, "could not record webhook attempts");
        }
    }
}

/// This node's deliverer: sends what this node stored a moment ago as it comes, and
/// claims due deliveries every `poll` and when woken, until the server stops.
pub fn spawn_deliverer(state: Arc<AppState>) -> anyhow::Result<()> {
    let timing = state.webhooks.timing();
    let client = reqwest::Client::builder()
        .timeout(timing.timeout)
        .connect_timeout(timing.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("OneCard-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut handed = state
        .webhooks
        .handed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| anyhow::anyhow!("the webhook deliverer runs already"))?;
    let (done, outcomes) = mpsc::unbounded_channel();
    actix_web::rt::spawn(finish(state.store.clone(), outcomes));
    let weak = Arc::downgrade(&state);
    drop(state);
    actix_web::rt::spawn(async move {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
        let per_app = Arc::new(PerApp::default());
        // `c` has a place of its app's (`PerApp::offer`); the place, and the node's
        // sending slot, go on to the app's next waiting delivery, if any.
        let send = |state: &Arc<AppState>, c: ClaimedDelivery, slot| {
            let (client, state, done) = (client.clone(), state.clone(), done.clone());
            let per_app = per_app.clone();
            actix_web::rt::spawn(async move {
                let app = c.delivery.app;
                let mut next = Some(c);
                while let Some(c) = next {
                    deliver(client.clone(), state.clone(), c, done.clone()).await;
                    next = per_app.next(app);
                }
                drop(slot);
            });
        };
        // Claims run on the tick and when woken, not after each delivery handed over, so
        // that a busy node does not ask the store for due ones between every two sends.
        let mut tick = tokio::time::interval(timing.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(webhooks) = weak.upgrade().map(|s| s.webhooks.clone()) else {
                return;
            };
            tokio::select! {
                got = handed.recv() => {
                    let Some(c) = got else { return };
                    let Some(c) = per_app.offer(c) else { continue };
                    let Ok(slot) = slots.clone().acquire_owned().await else { return };
                    let Some(state) = weak.upgrade() else { return };
                    send(&state, c, slot);
                    continue;
                }
                _ = webhooks.wake.notified() => {}
                _ = tick.tick() => {}
            }
            drop(webhooks);
            // What is due, as long as claims come back full.
            loop {
                if slots.available_permits() == 0 {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    drop(slot);
                }
                let Some(state) = weak.upgrade() else { return };
                let free = slots.available_permits();
                let now = state.clock.now();
                let claimed = match state
                    .store
                    .claim_deliveries(now, now + lease(timing), free, PER_APP_MAX, per_app.busy())
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim webhook deliveries");
                        break;
                    }
                };
                let full = claimed.len() == free;
                for c in claimed {
                    let Some(c) = per_app.offer(c) else { continue };
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    send(&state, c, slot);
                }
                if !full {
                    break;
                }
            }
        }
    });
    Ok(())
}

/// Sets `webhook_deliveries_pending` and `webhook_oldest_pending_seconds` every 15 s: a
/// backlog that grows, or an oldest delivery that keeps ageing, is an app whose server
/// does not acknowledge (docs/OPERATIONS.md).
pub fn spawn_backlog_gauges(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(15),
        "webhook backlog gauges",
        |state| async move {
            let (pending, oldest) = state.store.webhook_backlog().await?;
            metrics::gauge!("webhook_deliveries_pending").set(pending as f64);
            let age = oldest.map_or(0.0, |at| {
                state.clock.now().duration_since(at).as_secs_f64().max(0.0)
            });
            metrics::gauge!("webhook_oldest_pending_seconds").set(age);
            Ok(())
        },
    );
}

/// Forgets delivered and given-up deliveries after 30 days, every hour.
pub fn spawn_purge(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(3600),
        "webhook delivery purge",
        |state| async move {
            let before = state.clock.now() - KEEP_FINISHED;
            crate::tasks::drain(PURGE_BATCH, || {
                state.store.purge_deliveries(before, PURGE_BATCH)
            })
            .await?;
            Ok(())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecard_schema::ids::EventId;
    use onecard_schema::wallet::{OutboxEvent, Payload};

    fn event(tenant: TenantId, kind: &str, topics: &[&str]) -> PendingEvent {
        let id = EventId::new();
        PendingEvent {
            tenant_id: tenant,
            event: OutboxEvent {
                id,
                topics: topics.iter().map(|t| t.to_string()).collect(),
                kind: kind.into(),
                payload: Payload::of(&serde_json::json!({ "kind": kind })),
            },
            created_at: Timestamp::UNIX_EPOCH,
            outbox_key: id,
        }
    }

    #[test]
    fn each_tenant_wide_event_goes_to_each_app_of_its_tenant_that_wants_its_type() {
        let (t, other) = (TenantId::new(), TenantId::new());
        let (gate, books) = (AppId::new(), AppId::new());
        let subscribers = HashMap::from([(
            t,
            vec![
                Subscriber {
                    app: gate,
                    events: vec![
                        WebhookEvent::PaymentSucceeded,
                        WebhookEvent::WalletFrozen,
                        WebhookEvent::CheckinConfirmed,
                    ],
                    url: "https://gate.example/hook".into(),
                    secret_version: 3,
                },
                Subscriber {
                    app: books,
                    events: vec![WebhookEvent::PaymentSucceeded],
                    url: "https://books.example/".into(),
                    secret_version: 1,
                },
            ],
        )]);
        let events = [
            event(t, "payment.succeeded", &["terminal:1", "user:1", "tenant"]),
            // A type nobody asked for, a cardholder's own event, another tenant's.
            event(t, "payment.refunded", &["user:1", "tenant"]),
            event(t, "wallet.frozen", &["user:1"]),
            event(t, "arrears.reminder", &["user:1"]),
            event(other, "payment.succeeded", &["tenant"]),
            event(t, "wallet.frozen", &["tenant"]),
            // A check-in goes to its event's topic and the person's, not the tenant's.
            event(t, "checkin.confirmed", &["event:1", "user:1"]),
            event(t, "checkin.failed", &["event:1"]),
        ];
        let now = Timestamp::from_second(1_000).unwrap();
        let timing = WebhookTiming::default();
        let made = deliveries(&subscribers, &events, now, timing);
        let got: Vec<(AppId, uuid::Uuid, &str)> = made
            .iter()
            .map(|c| {
                (
                    c.delivery.app,
                    c.delivery.event_id,
                    c.delivery.kind.as_str(),
                )
            })
            .collect();
        let (paid, frozen) = (events[0].event.id.0, events[5].event.id.0);
        let checked_in = events[6].event.id.0;
        assert_eq!(
            got,
            [
                (gate, paid, "payment.succeeded"),
                (books, paid, "payment.succeeded"),
                (gate, frozen, "wallet.frozen"),
                (gate, checked_in, "checkin.confirmed"),
            ]
        );
        let first = &made[0];
        assert_eq!(
            (first.url.as_str(), first.secret_version, first.attempt),
            ("https://gate.example/hook", 3, 1)
        );
        let d = &first.delivery;
        assert_eq!(d.payload, r#"{"kind":"payment.succeeded"}"#);
        assert_eq!(d.give_up_at, now + SignedDuration::from_hours(72));
        // Leased to this node, which sends it at once; another node takes it only if
        // this one has not finished with it by then.
        assert_eq!(d.lease_until, Some(now + SignedDuration::from_secs(30)));
        assert_eq!((d.tenant, d.event_at), (t, Timestamp::UNIX_EPOCH));
        assert_ne!(d.id, made[1].delivery.id);
    }

    #[test]
    fn event_types_read_and_write_as_their_websocket_names() {
        for e in WebhookEvent::ALL {
            let text = serde_json::to_value(e).unwrap();
            assert_eq!(text, serde_json::json!(e.as_str()));
            assert_eq!(serde_json::from_value::<WebhookEvent>(text).unwrap(), *e);
        }
    }

    #[test]
    fn a_delivery_body_carries_the_event_and_its_data_as_json() {
        let d = NewDelivery {
            id: DeliveryId::new(),
            tenant: TenantId::new(),
            app: AppId::new(),
            event_id: uuid::Uuid::now_v7(),
            kind: "payment.succeeded".into(),
            payload: r#"{"amount":300}"#.into(),
            event_at: Timestamp::from_second(1_000).unwrap(),
            give_up_at: Timestamp::from_second(2_000).unwrap(),
            created_at: Timestamp::from_second(1_000).unwrap(),
            lease_until: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&d)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": d.event_id, "type": "payment.succeeded",
                "created_at": "1970-01-01T00:16:40Z", "tenant_id": d.tenant,
                "data": {"amount": 300},
            })
        );
    }

    #[test]
    fn the_wait_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=11).map(|n| backoff(base, n).as_secs()).collect();
        assert_eq!(
            waits,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(backoff(base, i32::MAX), RETRY_MAX);
        assert_eq!(backoff(base, 0), base);
    }
}
