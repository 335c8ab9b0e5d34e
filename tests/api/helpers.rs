//! `spawn_app`: the real server on port 0 with a database of its own — a fresh SQLite file,
//! or a fresh PostgreSQL database when `ONECARD_DATABASE_URL` points at one — and, when
//! `ONECARD_REDIS_URL` is set, Redis under a key prefix of its own.

use std::sync::Arc;

use onecard::config::Config;
use onecard::startup::Application;
use onecard_actors::clock::{Clock, ManualClock};
use serde_json::{json, Value};

/// The open platform's signature, computed here from its description (docs/OPERATIONS.md,
/// "Open platform"), not with the server's code: hex HMAC-SHA256 with `secret` of
/// `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nhex(SHA-256(body))`. Answers the signature
/// and the text signed.
pub fn app_signature(
    secret: &str,
    method: &str,
    path: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> (String, String) {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};
    let text = format!(
        "{method}\n{path}\n{timestamp}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(text.as_bytes());
    (hex::encode(mac.finalize().into_bytes()), text)
}

pub const ROOT_TOKEN: &str = "test-root-token-0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// An HTTP client for tests (reqwest needs the TLS provider the server installs, even
/// for a test that starts no server in this process).
pub fn client() -> reqwest::Client {
    onecard::startup::install_tls();
    reqwest::Client::new()
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub struct TestApp {
    pub base: String,
    pub state: actix_web::web::Data<onecard::state::AppState>,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub handle: actix_web::dev::ServerHandle,
    /// The test's own PostgreSQL database, when it runs on PostgreSQL.
    pub database_url: Option<String>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

/// A PostgreSQL database made for one test, dropped when the test ends.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Option<(Self, String)> {
        let url = match std::env::var("ONECARD_DATABASE_URL") {
            Ok(u) if u.starts_with("postgres") => u,
            _ => {
                assert!(
                    !in_ci(),
                    "CI=true but ONECARD_DATABASE_URL is not a postgres:// URL"
                );
                skip_loudly("ONECARD_DATABASE_URL is not a postgres:// URL");
                return None;
            }
        };
        let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => {
                assert!(!in_ci(), "CI=true but PostgreSQL is unreachable: {e}");
                skip_loudly(&format!("PostgreSQL is unreachable: {e}"));
                return None;
            }
        };
        tokio::spawn(conn);
        let name = format!("onecard_it_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(url.clone());
        Some((
            PgDatabase {
                admin_url: url,
                name: name.clone(),
            },
            format!("{base}/{name}"),
        ))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Says, past the test harness's output capture, that PostgreSQL cases are skipped.
/// Once per test binary; under `CI=true` the callers fail instead.
pub fn skip_loudly(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** WARNING: PostgreSQL tests are SKIPPED ({why}).\n*** Set ONECARD_DATABASE_URL=postgres://… to run them (CI=true makes this a failure).\n"
        );
    });
}

/// Says, past the test harness's output capture, that a test did not run and why.
pub fn warn_skipped(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** WARNING: {what} SKIPPED ({why}). CI=true makes this a failure.\n"
    );
}

pub fn redis_url() -> Option<String> {
    std::env::var("ONECARD_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// The real server, or `None` (outside CI only) when the engine's service is missing.
pub async fn spawn_app(engine: Engine) -> Option<TestApp> {
    spawn_with(engine, |_| {}).await
}

pub async fn spawn_with(engine: Engine, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(dir.path().to_path_buf());
    config.root_token = Some(ROOT_TOKEN.to_string().into());
    let mut database_url = None;
    let pg = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => {
            let (db, url) = PgDatabase::create().await?;
            database_url = Some(url.clone());
            config.database_url = url.into();
            Some(db)
        }
    };
    if let Some(url) = redis_url() {
        config.redis_url = Some(url.into());
        config.redis_prefix = format!("onecard-test:{}:", uuid::Uuid::new_v4().simple());
    }
    tweak(&mut config);
    let clock = ManualClock::new(jiff::Timestamp::now());
    let app = Application::build_with_clock(config, Arc::new(clock.clone()) as Arc<dyn Clock>)
        .await
        .expect("server starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let state = app.state.clone();
    actix_web::rt::spawn(app.run_until_stopped());
    Some(TestApp {
        base,
        state,
        client: client(),
        clock,
        handle,
        database_url,
        _dir: dir,
        _pg: pg,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Creates a tenant; returns (tenant id, admin token).
    /// The tenant a token belongs to, as the server resolves it.
    /// The texts the sandbox gateway took for `phone`, newest first.
    pub async fn sandbox_texts(&self, admin: &str, phone: &str) -> Vec<String> {
        let (s, texts) = self
            .get(&format!("/api/v1/sandbox/texts?phone={phone}"), admin)
            .await;
        assert_eq!(s, 200, "{texts}");
        texts["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["body"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn tenant_of(&self, token: &str) -> onecard_schema::ids::TenantId {
        onecard::auth::resolve(&self.state, onecard::auth::hash_token(token), "test".into())
            .await
            .expect("a valid token")
            .tenant
            .expect("a tenant token")
    }

    pub async fn tenant(&self, kind: &str, edition: &str) -> (String, String) {
        let (status, body) = self
            .post(
                "/api/v1/tenants",
                ROOT_TOKEN,
                json!({"name": "Test School", "kind": kind, "edition": edition}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().into(),
            body["admin_token"].as_str().unwrap().into(),
        )
    }

    pub async fn user(&self, admin: &str, number: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/users",
                admin,
                json!({"name": format!("User {number}"), "number": number}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn upload(&self, admin: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        let res = self
            .client
            .post(self.url("/api/v1/users/import"))
            .bearer_auth(admin)
            .multipart(form)
            .send()
            .await
            .expect("upload sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting; the runtime ends with the test anyway.
        // The stop command is sent at once; the returned future only waits for it.
        drop(self.handle.stop(false));
    }
}

/// Asserts an RFC 9457 problem with the given status and code; returns the body.
pub fn assert_problem(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["type"], format!("/problems/{want_code}"), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

/// Runs each listed test once per engine: `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::helpers::Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::helpers::Engine::Postgres).await;
                }
            )*
        }
    };
}

/// Starts the real `onecard` binary on a free port with a clean environment plus `env`;
/// returns once it logs that it listens. Its stderr is drained in the background.
pub fn start_node(
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, u16) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecard"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ONECARD_DATA_DIR", data_dir)
        .env("ONECARD_BIND", "127.0.0.1:0")
        .env("ONECARD_LOG_FORMAT", "json")
        .env("ONECARD_RATE_LIMIT_PER_S", "1000000")
        .env("ONECARD_RATE_LIMIT_BURST", "1000000")
        .env("RUST_LOG", "warn,onecard::startup=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("server logs that it listens").unwrap();
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["message"] == "OneCard listening" {
                break v["port"].as_u64().unwrap() as u16;
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

/// A stand-in for a partner's server on a free loopback port (a webhook receiver, an
/// identity endpoint): every request goes to `handler`, with `data` shared. Answers its
/// base address and the handle that stops it.
pub fn serve_local<T, H, Args>(
    data: actix_web::web::Data<T>,
    handler: H,
) -> (String, actix_web::dev::ServerHandle)
where
    T: Send + Sync + 'static,
    H: actix_web::Handler<Args> + Clone + Send + 'static,
    Args: actix_web::FromRequest + 'static,
    H::Output: actix_web::Responder + 'static,
{
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .default_service(actix_web::web::to(handler.clone()))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), handle)
}

/// Whether a request a stand-in server received carries `X-Signature` for `secret` over
/// the text the server signs what it sends out with.
pub fn signed_with(secret: &str, req: &actix_web::HttpRequest, body: &[u8]) -> bool {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (signature, _) = app_signature(
        secret,
        "POST",
        req.path(),
        header("x-timestamp"),
        header("x-nonce"),
        body,
    );
    header("x-signature") == signature
}
