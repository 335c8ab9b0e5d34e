//! Notifications (SPEC §10): the tenant's channels in priority order, notices with their
//! audience, schedule, edits and recall, and one delivery per person and round, which the
//! notifier claims, sends on a channel and records (falling back along the channels).
//! Every change to deliveries writes a `notice.delivery` event for the notice's topic in
//! the same transaction, with the round's counts as they stand after it.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{StoreError, StoreResult};
use crate::ids::{DepartmentId, EventId, NoticeDeliveryId, NoticeId, TagId, TenantId, UserId};
use crate::model::{Audit, NoticeChannel, NoticeDeliveryStatus, NoticeStatus, Page, PageReq};
use crate::wallet::{OutboxEvent, Payload, SubsidyTargets};

/// Who a notice goes to: everyone (`all`), or the union of the people, departments (each
/// with everything under it), tags and identities named. Only active people receive it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeAudience {
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub user_ids: Vec<UserId>,
    #[serde(default)]
    pub department_ids: Vec<DepartmentId>,
    #[serde(default)]
    pub tag_ids: Vec<TagId>,
    #[serde(default)]
    pub identities: Vec<String>,
}

impl NoticeAudience {
    /// The lists, as the store resolves them (`all` aside).
    pub fn targets(&self) -> SubsidyTargets {
        SubsidyTargets {
            user_ids: self.user_ids.clone(),
            department_ids: self.department_ids.clone(),
            tag_ids: self.tag_ids.clone(),
            identities: self.identities.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all
            && self.user_ids.is_empty()
            && self.department_ids.is_empty()
            && self.tag_ids.is_empty()
            && self.identities.is_empty()
    }
}

/// One channel of a tenant: whether it is used, the address of the tenant's adapter for it
/// (the official account and the messenger; texts go through the server's text gateway),
/// and how many sends a minute it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSetting {
    pub channel: NoticeChannel,
    pub enabled: bool,
    /// `https://…` (or `http://` to this host) of the tenant's adapter; not for `sms`.
    #[serde(default)]
    pub address: Option<String>,
    /// Sends a minute on this channel, per server node.
    #[schema(minimum = 1, maximum = 100000)]
    pub per_minute: u32,
}

/// The tenant's channels, first tried first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoticeSettings {
    pub channels: Vec<ChannelSetting>,
    /// Counts rotations of the adapters' signing secret.
    pub secret_version: i32,
    /// When the tenant last saved them (`null`: the defaults).
    pub updated_at: Option<Timestamp>,
}

impl Default for NoticeSettings {
    /// The official account first, then the messenger, then texts; only texts work until
    /// the tenant names its adapters.
    fn default() -> Self {
        let off = |channel| ChannelSetting {
            channel,
            enabled: false,
            address: None,
            per_minute: 3_000,
        };
        NoticeSettings {
            channels: vec![
                off(NoticeChannel::OfficialAccount),
                off(NoticeChannel::Messenger),
                ChannelSetting {
                    channel: NoticeChannel::Sms,
                    enabled: true,
                    address: None,
                    per_minute: 600,
                },
            ],
            secret_version: 1,
            updated_at: None,
        }
    }
}

impl NoticeSettings {
    /// The setting of a channel that can send now: enabled, with an adapter if it needs one.
    pub fn usable(&self, channel: NoticeChannel) -> Option<&ChannelSetting> {
        self.channels.iter().find(|c| {
            c.channel == channel
                && c.enabled
                && (channel == NoticeChannel::Sms || c.address.is_some())
        })
    }

    /// The first channel that can send.
    pub fn first(&self) -> Option<NoticeChannel> {
        self.channels
            .iter()
            .map(|c| c.channel)
            .find(|&c| self.usable(c).is_some())
    }

    /// The next channel to fall back to after `tried` (in order), if any can send.
    pub fn next_after(&self, tried: &[NoticeChannel]) -> Option<NoticeChannel> {
        self.channels
            .iter()
            .map(|c| c.channel)
            .find(|c| !tried.contains(c) && self.usable(*c).is_some())
    }
}

/// How a round's deliveries stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryCounts {
    pub recipients: u64,
    pub queued: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub recalled: u64,
    /// Deliveries that fell back from a channel to a later one (whatever they reached).
    pub fell_back: u64,
}

impl DeliveryCounts {
    pub fn add(&mut self, status: NoticeDeliveryStatus, n: u64, fell_back: u64) {
        self.recipients += n;
        self.fell_back += fell_back;
        *match status {
            NoticeDeliveryStatus::Queued => &mut self.queued,
            NoticeDeliveryStatus::Sent => &mut self.sent,
            NoticeDeliveryStatus::Delivered => &mut self.delivered,
            NoticeDeliveryStatus::Failed => &mut self.failed,
            NoticeDeliveryStatus::Recalled => &mut self.recalled,
        } += n;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Notice {
    pub id: NoticeId,
    pub title: String,
    pub body: String,
    pub audience: NoticeAudience,
    pub status: NoticeStatus,
    /// When it goes: the time set, or when it was written for one sent at once.
    pub send_at: Option<Timestamp>,
    /// Counts edits; a send or an edit names the revision it was made on.
    pub revision: i64,
    /// Counts sends (a recalled notice sent again starts round 2).
    pub round: i32,
    /// `admin:<id>`, or `user:<id>` for a department head.
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the current round went out.
    pub sent_at: Option<Timestamp>,
    /// When the current round's last delivery finished.
    pub finished_at: Option<Timestamp>,
    pub recalled_at: Option<Timestamp>,
    /// The current round's deliveries.
    pub counts: DeliveryCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct NoticeDelivery {
    pub id: NoticeDeliveryId,
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    pub status: NoticeDeliveryStatus,
    /// The channel that has it (or had it last).
    pub channel: Option<NoticeChannel>,
    /// Channels that failed or could not reach the person, in the order tried.
    pub fell_back_from: Vec<NoticeChannel>,
    pub detail: Option<String>,
    pub updated_at: Timestamp,
}

/// A queued delivery the notifier has taken (leased) to send.
#[derive(Clone, Debug)]
pub struct ClaimedNoticeDelivery {
    pub id: NoticeDeliveryId,
    pub tenant: TenantId,
    pub notice_id: NoticeId,
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    pub phone: Option<String>,
    pub channel: NoticeChannel,
    pub tried: Vec<NoticeChannel>,
    pub title: String,
    pub body: String,
}

/// What became of one claimed delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeOutcome {
    Sent,
    Delivered,
    /// The channel's rate limit: try again then.
    Later(Timestamp),
    /// The channel failed or cannot reach the person: the next channel takes it.
    FallBack {
        to: NoticeChannel,
        detail: String,
    },
    /// No channel left.
    Failed(String),
}

/// Starting a round: who gets it, and on which channel first (`None`: none can send,
/// every delivery fails at once).
#[derive(Clone, Debug)]
pub struct NoticeRound {
    pub recipients: Vec<UserId>,
    pub first: Option<NoticeChannel>,
}

/// One person's delivery as an event tells it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryChange {
    pub delivery_id: NoticeDeliveryId,
    pub user_id: UserId,
    /// `queued`, `sent`, `delivered`, `failed`, `fell_back` or `recalled`.
    pub status: &'static str,
    pub channel: Option<NoticeChannel>,
    /// For `fell_back`: the channel that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<NoticeChannel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Changes an event lists at most; a round's start or a recall lists none (the counts
/// say it all).
pub const CHANGES_PER_EVENT: usize = 500;

/// The `notice.delivery` event for a notice's topic.
pub fn delivery_event(
    notice: NoticeId,
    round: i32,
    notice_status: NoticeStatus,
    counts: &DeliveryCounts,
    changes: &[DeliveryChange],
) -> OutboxEvent {
    OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("notice:{notice}")],
        kind: "notice.delivery".into(),
        payload: Payload::of(&serde_json::json!({
            "notice_id": notice,
            "round": round,
            "notice_status": notice_status,
            "counts": counts,
            "changes": changes,
        })),
    }
}

/// 409 `notice_state`: the notice stands where this cannot be done.
pub fn wrong_state(status: NoticeStatus, needs: &str) -> StoreError {
    StoreError::conflict(
        "notice_state",
        Some("status"),
        format!("the notice is {status}; this needs it {needs}"),
    )
}

/// 409 `notice_changed`: edited since the caller read it.
pub fn changed(now: i64) -> StoreError {
    StoreError::conflict(
        "notice_changed",
        Some("revision"),
        format!("the notice changed since you read it; it is at revision {now} now"),
    )
}

/// Which notices a list returns.
#[derive(Clone, Debug, Default)]
pub struct NoticeFilter {
    /// Only these author's (`None`: everyone's, for super admins).
    pub created_by: Option<String>,
    pub status: Option<NoticeStatus>,
}

#[async_trait]
pub trait NoticeStore: Send + Sync + 'static {
    /// The tenant's channels (the defaults until it saves its own).
    async fn notice_settings(&self, tenant: TenantId) -> StoreResult<NoticeSettings>;
    async fn put_notice_settings(
        &self,
        tenant: TenantId,
        settings: NoticeSettings,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Every active person of the tenant (an audience of `all`).
    async fn active_user_ids(&self, tenant: TenantId) -> StoreResult<Vec<UserId>>;
    async fn create_notice(
        &self,
        tenant: TenantId,
        notice: Notice,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_notice(&self, tenant: TenantId, id: NoticeId) -> StoreResult<Notice>;
    async fn list_notices(
        &self,
        tenant: TenantId,
        filter: NoticeFilter,
        page: PageReq<NoticeId>,
    ) -> StoreResult<Page<Notice, NoticeId>>;
    /// Saves `edited` (title, body, audience, send time) over a notice that is
    /// `scheduled` or `recalled` and still at revision `edited.revision`; the revision
    /// goes up by one.
    async fn edit_notice(
        &self,
        tenant: TenantId,
        edited: Notice,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<Notice>;
    /// Deletes a scheduled notice that never went out.
    async fn delete_notice(&self, tenant: TenantId, id: NoticeId, audit: Audit) -> StoreResult<()>;
    /// Scheduled notices whose time has come, with their revision.
    async fn due_notices(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<(TenantId, NoticeId, i64)>>;
    /// Sends a notice that is `scheduled` or `recalled` (at revision `seen`): a new round
    /// with one queued delivery per recipient; the notice is `sending` (or `sent` at once
    /// when nobody is to get it).
    async fn start_notice_round(
        &self,
        tenant: TenantId,
        id: NoticeId,
        seen: i64,
        round: NoticeRound,
        at: Timestamp,
        audit: Option<Audit>,
    ) -> StoreResult<(Notice, Vec<OutboxEvent>)>;
    /// Takes up to `limit` queued deliveries that are due, leasing them until
    /// `lease_until` (a node that stops leaves them to be taken again then).
    async fn claim_notice_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedNoticeDelivery>>;
    /// Records what became of claimed deliveries of one tenant (those recalled meanwhile
    /// stay recalled); a notice with none left queued is `sent`.
    async fn finish_notice_deliveries(
        &self,
        tenant: TenantId,
        results: Vec<(NoticeDeliveryId, NoticeOutcome)>,
        at: Timestamp,
    ) -> StoreResult<Vec<OutboxEvent>>;
    /// Recalls a notice that is `sending` or `sent`: every delivery of its round is
    /// `recalled` (queued ones never go). Answers the deliveries a channel had taken.
    async fn recall_notice(
        &self,
        tenant: TenantId,
        id: NoticeId,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<(Notice, Vec<RecalledDelivery>, Vec<OutboxEvent>)>;
    async fn list_notice_deliveries(
        &self,
        tenant: TenantId,
        id: NoticeId,
        status: Option<NoticeDeliveryStatus>,
        page: PageReq<NoticeDeliveryId>,
    ) -> StoreResult<Page<NoticeDelivery, NoticeDeliveryId>>;
}

/// A delivery a channel had taken when its notice was recalled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecalledDelivery {
    pub id: NoticeDeliveryId,
    pub user_id: UserId,
    pub channel: NoticeChannel,
}

/// A queued delivery's row after an outcome: what both engines write.
#[derive(Clone, Debug)]
pub(crate) struct Applied {
    pub status: NoticeDeliveryStatus,
    pub channel: NoticeChannel,
    pub tried: Vec<NoticeChannel>,
    pub detail: Option<String>,
    pub due_at: Timestamp,
    /// The change for the event; `None` when nothing a watcher sees changed (a wait).
    pub change: Option<(&'static str, Option<NoticeChannel>)>,
}

/// Applies `outcome` to a queued delivery on `channel` that `tried` others before, due
/// `due_at`.
pub(crate) fn apply(
    outcome: NoticeOutcome,
    channel: NoticeChannel,
    mut tried: Vec<NoticeChannel>,
    due_at: Timestamp,
    at: Timestamp,
) -> Applied {
    let done = |status: NoticeDeliveryStatus, tried, detail| Applied {
        status,
        channel,
        tried,
        detail,
        due_at,
        change: Some((status.as_str(), None)),
    };
    match outcome {
        NoticeOutcome::Sent => done(NoticeDeliveryStatus::Sent, tried, None),
        NoticeOutcome::Delivered => done(NoticeDeliveryStatus::Delivered, tried, None),
        NoticeOutcome::Failed(detail) => done(NoticeDeliveryStatus::Failed, tried, Some(detail)),
        NoticeOutcome::Later(when) => Applied {
            status: NoticeDeliveryStatus::Queued,
            channel,
            tried,
            detail: None,
            due_at: when,
            change: None,
        },
        NoticeOutcome::FallBack { to, detail } => {
            tried.push(channel);
            Applied {
                status: NoticeDeliveryStatus::Queued,
                channel: to,
                tried,
                detail: Some(detail),
                due_at: at,
                change: Some(("fell_back", Some(channel))),
            }
        }
    }
}
