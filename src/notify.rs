//! The notifier (SPEC §10): sends notices' deliveries on the tenant's channels in their
//! priority order, falling back to the next channel when one fails or cannot reach the
//! person, within each channel's rate limit, and starts scheduled notices when their time
//! comes.
//!
//! - **Durable queue.** A send writes one queued delivery per person (the store's
//!   `start_notice_round`), so nothing waits in memory alone: every node's loop claims due
//!   deliveries with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), sends them, and
//!   records the outcomes many per statement. A node that stops mid-send leaves its
//!   deliveries to be claimed again when their lease ends (the person may then get the
//!   notice twice; never not at all).
//! - **Channels.** `sms` goes through the server's text gateway (`crate::texts`) to the
//!   person's phone. `official_account` and `messenger` go to the tenant's adapter for that
//!   channel: a signed `POST` (as webhooks are signed; the secret is the tenant's channel
//!   secret) of `{"type":"notice.deliver", …}`, answered with
//!   `{"status":"delivered"|"sent"|"unreachable"}`. Unreachable, a failed answer, a
//!   timeout or a person with no phone falls back to the next usable channel; with none
//!   left the delivery is `failed`.
//! - **Rate limits.** Each tenant's channel sends at most its `per_minute` a minute per
//!   node (governor). A delivery over the limit is not sent: it waits, queued, for a slot
//!   of its own in the channel's backlog (one per `60 s / per_minute`), so a big notice
//!   never holds a lease it cannot use and each delivery is put off once, not claimed
//!   and put off again every second.
//! - **Live status.** Every recorded change writes a `notice.delivery` event (with the
//!   round's counts) for the notice's topic in the same transaction; the relay delivers
//!   it to dashboards.
//! - **Recall.** Deliveries not sent yet never go; for those an adapter took, the adapter
//!   is told (`{"type":"notice.recall", …}`) so the channel can withdraw them. A text
//!   message cannot be taken back.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::SignedDuration;
use onecard_schema::ids::{NoticeDeliveryId, TenantId, UserId};
use onecard_schema::model::{Audit, NoticeChannel};
use onecard_schema::notice_store::{
    ChannelSetting, ClaimedNoticeDelivery, Notice, NoticeAudience, NoticeOutcome, NoticeRound,
    NoticeSettings, RecalledDelivery,
};
use onecard_schema::wallet::PendingEvent;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::adapter::NoAnswer;
use crate::problem::ApiError;
use crate::state::AppState;

/// Deliveries one node claims at a time.
const CLAIM_MAX: usize = 256;
/// How long a claim holds its deliveries: past it another node may take them.
const LEASE: SignedDuration = SignedDuration::from_secs(120);
/// Sends in flight at once per node.
const IN_FLIGHT_MAX: usize = 16;
/// How often a node looks for due work when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);
/// Scheduled notices started per look.
const DUE_MAX: usize = 100;
/// How long an adapter has to answer.
const ADAPTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of an adapter's answer read at most.
const ANSWER_BYTES_MAX: usize = 16 * 1024;

type Limiters = HashMap<(TenantId, NoticeChannel), (u32, Arc<DefaultDirectRateLimiter>)>;
type Backlogs = HashMap<(TenantId, NoticeChannel), jiff::Timestamp>;

/// The node's notifier: what wakes its loop, its channels' rate limiters and its client
/// for channel adapters.
pub struct Notifier {
    wake: Notify,
    limiters: Mutex<Limiters>,
    /// Per channel, the first free send slot after the deliveries already put off: each
    /// one over the limit gets a slot of its own, so a big notice is put off once per
    /// delivery, not claimed and put off again every second.
    backlogs: Mutex<Backlogs>,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Notifier {
            wake: Notify::new(),
            limiters: Mutex::new(HashMap::new()),
            backlogs: Mutex::new(HashMap::new()),
            client: reqwest::Client::builder()
                .timeout(ADAPTER_TIMEOUT)
                .connect_timeout(ADAPTER_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("OneCard-Notices/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }

    /// Has the loop look for work now (a notice was just sent).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// `Ok` when the channel may send one more now; else how long until it may.
    fn admit(&self, tenant: TenantId, setting: &ChannelSetting) -> Result<(), Duration> {
        let per_minute = setting.per_minute.max(1);
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            let entry = limiters
                .entry((tenant, setting.channel))
                .or_insert_with(|| (0, Arc::new(limiter(per_minute))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(limiter(per_minute)));
            }
            entry.1.clone()
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

impl Notifier {
    /// When a delivery over the channel's limit is next tried: its own slot in the
    /// channel's backlog, no earlier than `earliest`.
    fn slot(
        &self,
        tenant: TenantId,
        setting: &ChannelSetting,
        earliest: jiff::Timestamp,
    ) -> jiff::Timestamp {
        let interval =
            SignedDuration::from_millis((60_000 / i64::from(setting.per_minute.max(1))).max(1));
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|p| p.into_inner());
        let next = backlogs
            .entry((tenant, setting.channel))
            .or_insert(earliest);
        let at = (*next).max(earliest);
        *next = at + interval;
        at
    }
}

fn limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(n))
}

/// Starts the node's notifier loop: scheduled notices whose time came, then due
/// deliveries, every `POLL` or when woken, for as long as the server's state lives.
pub fn spawn(state: Arc<AppState>) {
    let weak = Arc::downgrade(&state);
    drop(state);
    actix_web::rt::spawn(async move {
        loop {
            let Some(state) = weak.upgrade() else { break };
            if let Err(e) = work(&state).await {
                tracing::warn!(error = %e, "notifier round failed");
            }
            let notifier = state.notifier.clone();
            drop(state);
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = notifier.wake.notified() => {}
            }
        }
    });
}

async fn work(state: &Arc<AppState>) -> Result<(), ApiError> {
    start_due(state).await?;
    loop {
        let now = state.clock.now();
        let claimed = state
            .store
            .claim_notice_deliveries(now, now + LEASE, CLAIM_MAX)
            .await?;
        let full = claimed.len() == CLAIM_MAX;
        let mut by_tenant: BTreeMap<TenantId, Vec<ClaimedNoticeDelivery>> = BTreeMap::new();
        for d in claimed {
            by_tenant.entry(d.tenant).or_default().push(d);
        }
        for (tenant, deliveries) in by_tenant {
            let settings = state.store.notice_settings(tenant).await?;
            let outcomes: Vec<(NoticeDeliveryId, NoticeOutcome)> =
                futures_util::stream::iter(deliveries)
                    .map(|d| deliver(state, &settings, d))
                    .buffer_unordered(IN_FLIGHT_MAX)
                    .collect()
                    .await;
            let at = state.clock.now();
            let events = state
                .store
                .finish_notice_deliveries(tenant, outcomes, at)
                .await?;
            state
                .relay
                .submit(PendingEvent::of_page(tenant, events, at));
        }
        if !full {
            return Ok(());
        }
    }
}

/// Sends the scheduled notices whose time has come. One that changed or was started by
/// another node meanwhile is left as it is.
async fn start_due(state: &AppState) -> Result<(), ApiError> {
    let due = state.store.due_notices(state.clock.now(), DUE_MAX).await?;
    for (tenant, id, revision) in due {
        let notice = state.store.get_notice(tenant, id).await?;
        if notice.revision != revision {
            continue;
        }
        let recipients = recipients(state, tenant, &notice.audience).await?;
        match send(state, tenant, &notice, recipients, None).await {
            Ok(_) => {}
            // Changed, recalled or started by another node meanwhile.
            Err(ApiError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Everyone an audience names now (active people only).
pub async fn recipients(
    state: &AppState,
    tenant: TenantId,
    audience: &NoticeAudience,
) -> Result<Vec<UserId>, ApiError> {
    Ok(if audience.all {
        state.store.active_user_ids(tenant).await?
    } else {
        state
            .store
            .resolve_targets(tenant, audience.targets())
            .await?
    })
}

/// Sends `notice` (as read, at its revision) to `recipients`, its audience as resolved
/// now (`recipients()`): a new round of queued deliveries, on the tenant's first usable
/// channel.
pub async fn send(
    state: &AppState,
    tenant: TenantId,
    notice: &Notice,
    recipients: Vec<UserId>,
    audit: Option<Audit>,
) -> Result<Notice, ApiError> {
    let settings = state.store.notice_settings(tenant).await?;
    let at = state.clock.now();
    let round = NoticeRound {
        recipients,
        first: settings.first(),
    };
    let (sent, events) = state
        .store
        .start_notice_round(tenant, notice.id, notice.revision, round, at, audit)
        .await?;
    state
        .relay
        .submit(PendingEvent::of_page(tenant, events, at));
    state.notifier.wake();
    Ok(sent)
}

/// Sends one delivery on its channel and says what became of it.
async fn deliver(
    state: &AppState,
    settings: &NoticeSettings,
    d: ClaimedNoticeDelivery,
) -> (NoticeDeliveryId, NoticeOutcome) {
    let result = match settings.usable(d.channel) {
        None => Err(format!("{} is switched off", d.channel)),
        Some(setting) => {
            if let Err(wait) = state.notifier.admit(d.tenant, setting) {
                let wait = SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_secs(60));
                let at = state
                    .notifier
                    .slot(d.tenant, setting, state.clock.now() + wait);
                return (d.id, NoticeOutcome::Later(at));
            }
            match d.channel {
                NoticeChannel::Sms => text(state, &d).await,
                _ => adapter(state, settings, setting, &d).await,
            }
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(detail) => {
            let mut tried = d.tried.clone();
            tried.push(d.channel);
            match settings.next_after(&tried) {
                Some(to) => NoticeOutcome::FallBack { to, detail },
                None => NoticeOutcome::Failed(detail),
            }
        }
    };
    (d.id, outcome)
}

async fn text(state: &AppState, d: &ClaimedNoticeDelivery) -> Result<NoticeOutcome, String> {
    let phone = d
        .phone
        .as_deref()
        .ok_or_else(|| "no phone number on file".to_string())?;
    let body = format!("{}: {}", d.title, d.body);
    state
        .texts
        .send(d.tenant, phone, &body)
        .await
        .map(|()| NoticeOutcome::Sent)
        .map_err(|e| format!("the text gateway did not take it: {e}"))
}

/// What an adapter answers a delivery with.
#[derive(Deserialize)]
struct AdapterAnswer {
    status: String,
}

async fn adapter(
    state: &AppState,
    settings: &NoticeSettings,
    setting: &ChannelSetting,
    d: &ClaimedNoticeDelivery,
) -> Result<NoticeOutcome, String> {
    let body = serde_json::json!({
        "type": "notice.deliver",
        "tenant_id": d.tenant,
        "notice_id": d.notice_id,
        "delivery_id": d.id,
        "channel": d.channel,
        "user": { "id": d.user_id, "number": d.number, "name": d.name, "phone": d.phone },
        "title": d.title,
        "body": d.body,
    });
    let answer = post(state, d.tenant, settings, setting, &body).await?;
    let answer: AdapterAnswer = serde_json::from_slice(&answer)
        .map_err(|_| "the adapter's answer is not the JSON expected".to_string())?;
    match answer.status.as_str() {
        "delivered" => Ok(NoticeOutcome::Delivered),
        "sent" => Ok(NoticeOutcome::Sent),
        "unreachable" => Err(format!("not reachable on {}", d.channel)),
        other => Err(format!("the adapter answered the status {other:?}")),
    }
}

/// A signed POST to a channel's adapter; the answer's bytes on a 2xx.
async fn post(
    state: &AppState,
    tenant: TenantId,
    settings: &NoticeSettings,
    setting: &ChannelSetting,
    body: &serde_json::Value,
) -> Result<Vec<u8>, String> {
    let url = setting
        .address
        .as_deref()
        .and_then(|a| reqwest::Url::parse(a).ok())
        .ok_or_else(|| "the channel has no address".to_string())?;
    let secret = state
        .keys
        .notice_channel_secret(tenant.0, settings.secret_version);
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let request = crate::apps::signed_post(
        &state.notifier.client,
        url,
        &secret,
        state.clock.now().as_second(),
        &nonce,
        payload,
    )
    .header(crate::apps::APP_KEY, tenant.to_string());
    let answer = crate::adapter::send(request).await.map_err(|e| match e {
        NoAnswer::TimedOut => "the adapter timed out".to_string(),
        NoAnswer::Unreachable => "the adapter is unreachable".to_string(),
    })?;
    if !answer.status().is_success() {
        return Err(format!("the adapter answered {}", answer.status()));
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|_| "the adapter's answer broke off".to_string())?;
    if bytes.len() > ANSWER_BYTES_MAX {
        return Err("the adapter's answer is too long".into());
    }
    Ok(bytes.to_vec())
}

/// Tells each adapter channel which of its deliveries of a recalled notice to withdraw,
/// in the background; a failure is logged (the notice is recalled either way).
pub fn withdraw(
    state: Arc<AppState>,
    tenant: TenantId,
    notice: &Notice,
    taken: Vec<RecalledDelivery>,
    settings: NoticeSettings,
) {
    let notice_id = notice.id;
    actix_web::rt::spawn(async move {
        for setting in settings.channels.iter() {
            if setting.channel == NoticeChannel::Sms || settings.usable(setting.channel).is_none() {
                continue;
            }
            let deliveries: Vec<_> = taken
                .iter()
                .filter(|d| d.channel == setting.channel)
                .map(|d| serde_json::json!({ "delivery_id": d.id, "user_id": d.user_id }))
                .collect();
            if deliveries.is_empty() {
                continue;
            }
            let body = serde_json::json!({
                "type": "notice.recall",
                "tenant_id": tenant,
                "notice_id": notice_id,
                "channel": setting.channel,
                "deliveries": deliveries,
            });
            if let Err(e) = post(&state, tenant, &settings, setting, &body).await {
                tracing::warn!(%tenant, %notice_id, channel = %setting.channel, error = %e,
                    "a channel adapter was not told of a recall");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_over_the_limit_get_a_slot_each() {
        crate::startup::install_tls();
        let notifier = Notifier::new().unwrap();
        let tenant = TenantId::new();
        let sms = ChannelSetting {
            channel: NoticeChannel::Sms,
            enabled: true,
            address: None,
            per_minute: 60,
        };
        let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let secs = |n| t0 + SignedDuration::from_secs(n);
        // Put off in one claim, or in the next ones: one second apart, none shared.
        assert_eq!(notifier.slot(tenant, &sms, t0), t0);
        assert_eq!(notifier.slot(tenant, &sms, t0), secs(1));
        assert_eq!(notifier.slot(tenant, &sms, secs(1)), secs(2));
        // Another channel, or another tenant, has a backlog of its own.
        let oa = ChannelSetting {
            channel: NoticeChannel::OfficialAccount,
            ..sms.clone()
        };
        assert_eq!(notifier.slot(tenant, &oa, t0), t0);
        assert_eq!(notifier.slot(TenantId::new(), &sms, t0), t0);
        // Once the backlog has passed, the next slot is the earliest asked for.
        assert_eq!(notifier.slot(tenant, &sms, secs(100)), secs(100));
        assert_eq!(notifier.slot(tenant, &sms, secs(100)), secs(101));
    }
}
