//! `GET /api/v1/ws`: one `WsSession` actor per connection (actix-web-actors lives in this
//! module only).
//!
//! The session checks who may see which topic, replays history on `subscribe` with
//! `since`, then passes on live events in `seq` order without duplicates. Live events that
//! arrive while a topic's history is being read wait in a buffer and are merged by `seq`.
//!
//! Back-pressure: actix runs a session only while its socket drains, so a client that
//! stops reading stops its session too; the hub then finds the session's mailbox full
//! (`ONECARD_WS_QUEUE` deliveries, one per topic per published batch), unsubscribes it
//! everywhere and sends one `Lagged`, on which the session closes with 1013. Nobody else
//! waits for it. A session also re-checks its token every minute and closes with 1008 once
//! it is revoked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use onecard_actors::realtime::hub::{Deliver, Lagged, Leave, Subscribe, Unsubscribe};
use onecard_actors::realtime::{History, Published, TopicKey};
use onecard_schema::ids::{NoticeId, TenantId};
use onecard_schema::model::{AdminRole, Feature, GrantLevel, ScenarioApp, TokenKind};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{
    bearer, hash_token, in_member_tenant, request_id, resolve, Caller, MEMBER_TENANT_HEADER,
};
use crate::problem::ApiError;
use crate::state::AppState;

/// Largest frame a client may send (a subscribe is well under 200 bytes).
pub const FRAME_MAX: usize = 4096;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
/// Open websocket connections on this node.
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Who is connected, as far as topics go. An admin's flags say which topic families
/// their role or group opens: money (`tenant`, `merchant:`, `terminal:`, `user:`), an
/// event's check-ins (the check-in app) and a notice's delivery (notifications).
#[derive(Clone, Copy, Debug)]
enum Viewer {
    Admin {
        payments: bool,
        checkin: bool,
        notices: NoticeAccess,
    },
    Terminal(uuid::Uuid),
    Cardholder(uuid::Uuid),
}

/// Which notices' delivery topics an admin may follow: every one (super admins, who see
/// every notice), or those they made (admins granted `notifications`, as over REST). A
/// cardholder may follow the notices they made as a department head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoticeAccess {
    None,
    All,
    Own(uuid::Uuid),
}

#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    pub max_topics: usize,
    pub queue: usize,
    /// The server pings this often…
    pub heartbeat: Duration,
    /// …and closes a connection it has heard nothing from for this long.
    pub timeout: Duration,
    /// How often an open connection checks that its token is still valid.
    pub revalidate: Duration,
}

/// Open a websocket for live events. Authenticate with the bearer header or
/// `?token=` (browsers cannot set headers on a websocket). See the protocol in the
/// README ("Real time").
#[utoipa::path(tag = "realtime", params(("token" = Option<String>, Query, description = "the bearer token, for browsers"),
    ("tenant" = Option<String>, Query, description = "a member tenant a tenant group's admin follows (as the OneCard-Tenant header)")),
    responses((status = 101, description = "switching to the websocket protocol"),
        (status = 401, description = "no valid token"),
        (status = 400, description = "not a websocket handshake")),
    security(("bearer" = [])))]
#[get("/ws")]
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req)
        .map(str::to_owned)
        .or_else(|| query_token(req.query_string()))
        .ok_or(ApiError::Unauthorized)?;
    let token_hash = hash_token(&token);
    // A tenant group's admin follows a member tenant's topics: `?tenant=` (browsers) or
    // the `OneCard-Tenant` header, as on REST.
    let member = req
        .headers()
        .get(MEMBER_TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(req.query_string(), "tenant"))
        .map(|m| m.trim().parse::<TenantId>().map_err(|_| ApiError::NotFound))
        .transpose()?;
    let mut caller = resolve(&state, token_hash, request_id(&req)).await?;
    if let Some(m) = member {
        caller = in_member_tenant(&state, caller, m).await?;
    }
    let (tenant, viewer) = viewer(&caller)?;
    let session = WsSession {
        state: state.clone(),
        token_hash,
        member,
        id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
        tenant,
        viewer,
        topics: HashMap::new(),
        last_heard: Instant::now(),
        closing: false,
    };
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(FRAME_MAX)
        .start()
        .map_err(|e| ApiError::bad_request("not_websocket", e.to_string()))
}

fn query_token(query: &str) -> Option<String> {
    query_param(query, "token")
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn viewer(caller: &Caller) -> Result<(TenantId, Viewer), ApiError> {
    let forbidden = || ApiError::forbidden("forbidden", "this token has no tenant topics");
    let tenant = caller.tenant.ok_or_else(forbidden)?;
    let viewer = match caller.kind {
        TokenKind::Admin => Viewer::Admin {
            payments: caller.admin_may(Feature::Payments, GrantLevel::View),
            checkin: caller.admin_has_app(ScenarioApp::Checkin),
            notices: match (caller.role, caller.subject) {
                _ if !caller.admin_may(Feature::Notifications, GrantLevel::View) => {
                    NoticeAccess::None
                }
                (Some(AdminRole::SuperAdmin), _) => NoticeAccess::All,
                (_, Some(id)) => NoticeAccess::Own(id),
                (_, None) => NoticeAccess::None,
            },
        },
        TokenKind::Terminal => Viewer::Terminal(caller.subject.ok_or_else(forbidden)?),
        TokenKind::Cardholder => Viewer::Cardholder(caller.subject.ok_or_else(forbidden)?),
        TokenKind::Root | TokenKind::App | TokenKind::Verifier => return Err(forbidden()),
    };
    Ok((tenant, viewer))
}

/// Checks a topic's shape; `Err` is the `bad_frame` detail.
fn parse_topic(topic: &str) -> Result<(), &'static str> {
    if topic == "tenant" {
        return Ok(());
    }
    let Some((kind, id)) = topic.split_once(':') else {
        return Err("unknown topic");
    };
    if !matches!(kind, "terminal" | "user" | "merchant" | "event" | "notice") {
        return Err("unknown topic");
    }
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| "a topic id must be a UUID")
}

fn may_see(viewer: Viewer, topic: &str) -> bool {
    match viewer {
        Viewer::Admin {
            payments,
            checkin,
            notices,
        } => match topic.split_once(':').map_or(topic, |(kind, _)| kind) {
            "event" => checkin,
            "notice" => notices != NoticeAccess::None,
            _ => payments,
        },
        Viewer::Terminal(id) => topic == format!("terminal:{id}"),
        Viewer::Cardholder(id) => topic == format!("user:{id}") || topic.starts_with("notice:"),
    }
}

/// For a notice's topic a viewer may follow only if they made the notice: its id and the
/// author it must have (`created_by`).
fn notice_owner(viewer: Viewer, topic: &str) -> Option<(NoticeId, String)> {
    let id = topic.strip_prefix("notice:")?.parse().ok()?;
    match viewer {
        Viewer::Admin {
            notices: NoticeAccess::Own(admin),
            ..
        } => Some((id, format!("admin:{admin}"))),
        Viewer::Cardholder(user) => Some((id, format!("user:{user}"))),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Subscribe {
        topic: String,
        since: Option<u64>,
        epoch: Option<String>,
    },
    Unsubscribe {
        topic: String,
    },
    Ping,
}

enum TopicState {
    /// History is being read; live events wait here (`generation` tells a stale read).
    Replaying {
        generation: u64,
        buffered: Vec<Arc<Published>>,
    },
    Live {
        last: u64,
    },
}

pub struct WsSession {
    state: web::Data<AppState>,
    token_hash: [u8; 32],
    /// The member tenant a group's admin follows (`?tenant=`), checked again with the token.
    member: Option<TenantId>,
    id: u64,
    tenant: TenantId,
    viewer: Viewer,
    topics: HashMap<Arc<str>, TopicState>,
    last_heard: Instant,
    closing: bool,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl WsSession {
    fn error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: &str,
        topic: Option<&str>,
        detail: &str,
    ) {
        let mut frame = json!({"op": "error", "code": code, "detail": detail});
        if let Some(t) = topic {
            frame["topic"] = json!(t);
        }
        ctx.text(frame.to_string());
    }

    fn key(&self, topic: &str) -> TopicKey {
        TopicKey::new(self.tenant, topic)
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let detail = format!("not a client frame: {e}");
                return self.error(ctx, "bad_frame", None, &detail);
            }
        };
        match frame {
            ClientFrame::Ping => ctx.text(r#"{"op":"pong"}"#),
            ClientFrame::Unsubscribe { topic } => {
                if self.topics.remove(topic.as_str()).is_some() {
                    self.state.hub.do_send(Unsubscribe {
                        key: self.key(&topic),
                        session: self.id,
                    });
                }
            }
            ClientFrame::Subscribe {
                topic,
                since,
                epoch,
            } => self.subscribe(topic, since, epoch, ctx),
        }
    }

    fn subscribe(
        &mut self,
        topic: String,
        since: Option<u64>,
        epoch: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if let Err(detail) = parse_topic(&topic) {
            return self.error(ctx, "bad_frame", Some(&topic), detail);
        }
        if !may_see(self.viewer, &topic) {
            return self.error(
                ctx,
                "forbidden_topic",
                Some(&topic),
                "this token may not see that topic",
            );
        }
        if !self.topics.contains_key(topic.as_str())
            && self.topics.len() >= self.state.ws_limits.max_topics
        {
            let detail = format!(
                "at most {} topics per connection",
                self.state.ws_limits.max_topics
            );
            return self.error(ctx, "too_many_topics", Some(&topic), &detail);
        }
        let Some((notice, author)) = notice_owner(self.viewer, &topic) else {
            return self.open(topic, since, epoch, ctx);
        };
        let (store, tenant) = (self.state.store.clone(), self.tenant);
        let fut = async move { store.get_notice(tenant, notice).await };
        ctx.spawn(fut.into_actor(self).map(move |found, act, ctx| {
            if found.is_ok_and(|n| n.created_by == author) {
                act.open(topic, since, epoch, ctx);
            } else {
                act.error(
                    ctx,
                    "forbidden_topic",
                    Some(&topic),
                    "only the notice's author (or a super admin) may follow it",
                );
            }
        }));
    }

    /// Subscribes to a topic the viewer may see: live events, after the history since
    /// `since`.
    fn open(
        &mut self,
        topic: String,
        since: Option<u64>,
        epoch: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(topic.as_str());
        self.topics.insert(
            name.clone(),
            TopicState::Replaying {
                generation,
                buffered: Vec::new(),
            },
        );
        let key = self.key(&topic);
        // Subscribe first, then read history: nothing published in between is missed
        // (it is buffered and merged by seq).
        self.state.hub.do_send(Subscribe {
            key: key.clone(),
            session: self.id,
            to: ctx.address().recipient(),
            lagged: ctx.address().recipient(),
        });
        let log = self.state.topic_log.clone();
        let fut = async move { log.history(&key, since, epoch.as_deref()).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.replayed(name, generation, since, result, ctx);
        }));
    }

    fn replayed(
        &mut self,
        topic: Arc<str>,
        generation: u64,
        since: Option<u64>,
        result: Result<History, onecard_actors::realtime::LogError>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let buffered = match self.topics.get_mut(&topic) {
            Some(TopicState::Replaying {
                generation: g,
                buffered,
            }) if *g == generation => std::mem::take(buffered),
            _ => return, // unsubscribed or subscribed again meanwhile
        };
        let (epoch, latest, events) = match result {
            Ok(History::Events {
                epoch,
                latest,
                events,
            }) => (epoch, latest, events),
            Ok(History::Expired { latest, .. }) => {
                self.drop_topic(&topic);
                let detail = format!(
                    "events after {} are no longer kept (latest is {latest}): refetch over REST, then subscribe without since",
                    since.unwrap_or_default()
                );
                return self.error(ctx, "history_expired", Some(&topic), &detail);
            }
            Err(e) => {
                tracing::warn!(error = %e, "topic history unavailable");
                self.drop_topic(&topic);
                return self.error(
                    ctx,
                    "history_expired",
                    Some(&topic),
                    "history is unavailable right now: refetch over REST, then subscribe again",
                );
            }
        };
        let mut last = since.unwrap_or(latest);
        for e in events {
            if e.seq > last {
                last = e.seq;
                ctx.text(e.frame());
            }
        }
        let last = last.max(latest);
        ctx.text(
            json!({"op": "subscribed", "topic": &*topic, "seq": last, "epoch": epoch}).to_string(),
        );
        let mut last = last;
        for e in buffered {
            if e.seq > last {
                last = e.seq;
                ctx.text(e.frame());
            }
        }
        self.topics.insert(topic, TopicState::Live { last });
    }

    fn drop_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
        self.state.hub.do_send(Unsubscribe {
            key: self.key(topic),
            session: self.id,
        });
    }

    fn cut_off(&mut self, ctx: &mut ws::WebsocketContext<Self>, why: String) {
        if self.closing {
            return;
        }
        self.closing = true;
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Again,
            description: Some(why),
        }));
        ctx.stop();
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        ctx.set_mailbox_capacity(self.state.ws_limits.queue);
        ctx.run_interval(self.state.ws_limits.heartbeat, |act, ctx| {
            if act.last_heard.elapsed() > act.state.ws_limits.timeout {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        // A token revoked while connected (a till retired, a user deleted) ends the
        // connection at the next check; an admin whose group lost a grant loses the
        // topics it opened, each with a `forbidden_topic` error.
        ctx.run_interval(self.state.ws_limits.revalidate, |act, ctx| {
            let (state, hash, member) = (act.state.clone(), act.token_hash, act.member);
            let check = async move {
                let caller = resolve(&state, hash, String::new()).await?;
                match member {
                    None => Ok(caller),
                    Some(m) => in_member_tenant(&state, caller, m).await,
                }
            };
            ctx.spawn(check.into_actor(act).map(|result, act, ctx| match result {
                Err(ApiError::Unauthorized) => {
                    act.closing = true;
                    ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Policy,
                        description: Some("token revoked".into()),
                    }));
                    ctx.stop();
                }
                // Out of the group, or no longer its admin: the session ends.
                Err(ApiError::Forbidden { .. } | ApiError::Edition(_) | ApiError::NotFound) => {
                    act.closing = true;
                    ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Policy,
                        description: Some("no longer acting in that tenant".into()),
                    }));
                    ctx.stop();
                }
                Ok(caller) => {
                    if let Ok((_, viewer)) = viewer(&caller) {
                        act.viewer = viewer;
                        let lost: Vec<Arc<str>> = act
                            .topics
                            .keys()
                            .filter(|t| !may_see(viewer, t))
                            .cloned()
                            .collect();
                        for topic in lost {
                            act.drop_topic(&topic);
                            act.error(
                                ctx,
                                "forbidden_topic",
                                Some(&topic),
                                "this token may no longer see that topic",
                            );
                        }
                    }
                }
                Err(_) => {}
            }));
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        self.state.hub.do_send(Leave { session: self.id });
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        let queue = self.state.ws_limits.queue;
        let mut overflow = false;
        for e in msg.0.iter() {
            if e.key.tenant != self.tenant {
                continue;
            }
            match self.topics.get_mut(&e.key.topic) {
                Some(TopicState::Live { last }) if e.seq > *last => {
                    *last = e.seq;
                    ctx.text(e.frame());
                }
                Some(TopicState::Live { .. }) | None => {}
                Some(TopicState::Replaying { buffered, .. }) => {
                    buffered.push(e.clone());
                    // While history is read; a read slower than this many batches' worth
                    // of live events means the node is overloaded.
                    overflow |= buffered.len() > queue * 64;
                }
            }
        }
        if overflow {
            self.cut_off(ctx, format!("too slow: more than {queue} batches waiting"));
        }
    }
}

impl Handler<Lagged> for WsSession {
    type Result = ();

    fn handle(&mut self, _: Lagged, ctx: &mut Self::Context) {
        let queue = self.state.ws_limits.queue;
        self.cut_off(
            ctx,
            format!("too slow: more than {queue} deliveries waiting for this connection"),
        );
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Binary(_)) => {
                self.error(ctx, "bad_frame", None, "frames are JSON text");
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) | Ok(ws::Message::Nop) => {}
            Err(ws::ProtocolError::Overflow) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some(format!("frames are at most {FRAME_MAX} bytes")),
                }));
                ctx.stop();
            }
            Err(e) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_have_a_known_kind_and_a_uuid() {
        let id = uuid::Uuid::nil();
        assert!(parse_topic("tenant").is_ok());
        for kind in ["terminal", "user", "merchant", "event", "notice"] {
            assert!(parse_topic(&format!("{kind}:{id}")).is_ok(), "{kind}");
        }
        assert!(parse_topic("tenants").is_err());
        assert!(parse_topic("wallet:1").is_err());
        assert!(parse_topic("user:42").is_err());
    }

    #[test]
    fn terminals_and_cardholders_see_only_their_own_topic() {
        let me = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        assert!(may_see(Viewer::Terminal(me), &format!("terminal:{me}")));
        assert!(!may_see(Viewer::Terminal(me), &format!("terminal:{other}")));
        assert!(!may_see(Viewer::Terminal(me), "tenant"));
        assert!(may_see(Viewer::Cardholder(me), &format!("user:{me}")));
        assert!(!may_see(Viewer::Cardholder(me), &format!("terminal:{me}")));
    }

    #[test]
    fn an_admin_sees_the_topic_families_their_group_opens() {
        let id = uuid::Uuid::new_v4();
        let everything = Viewer::Admin {
            payments: true,
            checkin: true,
            notices: NoticeAccess::All,
        };
        for topic in ["tenant", "merchant", "terminal", "user", "event", "notice"].map(|k| {
            if k == "tenant" {
                k.to_string()
            } else {
                format!("{k}:{id}")
            }
        }) {
            assert!(may_see(everything, &topic), "{topic}");
        }
        let finance = Viewer::Admin {
            payments: true,
            checkin: false,
            notices: NoticeAccess::None,
        };
        assert!(may_see(finance, "tenant") && may_see(finance, &format!("merchant:{id}")));
        assert!(!may_see(finance, &format!("event:{id}")));
        assert!(!may_see(finance, &format!("notice:{id}")));
        let checkin_only = Viewer::Admin {
            payments: false,
            checkin: true,
            notices: NoticeAccess::None,
        };
        assert!(!may_see(checkin_only, "tenant"));
        assert!(!may_see(checkin_only, &format!("user:{id}")));
        assert!(may_see(checkin_only, &format!("event:{id}")));
        // Notices: a super admin follows any; a sub-admin or a head only their own (the
        // session checks the author before it subscribes).
        assert_eq!(notice_owner(everything, &format!("notice:{id}")), None);
        let author = uuid::Uuid::new_v4();
        let sender = Viewer::Admin {
            payments: false,
            checkin: false,
            notices: NoticeAccess::Own(author),
        };
        assert!(may_see(sender, &format!("notice:{id}")));
        assert_eq!(
            notice_owner(sender, &format!("notice:{id}")),
            Some((NoticeId(id), format!("admin:{author}")))
        );
        assert_eq!(
            notice_owner(Viewer::Cardholder(author), &format!("notice:{id}")),
            Some((NoticeId(id), format!("user:{author}")))
        );
    }

    #[test]
    fn the_token_may_come_in_the_query() {
        assert_eq!(query_token("a=1&token=abc%2Bd"), Some("abc+d".into()));
        assert_eq!(query_token("a=1"), None);
    }
}
