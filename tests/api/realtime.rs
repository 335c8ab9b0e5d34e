//! The websocket protocol end to end, on the in-process bus and on Redis: topic rights,
//! live payment events, resume with `since`, `history_expired`, bad frames, the topic cap,
//! heartbeats, the slow-client cut-off, and the outbox relay's sweep after a crash.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use onecard::config::Config;
use onecard_schema::ids::{EventId, MerchantId, PaymentId, TerminalId};
use onecard_schema::money::Money;
use onecard_schema::wallet::{
    Breakdown, DeclineReason, MoneyRequest, OutboxEvent, Payload, Payment, PaymentStatus,
    PendingEvent,
};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{in_ci, redis_url, spawn_with, warn_skipped, Engine, TestApp};
use crate::money::{code, pay, person, shop, top_up};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    Memory,
    Redis,
}

/// The app on SQLite with the chosen bus; `None` (outside CI) when Redis is missing.
pub async fn spawn_on(bus: BusKind, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    if bus == BusKind::Redis && redis_url().is_none() {
        assert!(!in_ci(), "CI=true but ONECARD_REDIS_URL is not set");
        warn_skipped("Redis bus tests are", "ONECARD_REDIS_URL is not set");
        return None;
    }
    spawn_with(Engine::Sqlite, |c| {
        if bus == BusKind::Memory {
            c.redis_url = None;
        }
        tweak(c);
    })
    .await
}

/// Runs each listed test once per bus: `memory::<name>` and `redis::<name>`.
macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name(super::BusKind::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name(super::BusKind::Redis).await;
                }
            )*
        }
    };
}

pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(base: &str, token: &str) -> Ws {
        let url = format!("{}/api/v1/ws?token={token}", base.replacen("http", "ws", 1));
        let (inner, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket handshake");
        Ws { inner }
    }

    /// As a tenant group's admin following the member tenant `tenant` (`&tenant=`): the
    /// connection, or the handshake's HTTP status when it is refused.
    pub async fn connect_in(base: &str, token: &str, tenant: &str) -> Result<Ws, u16> {
        let url = format!(
            "{}/api/v1/ws?token={token}&tenant={tenant}",
            base.replacen("http", "ws", 1)
        );
        match tokio_tungstenite::connect_async(url).await {
            Ok((inner, _)) => Ok(Ws { inner }),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("websocket handshake: {e}"),
        }
    }

    /// With the bearer header instead of `?token=` (what non-browser clients use).
    pub async fn connect_with_header(base: &str, token: &str) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/api/v1/ws", base.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (inner, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket handshake");
        Ws { inner }
    }

    pub async fn send(&mut self, frame: Value) {
        self.inner
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// The next JSON frame, or `None` after `ms` of silence.
    pub async fn next_within(&mut self, ms: u64) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .ok()??
                .expect("websocket read");
            match msg {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("JSON frame")),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_within(5_000).await.expect("a frame within 5 s")
    }

    /// The next frame that is an event (heartbeats and acks skipped).
    pub async fn next_event(&mut self) -> Value {
        loop {
            let f = self.next().await;
            if f["op"] == "event" {
                return f;
            }
        }
    }

    /// Waits until this connection, subscribed to a topic, has seen the topic's event
    /// `seq`: the event is then published, and in the topic's history. (A payment's event
    /// is published after its 201, by the relay.)
    pub async fn seen(&mut self, seq: u64) {
        while self.next().await["seq"].as_u64() != Some(seq) {}
    }

    /// Subscribes and returns every frame up to and including `subscribed` (or an error).
    pub async fn subscribe(&mut self, topic: &str, since: Option<u64>) -> Vec<Value> {
        let mut frame = json!({"op": "subscribe", "topic": topic});
        if let Some(s) = since {
            frame["since"] = json!(s);
        }
        self.send(frame).await;
        let mut got = Vec::new();
        loop {
            let f = self.next().await;
            let done = f["op"] == "subscribed" || f["op"] == "error";
            got.push(f);
            if done {
                return got;
            }
        }
    }

    /// Reads until the server closes; the close code and reason.
    pub async fn closed(&mut self, within: Duration) -> (CloseCode, String) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Err(_) => panic!("not closed within {within:?}"),
                Ok(None) => panic!("stream ended without a close frame"),
                Ok(Some(Err(e))) => panic!("read error before close: {e}"),
                Ok(Some(Ok(Message::Close(Some(c))))) => return (c.code, c.reason.to_string()),
                Ok(Some(Ok(Message::Close(None)))) => panic!("close without a code"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// A websocket handshake on a plain socket, for a client that must not answer pings.
async fn raw_handshake(base: &str, token: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).await.unwrap();
    let req = format!(
        "GET /api/v1/ws?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads server frames (unmasked) until a close frame: its code and reason.
async fn raw_close(mut s: TcpStream, within: Duration) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut at = 0;
        while buf.len() >= at + 2 {
            let opcode = buf[at] & 0x0f;
            let (len, head) = match buf[at + 1] & 0x7f {
                126 if buf.len() >= at + 4 => {
                    (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                }
                127 => panic!("unexpectedly large frame"),
                126 => break,
                n => (n as usize, 2),
            };
            if buf.len() < at + head + len {
                break;
            }
            let payload = &buf[at + head..at + head + len];
            if opcode == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
            at += head + len;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("closed in time")
            .unwrap();
        assert!(n > 0, "connection ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn last(frames: &[Value]) -> &Value {
    frames.last().expect("frames")
}

on_both_buses!(
    each_token_sees_only_its_own_topics_and_payments_arrive_live,
    a_client_resumes_from_its_last_seq_and_is_told_when_history_is_gone,
    bad_frames_oversized_frames_and_too_many_topics_are_refused,
    a_silent_client_is_closed_after_the_heartbeat_timeout,
    a_client_that_stops_reading_is_cut_off_with_1013_and_others_keep_up,
    the_relay_publishes_what_a_crash_left_in_the_outbox_once,
    a_connection_ends_when_its_token_is_revoked,
    a_sub_admin_loses_the_topics_their_group_no_longer_grants,
);

async fn a_sub_admin_loses_the_topics_their_group_no_longer_grants(bus: BusKind) {
    let Some(app) = spawn_on(bus, |c| c.ws_revalidate = Duration::from_millis(200)).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let clerk = app.user(&admin, "FIN-1").await;
    let finance = crate::groups::group(
        &app,
        &admin,
        json!({"name": "Finance", "features": {"payments": "view"}}),
    )
    .await;
    let token = crate::groups::sub_admin(&app, &admin, &clerk, &finance).await;
    let mut ws = Ws::connect(&app.base, &token).await;
    assert_eq!(
        last(&ws.subscribe("tenant", None).await)["op"],
        "subscribed"
    );
    let event = format!("event:{}", uuid::Uuid::now_v7());
    let refused = last(&ws.subscribe(&event, None).await).clone();
    assert_eq!(refused["code"], "forbidden_topic", "{refused}");
    // Still granted: nothing happens through several checks.
    assert_eq!(ws.next_within(600).await, None);

    let (s, body) = app
        .patch(
            &format!("/api/v1/admin-groups/{}", finance["id"].as_str().unwrap()),
            &admin,
            json!({"features": {}}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let lost = ws
        .next_within(3_000)
        .await
        .expect("the topic is taken away");
    assert_eq!(lost["op"], "error", "{lost}");
    assert_eq!(lost["code"], "forbidden_topic", "{lost}");
    assert_eq!(lost["topic"], "tenant", "{lost}");
    let again = last(&ws.subscribe("tenant", None).await).clone();
    assert_eq!(again["code"], "forbidden_topic", "{again}");
}

async fn a_connection_ends_when_its_token_is_revoked(bus: BusKind) {
    let Some(app) = spawn_on(bus, |c| c.ws_revalidate = Duration::from_millis(200)).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let user = app.user(&admin, "RV-1").await;
    let id = user["id"].as_str().unwrap().to_string();
    let (s, t) = app
        .post(&format!("/api/v1/users/{id}/tokens"), &admin, json!({}))
        .await;
    assert_eq!(s, 201, "{t}");
    let mut ws = Ws::connect(&app.base, t["token"].as_str().unwrap()).await;
    assert_eq!(
        last(&ws.subscribe(&format!("user:{id}"), None).await)["op"],
        "subscribed"
    );
    // Still valid: the connection stays through several checks.
    assert_eq!(ws.next_within(600).await, None);
    let (s, _) = app.delete(&format!("/api/v1/users/{id}"), &admin).await;
    assert_eq!(s, 204);
    let (code, reason) = ws.closed(Duration::from_secs(3)).await;
    assert_eq!(code, CloseCode::Policy, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
}

async fn each_token_sees_only_its_own_topics_and_payments_arrive_live(bus: BusKind) {
    let Some(app) = spawn_on(bus, |_| {}).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let other = crate::money::shop(&app, 100_000).await;
    let (user, me) = person(&app, &shop.admin, "RT-1").await;
    let (stranger, _) = person(&app, &shop.admin, "RT-2").await;
    top_up(&app, &shop, &user, 1_000).await;

    // A handshake needs a valid token.
    let res = app.client.get(app.url("/api/v1/ws")).send().await.unwrap();
    assert_eq!(res.status(), 401);

    let res = app
        .client
        .get(app.url("/api/v1/ws?token=not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A valid token without the websocket upgrade is a clear 400.
    let res = app
        .client
        .get(app.url("/api/v1/ws"))
        .bearer_auth(&shop.terminal)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "not_websocket");

    let own = format!("terminal:{}", shop.terminal_id);
    // The till authenticates with the bearer header; the others below with `?token=`.
    let mut till = Ws::connect_with_header(&app.base, &shop.terminal).await;
    let f = till.subscribe(&own, None).await;
    assert_eq!(last(&f)["op"], "subscribed", "{f:?}");
    assert_eq!(last(&f)["seq"], 0);
    assert!(last(&f)["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    for topic in [
        format!("terminal:{}", other.terminal_id),
        "tenant".to_string(),
        format!("user:{user}"),
    ] {
        let f = till.subscribe(&topic, None).await;
        assert_eq!(last(&f)["code"], "forbidden_topic", "{topic}: {f:?}");
        assert_eq!(last(&f)["topic"], topic.as_str());
    }

    let mut person_ws = Ws::connect(&app.base, &me).await;
    let f = person_ws.subscribe(&format!("user:{user}"), None).await;
    assert_eq!(last(&f)["op"], "subscribed");
    let person_seq = last(&f)["seq"].as_u64().unwrap();
    let f = person_ws.subscribe(&format!("user:{stranger}"), None).await;
    assert_eq!(last(&f)["code"], "forbidden_topic");

    let mut dashboard = Ws::connect(&app.base, &shop.admin).await;
    let f = dashboard.subscribe("tenant", None).await;
    assert_eq!(last(&f)["op"], "subscribed");
    let tenant_seq = last(&f)["seq"].as_u64().unwrap();
    // Another tenant's admin names the same topic: it is their own tenant's, and empty.
    let mut outsider = Ws::connect(&app.base, &other.admin).await;
    assert_eq!(
        last(&outsider.subscribe(&own, None).await)["op"],
        "subscribed"
    );

    let c = code(&app, &me).await;
    let p = pay(&app, &shop, &c, 300).await;
    for (ws, seq) in [
        (&mut till, 1),
        (&mut person_ws, person_seq + 1),
        (&mut dashboard, tenant_seq + 1),
    ] {
        let e = ws.next().await;
        assert_eq!(e["op"], "event", "{e}");
        assert_eq!(e["type"], "payment.succeeded");
        assert_eq!(e["seq"], seq, "the next seq of each topic: {e}");
        assert_eq!(e["data"]["id"], p["id"]);
        assert_eq!(e["data"]["amount"], 300);
        assert_eq!(e["data"]["breakdown"]["balance"], 300);
    }
    // A declined attempt reaches the till too, with its reason.
    let p2 = pay(&app, &shop, &c, 100).await;
    assert_eq!(p2["decline_reason"], "code_reused");
    let e = till.next().await;
    assert_eq!(
        (e["seq"].clone(), e["type"].clone()),
        (json!(2), json!("payment.declined"))
    );
    assert_eq!(e["data"]["decline_reason"], "code_reused");
    assert_eq!(
        outsider.next_within(300).await,
        None,
        "another tenant saw an event"
    );

    // Unsubscribed: nothing more arrives.
    till.send(json!({"op": "unsubscribe", "topic": own})).await;
    till.send(json!({"op": "ping"})).await;
    assert_eq!(till.next().await, json!({"op": "pong"}));
    let c = code(&app, &me).await;
    pay(&app, &shop, &c, 100).await;
    assert_eq!(till.next_within(300).await, None);
}

async fn a_client_resumes_from_its_last_seq_and_is_told_when_history_is_gone(bus: BusKind) {
    let Some(app) = spawn_on(bus, |c| c.ws_history = 3).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let (user, me) = person(&app, &shop.admin, "RT-3").await;
    top_up(&app, &shop, &user, 10_000).await;
    let topic = format!("terminal:{}", shop.terminal_id);

    let mut till = Ws::connect(&app.base, &shop.terminal).await;
    let epoch = last(&till.subscribe(&topic, None).await)["epoch"].clone();
    // A second connection stays subscribed, to say when an event is in the history.
    let mut watch = Ws::connect(&app.base, &shop.terminal).await;
    watch.subscribe(&topic, None).await;
    for amount in [10, 20] {
        let c = code(&app, &me).await;
        pay(&app, &shop, &c, amount).await;
    }
    assert_eq!(till.next().await["seq"], 1);
    assert_eq!(till.next().await["seq"], 2);
    drop(till);

    // Missed while away: 3 and 4.
    for amount in [30, 40] {
        let c = code(&app, &me).await;
        pay(&app, &shop, &c, amount).await;
    }
    watch.seen(4).await;
    let mut till = Ws::connect(&app.base, &shop.terminal).await;
    till.send(json!({"op": "subscribe", "topic": topic, "since": 2, "epoch": epoch}))
        .await;
    let e3 = till.next().await;
    let e4 = till.next().await;
    assert_eq!(
        (e3["seq"].clone(), e3["data"]["amount"].clone()),
        (json!(3), json!(30))
    );
    assert_eq!(
        (e4["seq"].clone(), e4["data"]["amount"].clone()),
        (json!(4), json!(40))
    );
    let sub = till.next().await;
    assert_eq!(sub["op"], "subscribed");
    assert_eq!(sub["seq"], 4);
    assert_eq!(sub["epoch"], epoch);
    // Live again after the replay, without a gap or a repeat.
    let c = code(&app, &me).await;
    pay(&app, &shop, &c, 50).await;
    assert_eq!(till.next().await["seq"], 5);

    // Three events are kept (3..=5): since 1 cannot be served, nor another epoch.
    let mut late = Ws::connect(&app.base, &shop.terminal).await;
    let f = late.subscribe(&topic, Some(1)).await;
    assert_eq!(last(&f)["code"], "history_expired", "{f:?}");
    assert_eq!(f.len(), 1, "no partial replay: {f:?}");
    late.send(json!({"op": "subscribe", "topic": topic, "since": 4, "epoch": "not-this-one"}))
        .await;
    assert_eq!(late.next().await["code"], "history_expired");
    // Nothing more arrives on a topic that expired (the client refetches, resubscribes).
    let c = code(&app, &me).await;
    pay(&app, &shop, &c, 60).await;
    watch.seen(6).await;
    assert_eq!(late.next_within(300).await, None);
    let f = late.subscribe(&topic, Some(3)).await;
    let seqs: Vec<_> = f.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        [4, 5, 6, 6],
        "replay 4..=6, then subscribed at 6: {f:?}"
    );
}

async fn bad_frames_oversized_frames_and_too_many_topics_are_refused(bus: BusKind) {
    let Some(app) = spawn_on(bus, |c| c.ws_max_topics = 2).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let mut ws = Ws::connect(&app.base, &admin).await;
    for bad in [
        "not json".to_string(),
        json!({"op": "dance"}).to_string(),
        json!({"op": "subscribe"}).to_string(),
        json!({"op": "subscribe", "topic": "tenant", "since": -1}).to_string(),
    ] {
        ws.inner.send(Message::text(bad.clone())).await.unwrap();
        let e = ws.next().await;
        assert_eq!(
            (e["op"].clone(), e["code"].clone()),
            (json!("error"), json!("bad_frame")),
            "{bad}: {e}"
        );
        assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    for topic in ["wallet:1", "user:42", "tenant:extra"] {
        let f = ws.subscribe(topic, None).await;
        assert_eq!(last(&f)["code"], "bad_frame", "{topic}");
    }
    ws.inner.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await["code"], "bad_frame");

    let id = uuid::Uuid::new_v4();
    assert_eq!(
        last(&ws.subscribe("tenant", None).await)["op"],
        "subscribed"
    );
    assert_eq!(
        last(&ws.subscribe(&format!("merchant:{id}"), None).await)["op"],
        "subscribed"
    );
    let f = ws.subscribe(&format!("user:{id}"), None).await;
    assert_eq!(last(&f)["code"], "too_many_topics");
    // Subscribing again to a held topic is not a new one.
    assert_eq!(
        last(&ws.subscribe("tenant", None).await)["op"],
        "subscribed"
    );
    // The connection still works after every refusal.
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.next().await["op"], "pong");

    // A frame over the cap closes the connection with 1009.
    let big = json!({"op": "ping", "pad": "x".repeat(onecard::ws::FRAME_MAX)}).to_string();
    ws.inner.send(Message::text(big)).await.unwrap();
    let (code, reason) = ws.closed(Duration::from_secs(5)).await;
    assert_eq!(code, CloseCode::Size, "{reason}");
}

async fn a_silent_client_is_closed_after_the_heartbeat_timeout(bus: BusKind) {
    let Some(app) = spawn_on(bus, |c| {
        c.ws_heartbeat = Duration::from_millis(100);
        c.ws_timeout = Duration::from_millis(400);
    })
    .await
    else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    // This client reads (and so answers pings) all along: it stays.
    let mut lively = Ws::connect(&app.base, &admin).await;
    // This one reads nothing, so it never answers a ping.
    let silent = raw_handshake(&app.base, &admin).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1_200);
    while tokio::time::Instant::now() < until {
        assert_eq!(lively.next_within(50).await, None);
    }
    lively.send(json!({"op": "ping"})).await;
    assert_eq!(lively.next().await["op"], "pong");
    let (code, reason) = raw_close(silent, Duration::from_secs(2)).await;
    assert_eq!(code, 1001);
    assert!(reason.contains("heartbeat"), "{reason}");
}

async fn a_client_that_stops_reading_is_cut_off_with_1013_and_others_keep_up(bus: BusKind) {
    let Some(app) = spawn_on(bus, |c| c.ws_queue = 16).await else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "standard").await;
    let tenant: onecard_schema::ids::TenantId =
        onecard_schema::ids::TenantId(tenant.parse().unwrap());
    // The slow client: a small receive buffer, and it does not read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(app.base.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let url = format!(
        "{}/api/v1/ws?token={admin}",
        app.base.replacen("http", "ws", 1)
    );
    let (slow, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut slow = Ws { inner: slow };
    assert_eq!(
        last(&slow.subscribe("tenant", None).await)["op"],
        "subscribed"
    );
    let mut fast = Ws::connect(&app.base, &admin).await;
    assert_eq!(
        last(&fast.subscribe("tenant", None).await)["op"],
        "subscribed"
    );

    // 4,000 events of 4 KiB each: 16 MB, far more than the socket buffers hold.
    let pad = "x".repeat(4096);
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 4_000 {
            let e = fast.next().await;
            assert_eq!(e["seq"], seen + 1, "in order, no gaps");
            seen += 1;
        }
        seen
    });
    for chunk in 0..40 {
        let events: Vec<PendingEvent> = (0..100)
            .map(|i| (i, EventId::new()))
            .map(|(i, id)| PendingEvent {
                tenant_id: tenant,
                outbox_key: id,
                event: OutboxEvent {
                    id,
                    topics: vec!["tenant".into()],
                    kind: "test.filler".into(),
                    payload: Payload::of(&json!({"n": chunk * 100 + i, "pad": pad})),
                },
                created_at: jiff::Timestamp::now(),
            })
            .collect();
        app.state.topic_log.publish(&events).await.unwrap();
        // A steady stream, not one burst: a client that reads keeps up.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fast client keeps up")
        .unwrap();
    assert_eq!(seen, 4_000);
    let (code, reason) = slow.closed(Duration::from_secs(30)).await;
    assert_eq!(code, CloseCode::Again, "{reason}");
    assert!(reason.contains("too slow"), "{reason}");
}

async fn the_relay_publishes_what_a_crash_left_in_the_outbox_once(bus: BusKind) {
    let Some(app) = spawn_on(bus, |_| {}).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let mut till = Ws::connect(&app.base, &shop.terminal).await;
    let topic = format!("terminal:{}", shop.terminal_id);
    assert_eq!(
        last(&till.subscribe(&topic, None).await)["op"],
        "subscribed"
    );
    // A commit whose node died before its relay ran: the event is only in the outbox.
    let tenant = app.tenant_of(&shop.admin).await;
    let now = app.clock_now();
    let payment = Payment {
        id: PaymentId::new(),
        tenant_id: tenant,
        user_id: None,
        merchant_id: MerchantId(shop.merchant.parse().unwrap()),
        terminal_id: TerminalId(shop.terminal_id.parse().unwrap()),
        amount: Money(100),
        status: PaymentStatus::Declined,
        decline_reason: Some(DeclineReason::CodeInvalid),
        coupon_id: None,
        breakdown: Breakdown::default(),
        subsidy_parts: Vec::new(),
        refunded: Money::ZERO,
        created_at: now,
        updated_at: now,
    };
    let id = EventId::new();
    let event = PendingEvent {
        tenant_id: tenant,
        outbox_key: id,
        event: OutboxEvent {
            id,
            topics: vec![topic.clone()],
            kind: "payment.declined".into(),
            payload: Payload::of(&json!({"left": "behind"})),
        },
        created_at: now,
    };
    let request = MoneyRequest {
        scope: "test".into(),
        key: uuid::Uuid::new_v4().to_string(),
        request_hash: [0; 32],
        status: 201,
        body: Vec::new(),
    };
    app.state
        .store
        .insert_orphan_payment(payment, vec![event.event.clone()], request)
        .await
        .unwrap();
    // Fresh rows are left to the node that wrote them; once stale, any sweep takes them.
    assert_eq!(till.next_within(1_500).await, None);
    app.clock.advance(jiff::SignedDuration::from_secs(10));
    let e = till
        .next_within(5_000)
        .await
        .expect("the sweep publishes it");
    assert_eq!(
        (e["seq"].clone(), e["data"].clone()),
        (json!(1), json!({"left": "behind"}))
    );
    // Published once, even when it is sent again (another node's sweep, a retry).
    app.state.topic_log.publish(&[event]).await.unwrap();
    assert_eq!(
        till.next_within(1_500).await,
        None,
        "a resend made a second seq"
    );
    let pending = app.state.store.pending_outbox(None, 10).await.unwrap();
    assert!(
        pending.is_empty(),
        "published events leave the outbox: {pending:?}"
    );
}
