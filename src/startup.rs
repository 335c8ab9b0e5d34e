//! Building the server: open the store (applying migrations), load or create the master
//! key and root token, connect the bus, bind the listener. `Application::build` returns
//! the real port, so tests run the real server on port 0.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, HttpServer};
use anyhow::Context;
use base64::Engine;
use onecard_actors::clock::{Clock, SystemClock};
use onecard_actors::keys::Keys;
use onecard_actors::ledger::LedgerHandle;
use onecard_actors::merchant::MerchantDirectory;
use onecard_actors::provider::Sandbox;
use onecard_actors::realtime::hub::Tap;
use onecard_actors::realtime::relay::SweepTiming;
use onecard_actors::realtime::{Hub, Relay};
use onecard_actors::wallet::{Env, Wallets};
use onecard_schema::model::{NewToken, TokenKind};
use onecard_schema::Store;
use secrecy::ExposeSecret;

use crate::auth::{hash_token, new_token};
use crate::bus::Bus;
use crate::config::Config;
use crate::limits::SHUTDOWN_GRACE_S;
use crate::ratelimit::Limiter;
use crate::routes;
use crate::state::AppState;
use crate::webhooks::Webhooks;
use crate::ws::WsLimits;

pub struct Application {
    port: u16,
    server: Server,
    pub state: web::Data<AppState>,
    /// Set when this start generated the root token (first start of an empty store).
    pub generated_root_token: Option<String>,
}

/// Installs rustls's ring provider for this process: webhooks speak TLS through rustls
/// without aws-lc (which needs cmake to build). reqwest, built with `rustls-no-provider`,
/// panics on its first client without one, so anything in this process that builds a
/// client first calls this. Idempotent.
pub fn install_tls() {
    // An error means a provider is installed already.
    #[allow(deprecated)] // ring offers no post-quantum key exchange; see the README
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        install_tls();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store = onecard_schema::open(config.database_url.expose_secret(), config.db_pool_size)
            .await
            .context("opening the store")?;
        let keys = Keys::derive(&master_key(&config)?)?;
        let env_root_hash = config
            .root_token
            .as_ref()
            .map(|t| hash_token(t.expose_secret()));
        let generated_root_token = if env_root_hash.is_none() {
            ensure_root_token(&*store, &config.data_dir, clock.as_ref()).await?
        } else {
            None
        };
        let bus = Bus::connect(&config).await.context("connecting to Redis")?;
        let listener =
            TcpListener::bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{port}", config.bind.ip()));
        let real_name: Option<Arc<dyn crate::realname::RealNameRegistry>> = match &config.real_name
        {
            crate::config::RealName::Format => None,
            crate::config::RealName::Http { url, secret } => Some(Arc::new(
                crate::realname::HttpRealName::new(url, secret.clone())
                    .context("building the real-name registry client")?,
            )),
        };
        let sandbox = Arc::new(Sandbox::default());
        let (texts, sandbox_texts): (Arc<dyn crate::texts::TextSender>, _) =
            match &config.text_gateway {
                crate::config::TextGateway::Sandbox => {
                    let sandbox = Arc::new(crate::texts::SandboxTexts::default());
                    (sandbox.clone(), Some(sandbox))
                }
                crate::config::TextGateway::Http { url, secret } => (
                    Arc::new(
                        crate::texts::HttpTexts::new(url, secret.clone())
                            .context("building the text gateway client")?,
                    ),
                    None,
                ),
            };
        // The commit path and the real-time path each get threads of their own, off the
        // main thread: the ledger writer on one (with the wallet actors, unless they have
        // threads of their own), the outbox relay on another, so that publishing events and
        // sweeping the outbox never hold up a wallet (docs/BENCHMARKS.md, thirty-fourth
        // run), the hub on a third, merchant actors on a fourth.
        let hub = Hub::start_in_arbiter(&Arbiter::new().handle(), |_| Hub::default());
        let directory = MerchantDirectory::new(store.clone(), clock.clone());
        let merchant_totals =
            MerchantDirectory::start_in_arbiter(&Arbiter::new().handle(), |_| directory);
        hub.do_send(Tap {
            prefix: "merchant:",
            to: merchant_totals.clone().recipient(),
        });
        let topic_log = bus.topic_log(hub.clone(), config.ws_history);
        let (relay_ready, relay_started) = tokio::sync::oneshot::channel();
        let webhooks = Arc::new(Webhooks::new(store.clone(), clock.clone(), config.webhooks));
        let (s, l, w, c) = (
            store.clone(),
            topic_log.clone(),
            webhooks.clone(),
            clock.clone(),
        );
        Arbiter::new().spawn(async move {
            let _ = relay_ready.send(Relay::spawn(s, l, w, c, SweepTiming::default()));
        });
        let relay = relay_started.await.context("starting the outbox relay")?;
        let (ready, started) = tokio::sync::oneshot::channel();
        let (s, r) = (store.clone(), relay.clone());
        let commit_thread = Arbiter::new();
        let commit_handle = commit_thread.handle();
        commit_thread.spawn(async move {
            let _ = ready.send(LedgerHandle::spawn(s, r));
        });
        let ledger = started.await.context("starting the ledger writer")?;
        let env = Env {
            store: store.clone(),
            ledger,
            clock: clock.clone(),
            provider: sandbox.clone(),
            provider_timeout: config.provider_timeout,
            mailbox: config.wallet_mailbox,
        };
        // By default the wallet actors share the commit thread: a commit goes to the
        // ledger writer and its answer comes back without waking another thread, which
        // took 7–20 % off the server's CPU per payment on 2 cores (docs/BENCHMARKS.md).
        // A host whose wallet work outgrows one thread gives them threads of their own.
        let wallets = match config.wallet_threads {
            0 => Wallets::on(env, vec![commit_handle]),
            n => Wallets::on(env, (0..n).map(|_| Arbiter::new().handle()).collect()),
        };
        let state = web::Data::new(AppState {
            store,
            keys,
            clock,
            bus,
            env_root_hash,
            public_url,
            wallets,
            provider: sandbox.clone(),
            provider_name: config.provider.clone(),
            sandbox: Some(sandbox),
            tokens: Default::default(),
            apps: Default::default(),
            tenants: Default::default(),
            heads: Default::default(),
            front_ends: Default::default(),
            hosts: Default::default(),
            merchants: Default::default(),
            terminals: Default::default(),
            collection_codes: Default::default(),
            hub,
            topic_log,
            relay,
            webhooks,
            ws_limits: WsLimits {
                max_topics: config.ws_max_topics,
                queue: config.ws_queue,
                heartbeat: config.ws_heartbeat,
                timeout: config.ws_timeout,
                revalidate: config.ws_revalidate,
            },
            merchant_totals,
            idempotency_keep: jiff::SignedDuration::from_hours(
                24 * config.idempotency_keep_days as i64,
            ),
            request_timeout: config.request_timeout,
            visitor_requests: {
                let limiter = Limiter::per_minute(
                    crate::limits::VISITOR_REQUESTS_PER_MINUTE,
                    crate::limits::VISITOR_REQUESTS_BURST,
                );
                limiter.spawn_trim();
                limiter
            },
            claims: {
                let limiter = Limiter::per_minute(
                    crate::limits::CLAIMS_PER_MINUTE,
                    crate::limits::CLAIMS_BURST,
                );
                limiter.spawn_trim();
                limiter
            },
            texts,
            sandbox_texts,
            real_name,
            identity_http: reqwest::Client::builder()
                .timeout(crate::limits::IDENTITY_ENDPOINT_TIMEOUT)
                .connect_timeout(crate::limits::IDENTITY_ENDPOINT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("OneCard-Identity/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("building the identity endpoint client")?,
            notifier: Arc::new(
                crate::notify::Notifier::new().context("building the notifier's client")?,
            ),
        });
        crate::api::arrears::spawn_reminders(state.clone().into_inner());
        crate::api::payments::spawn_used_code_purge(state.clone().into_inner());
        crate::idempotency::spawn_purge(state.clone().into_inner());
        crate::apps::spawn_nonce_purge(state.clone().into_inner());
        crate::deferred::spawn_sweep(state.clone().into_inner());
        crate::charges::spawn_sweep(state.clone().into_inner());
        crate::api::ledger::spawn_seal(state.clone().into_inner());
        crate::api::reports::spawn_rollups(state.clone().into_inner());
        crate::webhooks::spawn_deliverer(state.clone().into_inner())
            .context("starting the webhook deliverer")?;
        crate::webhooks::spawn_purge(state.clone().into_inner());
        crate::notify::spawn(state.clone().into_inner());
        crate::retention::spawn(state.clone().into_inner());
        crate::webhooks::spawn_backlog_gauges(state.clone().into_inner());
        let prometheus = web::Data::new(crate::metrics::install());
        let limiter = Limiter::new(config.rate_limit_per_s, config.rate_limit_burst);
        limiter.spawn_trim();
        let limiter = web::Data::from(limiter);
        let doc = Arc::new(routes::openapi());
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            routes::app(
                app_state.clone(),
                prometheus.clone(),
                limiter.clone(),
                doc.clone(),
            )
        })
        .shutdown_timeout(SHUTDOWN_GRACE_S)
        .client_request_timeout(Duration::from_secs(30));
        // Two HTTP workers per core by default, so that a request keeping its worker's
        // thread busy for long (a big JSON body, say) stalls a quarter of the connections
        // on 2 cores, not half. On the payment bench the count has mattered little since
        // the wallets and the store got threads of their own: one per core measured 2 %
        // ahead in one session and within the machine's noise in the next (thirty-seventh
        // and thirty-eighth runs in docs/BENCHMARKS.md), after trailing by up to 20 %
        // in earlier runs.
        let workers = match config.workers {
            0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        server = server.workers(workers);
        let server = server.listen(listener)?.run();
        tracing::info!(
            port,
            store = state.store.engine(),
            bus = state.bus.kind(),
            "OneCard listening"
        );
        Ok(Self {
            port,
            server,
            state,
            generated_root_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (graceful: in-flight requests finish, and with them
    /// every pending commit) or until the handle stops it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The master key: `ONECARD_MASTER_KEY`, else `<data dir>/master-key`, created on first
/// start (mode 0600).
fn master_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(k) = &config.master_key {
        return Ok(k.expose_secret().as_bytes().to_vec());
    }
    let path = config.data_dir.join("master-key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().as_bytes().to_vec());
    }
    if config.database_engine() == "postgres" {
        tracing::warn!(
            "no ONECARD_MASTER_KEY: generating one in the data dir; every node sharing this \
             database must use the same key, so set ONECARD_MASTER_KEY in production"
        );
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_secret(&path, &key)?;
    Ok(key.into_bytes())
}

/// Generates the root token on the first start of an empty store.
async fn ensure_root_token(
    store: &dyn Store,
    data_dir: &Path,
    clock: &dyn Clock,
) -> anyhow::Result<Option<String>> {
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Root,
        tenant_id: None,
        subject_id: None,
        created_at: clock.now(),
    };
    if !store.insert_root_token_if_none(stored).await? {
        return Ok(None);
    }
    write_secret(&data_dir.join("root-token"), &token)?;
    Ok(Some(token))
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}
