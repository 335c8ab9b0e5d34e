//! Notifications (SPEC §10): the tenant's channels and their priority, and notices — sent
//! at once or at a time, edited before they go, recalled after, edited and sent again —
//! with each person's delivery status (live on the `notice:<id>` topic).
//!
//! Who sends: super admins, admins whose group grants `notifications`, and department
//! heads (holders of an identity type that manages departments) with their card's token.
//! A sub-admin or a head reaches only the people they may see: departments and tags of
//! their scope, and people in it; everyone, and identities, are for super admins. Super
//! admins see every notice; everyone else sees the notices they made.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use jiff::{SignedDuration, Timestamp};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{NoticeDeliveryId, NoticeId, TenantId};
use onecard_schema::model::{AdminRole, NoticeChannel, NoticeDeliveryStatus, NoticeStatus};
use onecard_schema::notice_store::{
    ChannelSetting, Notice, NoticeAudience, NoticeDelivery, NoticeFilter, NoticeSettings,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{checked, ListParams, Paged};
use crate::auth::{Auth, Caller, NoticeReader, NoticeSender, NotificationSettings};
use crate::extract::{path_id, Json};
use crate::problem::{ApiError, Problems};
use crate::scope::DirectoryScope;
use crate::state::AppState;

/// People, departments or tags named in one audience list, at most.
pub const AUDIENCE_LIST_MAX: usize = 10_000;
/// People a sub-admin or a department head names one by one, at most (each is checked
/// against their scope); name departments for more.
pub const SCOPED_USERS_MAX: usize = 500;
/// How far ahead a notice may be scheduled.
const SCHEDULE_AHEAD_MAX: SignedDuration = SignedDuration::from_hours(24 * 366);
const TITLE_MAX: usize = 64;
const BODY_MAX: usize = 2_000;
const ADDRESS_MAX: usize = 2_048;
const PER_MINUTE_MAX: u32 = 100_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutNoticeSettings {
    /// Every channel once, first tried first.
    pub channels: Vec<ChannelSetting>,
}

/// The adapters' new signing secret; the old one stops working now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelSecret {
    pub secret: String,
    pub secret_version: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNotice {
    #[schema(min_length = 1, max_length = 64)]
    pub title: String,
    #[schema(min_length = 1, max_length = 2000)]
    pub body: String,
    pub audience: NoticeAudience,
    /// When to send it; absent: now.
    pub send_at: Option<Timestamp>,
}

/// An edit of a scheduled or recalled notice; what is absent stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditNotice {
    /// The revision the edit was made on (409 `notice_changed` if it moved on).
    pub revision: i64,
    #[schema(min_length = 1, max_length = 64)]
    pub title: Option<String>,
    #[schema(min_length = 1, max_length = 2000)]
    pub body: Option<String>,
    pub audience: Option<NoticeAudience>,
    /// A new time for a scheduled notice.
    pub send_at: Option<Timestamp>,
}

/// Send a scheduled notice now, or a recalled one again, as it was at `revision`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendNotice {
    pub revision: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoticeQuery {
    pub status: Option<NoticeStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub status: Option<NoticeDeliveryStatus>,
}

fn settings_checks(channels: &[ChannelSetting]) -> Checks {
    let mut c = Checks::new();
    for channel in NoticeChannel::ALL {
        if channels.iter().filter(|s| s.channel == *channel).count() != 1 {
            c.fail(
                "channels",
                "each_once",
                format!("name every channel exactly once ({channel} is not)"),
            );
        }
    }
    for (i, s) in channels.iter().enumerate() {
        let field = format!("channels[{i}]");
        if !(1..=PER_MINUTE_MAX).contains(&s.per_minute) {
            c.fail(
                &format!("{field}.per_minute"),
                "range",
                format!("1 to {PER_MINUTE_MAX}"),
            );
        }
        match (s.channel, &s.address) {
            (NoticeChannel::Sms, Some(_)) => c.fail(
                &format!("{field}.address"),
                "absent",
                "texts go through the server's text gateway; sms takes no address",
            ),
            (NoticeChannel::Sms, None) => {}
            (_, None) if s.enabled => c.fail(
                &format!("{field}.address"),
                "required",
                "an enabled channel needs its adapter's address",
            ),
            (_, None) => {}
            (_, Some(a)) => {
                let field = format!("{field}.address");
                if c.text(&field, a, 1, ADDRESS_MAX) && !super::apps::webhook_address(a) {
                    c.fail(
                        &field,
                        "url",
                        "an http(s) address with a host and no credentials",
                    );
                }
            }
        }
    }
    c
}

/// The tenant's channels, in priority order.
#[utoipa::path(tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = NoticeSettings), Problems))]
#[get("/notification-settings")]
pub async fn get_notice_settings(
    state: web::Data<AppState>,
    caller: Auth<NotificationSettings>,
) -> Result<web::Json<NoticeSettings>, ApiError> {
    Ok(web::Json(
        state.store.notice_settings(caller.tenant()?).await?,
    ))
}

/// Order and set up the channels: a message falls back to the next when one fails or
/// cannot reach the person.
#[utoipa::path(tag = "notifications", request_body = PutNoticeSettings, security(("bearer" = [])),
    responses((status = 200, body = NoticeSettings), Problems))]
#[put("/notification-settings")]
pub async fn put_notice_settings(
    state: web::Data<AppState>,
    caller: Auth<NotificationSettings>,
    Json(body): Json<PutNoticeSettings>,
) -> Result<web::Json<NoticeSettings>, ApiError> {
    checked(settings_checks(&body.channels))?;
    let tenant = caller.tenant()?;
    let mut settings = state.store.notice_settings(tenant).await?;
    settings.channels = body.channels;
    settings.updated_at = Some(state.clock.now());
    save_settings(
        &state,
        &caller,
        tenant,
        &settings,
        "notification_settings.put",
    )
    .await?;
    Ok(web::Json(settings))
}

/// Give the channel adapters a new signing secret (shown once); the old one stops now.
#[utoipa::path(tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = ChannelSecret), Problems))]
#[post("/notification-settings/secret")]
pub async fn rotate_notice_secret(
    state: web::Data<AppState>,
    caller: Auth<NotificationSettings>,
) -> Result<web::Json<ChannelSecret>, ApiError> {
    let tenant = caller.tenant()?;
    let mut settings = state.store.notice_settings(tenant).await?;
    settings.secret_version += 1;
    settings.updated_at = Some(state.clock.now());
    save_settings(
        &state,
        &caller,
        tenant,
        &settings,
        "notification_settings.secret.rotate",
    )
    .await?;
    Ok(web::Json(ChannelSecret {
        secret: state
            .keys
            .notice_channel_secret(tenant.0, settings.secret_version),
        secret_version: settings.secret_version,
    }))
}

async fn save_settings(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
    settings: &NoticeSettings,
    action: &'static str,
) -> Result<(), ApiError> {
    let audit = caller.audit(
        state,
        action,
        "notification_settings",
        tenant,
        serde_json::json!({
            "channels": settings.channels, "secret_version": settings.secret_version,
        }),
    );
    state
        .store
        .put_notice_settings(tenant, settings.clone(), audit)
        .await?;
    Ok(())
}

fn content_checks(
    c: &mut Checks,
    title: Option<&str>,
    body: Option<&str>,
    audience: Option<&NoticeAudience>,
    send_at: Option<Timestamp>,
    now: Timestamp,
) {
    if let Some(title) = title {
        c.text("title", title, 1, TITLE_MAX);
    }
    if let Some(body) = body {
        c.text("body", body, 1, BODY_MAX);
    }
    if let Some(a) = audience {
        if a.is_empty() {
            c.fail(
                "audience",
                "required",
                "name everyone (all), or people, departments, tags or identities",
            );
        }
        for (field, n) in [
            ("audience.user_ids", a.user_ids.len()),
            ("audience.department_ids", a.department_ids.len()),
            ("audience.tag_ids", a.tag_ids.len()),
            ("audience.identities", a.identities.len()),
        ] {
            if n > AUDIENCE_LIST_MAX {
                c.fail(field, "max_items", format!("at most {AUDIENCE_LIST_MAX}"));
            }
        }
        for identity in &a.identities {
            c.text("audience.identities", identity, 1, 32);
        }
    }
    if let Some(at) = send_at {
        if at <= now {
            c.fail(
                "send_at",
                "future",
                "must be in the future (leave it out to send now)",
            );
        } else if at > now + SCHEDULE_AHEAD_MAX {
            c.fail("send_at", "range", "at most a year ahead");
        }
    }
}

/// A sub-admin or a department head may reach only people they may see.
async fn check_audience(
    state: &AppState,
    caller: &Caller,
    audience: &NoticeAudience,
) -> Result<(), ApiError> {
    let scope = DirectoryScope::of(caller, state).await?;
    if !scope.is_limited() {
        return Ok(());
    }
    let outside = |field: &str, detail: &str| {
        ApiError::forbidden("out_of_scope", format!("{field}: {detail}"))
    };
    if audience.all {
        return Err(outside(
            "audience.all",
            "only super admins may send to everyone",
        ));
    }
    if !audience.identities.is_empty() {
        return Err(outside(
            "audience.identities",
            "only super admins may send by identity; name your departments",
        ));
    }
    if audience
        .department_ids
        .iter()
        .any(|d| !scope.sees_department(*d))
    {
        return Err(outside(
            "audience.department_ids",
            "a department outside your scope",
        ));
    }
    if audience.tag_ids.iter().any(|t| !scope.sees_tag(*t)) {
        return Err(outside("audience.tag_ids", "a tag outside your scope"));
    }
    if audience.user_ids.len() > SCOPED_USERS_MAX {
        return Err(ApiError::invalid_field(
            "audience.user_ids",
            "max_items",
            format!("at most {SCOPED_USERS_MAX} people one by one; name departments for more"),
        ));
    }
    if !audience.user_ids.is_empty() {
        scope
            .visible_users(
                state,
                caller.tenant()?,
                "audience.user_ids",
                &audience.user_ids,
            )
            .await?;
    }
    Ok(())
}

/// Whether the caller sees every notice of the tenant (super admins).
fn sees_all(caller: &Caller) -> bool {
    caller.role == Some(AdminRole::SuperAdmin) && caller.grants.is_none()
}

/// The notice, if the caller may see it (another's is as unknown as another tenant's).
async fn visible(state: &AppState, caller: &Caller, id: NoticeId) -> Result<Notice, ApiError> {
    let notice = state.store.get_notice(caller.tenant()?, id).await?;
    if !sees_all(caller) && notice.created_by != caller.actor().as_string() {
        return Err(ApiError::NotFound);
    }
    Ok(notice)
}

/// Everyone the audience reaches now; nobody is refused before anything is written.
async fn reached(
    state: &AppState,
    tenant: TenantId,
    audience: &NoticeAudience,
) -> Result<Vec<onecard_schema::ids::UserId>, ApiError> {
    let recipients = crate::notify::recipients(state, tenant, audience).await?;
    if recipients.is_empty() {
        return Err(ApiError::refused(
            "audience_empty",
            "the audience names nobody who is active now",
        ));
    }
    Ok(recipients)
}

/// Write a notice: sent at once (201, `sending`), or kept until `send_at` (`scheduled`).
#[utoipa::path(tag = "notifications", request_body = CreateNotice, security(("bearer" = [])),
    responses((status = 201, body = Notice), Problems))]
#[post("/notices")]
pub async fn create_notice(
    state: web::Data<AppState>,
    caller: Auth<NoticeSender>,
    Json(body): Json<CreateNotice>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let mut c = Checks::new();
    content_checks(
        &mut c,
        Some(&body.title),
        Some(&body.body),
        Some(&body.audience),
        body.send_at,
        now,
    );
    checked(c)?;
    check_audience(&state, &caller, &body.audience).await?;
    let recipients = reached(&state, tenant, &body.audience).await?;
    let notice = Notice {
        id: NoticeId::new(),
        title: body.title,
        body: body.body,
        audience: body.audience,
        status: NoticeStatus::Scheduled,
        // Due now when sent at once: should the send below fail, the scheduler sends it
        // within a second.
        send_at: Some(body.send_at.unwrap_or(now)),
        revision: 1,
        round: 0,
        created_by: caller.actor().as_string(),
        created_at: now,
        updated_at: now,
        sent_at: None,
        finished_at: None,
        recalled_at: None,
        counts: Default::default(),
    };
    let audit = caller.audit(
        &state,
        "notice.create",
        "notice",
        notice.id,
        serde_json::json!({ "title": notice.title, "send_at": notice.send_at }),
    );
    state
        .store
        .create_notice(tenant, notice.clone(), audit)
        .await?;
    let notice = if body.send_at.is_none() {
        match crate::notify::send(&state, tenant, &notice, recipients, None).await {
            Ok(sent) => sent,
            // The scheduler took it first.
            Err(ApiError::Conflict { .. }) => state.store.get_notice(tenant, notice.id).await?,
            Err(e) => return Err(e),
        }
    } else {
        notice
    };
    Ok(HttpResponse::Created().json(notice))
}

/// Notices, newest first: every one for super admins, one's own for everyone else.
#[utoipa::path(tag = "notifications", params(ListParams, NoticeQuery), security(("bearer" = [])),
    responses((status = 200, body = Paged<Notice>), Problems))]
#[get("/notices")]
pub async fn list_notices(
    state: web::Data<AppState>,
    caller: Auth<NoticeReader>,
    list: web::Query<ListParams>,
    query: web::Query<NoticeQuery>,
) -> Result<web::Json<Paged<Notice>>, ApiError> {
    let filter = NoticeFilter {
        created_by: (!sees_all(&caller)).then(|| caller.actor().as_string()),
        status: query.status,
    };
    let page = state
        .store
        .list_notices(caller.tenant()?, filter, list.page(NoticeId)?)
        .await?;
    Ok(web::Json(Paged::new(page.items, page.next.map(|n| n.0))))
}

/// One notice, with its current round's delivery counts.
#[utoipa::path(tag = "notifications", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Notice), Problems))]
#[get("/notices/{id}")]
pub async fn get_notice(
    state: web::Data<AppState>,
    caller: Auth<NoticeReader>,
    id: web::Path<String>,
) -> Result<web::Json<Notice>, ApiError> {
    Ok(web::Json(visible(&state, &caller, path_id(&id)?).await?))
}

/// Edit a scheduled notice before it goes, or a recalled one before it is sent again.
#[utoipa::path(tag = "notifications", params(("id" = String, Path)), request_body = EditNotice,
    security(("bearer" = [])), responses((status = 200, body = Notice), Problems))]
#[patch("/notices/{id}")]
pub async fn edit_notice(
    state: web::Data<AppState>,
    caller: Auth<NoticeSender>,
    id: web::Path<String>,
    Json(body): Json<EditNotice>,
) -> Result<web::Json<Notice>, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let mut notice = visible(&state, &caller, path_id(&id)?).await?;
    let mut c = Checks::new();
    content_checks(
        &mut c,
        body.title.as_deref(),
        body.body.as_deref(),
        body.audience.as_ref(),
        body.send_at,
        now,
    );
    if body.send_at.is_some() && notice.status == NoticeStatus::Recalled {
        c.fail(
            "send_at",
            "absent",
            "a recalled notice goes again by POST /notices/{id}/send",
        );
    }
    checked(c)?;
    if let Some(audience) = &body.audience {
        check_audience(&state, &caller, audience).await?;
        reached(&state, tenant, audience).await?;
    }
    notice.revision = body.revision;
    notice.title = body.title.unwrap_or(notice.title);
    notice.body = body.body.unwrap_or(notice.body);
    notice.audience = body.audience.unwrap_or(notice.audience);
    notice.send_at = body.send_at.or(notice.send_at);
    let audit = caller.audit(
        &state,
        "notice.edit",
        "notice",
        notice.id,
        serde_json::json!({ "title": notice.title, "send_at": notice.send_at, "revision": body.revision }),
    );
    Ok(web::Json(
        state.store.edit_notice(tenant, notice, now, audit).await?,
    ))
}

/// Delete a scheduled notice that never went out.
#[utoipa::path(tag = "notifications", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/notices/{id}")]
pub async fn delete_notice(
    state: web::Data<AppState>,
    caller: Auth<NoticeSender>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let notice = visible(&state, &caller, path_id(&id)?).await?;
    let audit = caller.audit(
        &state,
        "notice.delete",
        "notice",
        notice.id,
        serde_json::json!({ "title": notice.title }),
    );
    state
        .store
        .delete_notice(caller.tenant()?, notice.id, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Send a scheduled notice now, or a recalled one again (a new round), to its audience as
/// it stands now.
#[utoipa::path(tag = "notifications", params(("id" = String, Path)), request_body = SendNotice,
    security(("bearer" = [])), responses((status = 200, body = Notice), Problems))]
#[post("/notices/{id}/send")]
pub async fn send_notice(
    state: web::Data<AppState>,
    caller: Auth<NoticeSender>,
    id: web::Path<String>,
    Json(body): Json<SendNotice>,
) -> Result<web::Json<Notice>, ApiError> {
    let tenant = caller.tenant()?;
    let mut notice = visible(&state, &caller, path_id(&id)?).await?;
    check_audience(&state, &caller, &notice.audience).await?;
    let recipients = reached(&state, tenant, &notice.audience).await?;
    notice.revision = body.revision;
    let audit = caller.audit(
        &state,
        "notice.send",
        "notice",
        notice.id,
        serde_json::json!({ "revision": body.revision, "round": notice.round + 1 }),
    );
    Ok(web::Json(
        crate::notify::send(&state, tenant, &notice, recipients, Some(audit)).await?,
    ))
}

/// Recall a notice: deliveries not yet sent never go, and the channel adapters are told
/// to withdraw those they took (a text message cannot be taken back).
#[utoipa::path(tag = "notifications", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Notice), Problems))]
#[post("/notices/{id}/recall")]
pub async fn recall_notice(
    state: web::Data<AppState>,
    caller: Auth<NoticeSender>,
    id: web::Path<String>,
) -> Result<web::Json<Notice>, ApiError> {
    let tenant = caller.tenant()?;
    let notice = visible(&state, &caller, path_id(&id)?).await?;
    let at = state.clock.now();
    let audit = caller.audit(
        &state,
        "notice.recall",
        "notice",
        notice.id,
        serde_json::json!({ "round": notice.round }),
    );
    let (recalled, taken, events) = state
        .store
        .recall_notice(tenant, notice.id, at, audit)
        .await?;
    state
        .relay
        .submit(onecard_schema::wallet::PendingEvent::of_page(
            tenant, events, at,
        ));
    let settings = state.store.notice_settings(tenant).await?;
    crate::notify::withdraw(
        state.clone().into_inner(),
        tenant,
        &recalled,
        taken,
        settings,
    );
    Ok(web::Json(recalled))
}

/// Each person's delivery of the notice's current round.
#[utoipa::path(tag = "notifications", params(("id" = String, Path), ListParams, DeliveryQuery),
    security(("bearer" = [])), responses((status = 200, body = Paged<NoticeDelivery>), Problems))]
#[get("/notices/{id}/deliveries")]
pub async fn list_notice_deliveries(
    state: web::Data<AppState>,
    caller: Auth<NoticeReader>,
    id: web::Path<String>,
    list: web::Query<ListParams>,
    query: web::Query<DeliveryQuery>,
) -> Result<web::Json<Paged<NoticeDelivery>>, ApiError> {
    let notice = visible(&state, &caller, path_id(&id)?).await?;
    let page = state
        .store
        .list_notice_deliveries(
            caller.tenant()?,
            notice.id,
            query.status,
            list.page(NoticeDeliveryId)?,
        )
        .await?;
    Ok(web::Json(Paged::new(page.items, page.next.map(|n| n.0))))
}
