//! Wallet actors: one per active cardholder, started on first use by a sharded registry
//! and stopped when idle. An actor handles its wallet's messages strictly one at a time
//! (`AtomicResponse`: no interleaving even across the awaited commit), so one wallet
//! never races itself; it answers only after its commit is durable. Across nodes the
//! store's version fence keeps wallets honest: a fenced commit reloads and retries once.

pub mod decide;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use jiff::Timestamp;
use onecard_schema::ids::{PaymentId, TenantId, UserId};
use onecard_schema::wallet::{
    CommitError, MoneyRequest, Payment, PaymentStatus, WalletCommit, WalletSnapshot,
};
use onecard_schema::{Store, StoreError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::domain::code::{CODE_SKEW, CODE_TTL};
use crate::ledger::LedgerHandle;
use crate::provider::{Provider, ProviderUnavailable};
use crate::wake::{self, Home};
use decide::{decide, Decision};
pub use decide::{Answer, CodeCheck, MerchantInfo, Op, Policy, Refusal};

/// Messages one wallet may have queued before callers get 503 (a person pays one
/// payment at a time; a burst of 20+ concurrent attempts is already abuse).
pub const WALLET_MAILBOX_DEFAULT: usize = 64;
/// An actor with no message for this long stops (its state is in the store).
pub const WALLET_IDLE: Duration = Duration::from_secs(300);
/// Idempotency answers kept in memory per wallet (older ones are found in the store).
const RECENT_REQUESTS_MAX: usize = 256;
/// Deferred debits one node asks the provider about at once; the rest wait their turn.
pub const PROVIDER_CONCURRENCY: usize = 64;
/// Registry shards (less lock contention than one map).
const SHARDS: usize = 64;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tz: jiff::tz::TimeZone::UTC,
            require_agreement: true,
            refund_expired_to_cash: false,
        }
    }
}

/// An idempotent request's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemKey {
    pub scope: String,
    pub key: String,
    pub hash: [u8; 32],
}

#[derive(Debug)]
pub enum Outcome {
    Decided {
        answer: Answer,
        body: Vec<u8>,
        state: Box<WalletSnapshot>,
    },
    /// The same request was answered before: its stored answer.
    Replay { status: u16, body: Vec<u8> },
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("not found")]
    NotFound,
    #[error("wallet busy")]
    Busy,
    #[error(transparent)]
    Refused(Refusal),
    #[error("idempotency key used with another request")]
    IdempotencyConflict,
    /// The store (or this node's way to it) is unavailable for now: answered 503, and the
    /// request may be retried with the same idempotency key.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store: {0}")]
    Store(String),
}

/// What wallet actors share.
pub struct Env {
    pub store: Arc<dyn Store>,
    pub ledger: LedgerHandle,
    pub clock: Arc<dyn Clock>,
    pub provider: Arc<dyn Provider>,
    /// A provider that has not answered a deferred debit in this long counts as
    /// unavailable: the payment stays `accepted` and is asked again later.
    pub provider_timeout: std::time::Duration,
    pub mailbox: usize,
}

pub struct Request {
    pub tenant: TenantId,
    pub op: Op,
    pub policy: Policy,
    pub idem: Option<IdemKey>,
    pub reply: Reply,
}

/// Where a request's answer goes: the caller's channel, completed on the caller's thread
/// together with the other answers this wallet thread gives meanwhile (`wake`).
pub struct Reply {
    tx: oneshot::Sender<Result<Outcome, WalletError>>,
    home: Home,
    /// Counts the request against its wallet's mailbox bound until it is answered, or
    /// dropped unanswered, even if its caller stopped waiting (a deadline, a client gone):
    /// abandoned calls still queue at the actor and are counted as long as they do.
    counted: Option<InFlight>,
}

impl Reply {
    fn send(self, answer: Result<Outcome, WalletError>) {
        let Reply { tx, home, counted } = self;
        drop(counted);
        // A caller that went away (its request was cancelled) needs no answer.
        wake::answer(&home, move || {
            let _ = tx.send(answer);
        });
    }
}

impl Message for Request {
    type Result = ();
}

/// A remembered idempotent answer: the request's fingerprint, status and body.
type StoredAnswer = ([u8; 32], u16, Vec<u8>);

pub struct WalletActor {
    tenant: TenantId,
    user: UserId,
    env: Arc<Env>,
    wallets: Weak<Wallets>,
    state: Option<WalletSnapshot>,
    load_error: Option<StoreError>,
    nonces: HashMap<Vec<u8>, Timestamp>,
    requests: HashMap<(String, String), StoredAnswer>,
    request_order: VecDeque<(String, String)>,
    last_used: Instant,
}

enum Step {
    Applied(Box<Decision>, Option<MoneyRequest>),
    Refused(Refusal, Option<Box<WalletSnapshot>>),
    Replay { status: u16, body: Vec<u8> },
}

fn with_request(
    decision: &Decision,
    idem: &Option<IdemKey>,
) -> Option<(WalletCommit, Option<MoneyRequest>)> {
    let mut commit = decision.commit.clone()?;
    let request = idem.as_ref().map(|k| MoneyRequest {
        scope: k.scope.clone(),
        key: k.key.clone(),
        request_hash: k.hash,
        status: match &decision.answer {
            Answer::Payment { status, .. } => *status,
            _ => 201,
        },
        body: decision.body.clone(),
    });
    commit.request = request.clone();
    Some((commit, request))
}

/// A store failure as the caller sees it: `NotFound` for no such cardholder in the
/// tenant, `Unavailable` while the store cannot be reached.
fn load_failed(e: &StoreError) -> WalletError {
    match e {
        StoreError::NotFound => WalletError::NotFound,
        StoreError::Unavailable(why) => WalletError::Unavailable(why.clone()),
        e => WalletError::Store(e.to_string()),
    }
}

/// The refusal of a top-up whose reference the tenant's register holds already.
fn reference_used(op: &Op) -> Refusal {
    let reference = match op {
        Op::TopUp {
            reference: Some(r), ..
        } => r.as_str(),
        _ => "",
    };
    Refusal {
        status: 409,
        code: "reference_used",
        field: Some("reference"),
        detail: format!("the reference {reference} was credited before: GET /wallets/topups?reference= shows it"),
    }
}

/// A commit the store did not apply, for a reason the wallet cannot decide around.
fn commit_failed(e: CommitError) -> WalletError {
    match e {
        CommitError::Unavailable(why) => WalletError::Unavailable(why),
        e => WalletError::Store(e.to_string()),
    }
}

/// One operation on one wallet, as the actor hands it to the part that awaits the store.
struct Call {
    env: Arc<Env>,
    tenant: TenantId,
    user: UserId,
    op: Op,
    policy: Policy,
    idem: Option<IdemKey>,
}

/// A refund is decided on its payment as stored, read after the copy of the wallet it is
/// decided with: a refund of the same payment committed in between, on this node or
/// another, is then either in the payment read or moves the wallet on, so that the store's
/// fence refuses this commit. (The payment the handler read may be older than either.) A
/// top-up's reversal is decided on the top-up's register line the same way.
async fn reread_stored(env: &Env, tenant: TenantId, op: &mut Op) -> Result<(), WalletError> {
    if let Op::Refund { payment, .. } = op {
        **payment = env
            .store
            .get_payment(tenant, payment.id)
            .await
            .map_err(|e| load_failed(&e))?;
    }
    // A top-up's reversal likewise, on the top-up's line.
    if let Op::ReverseTopUp { topup, .. } = op {
        **topup = env
            .store
            .get_topup(tenant, topup.id)
            .await
            .map_err(|e| load_failed(&e))?;
    }
    Ok(())
}

/// Commits a decision; when the store refuses it (a lost fence, a code used elsewhere, a
/// card no longer active) reloads and decides again once.
async fn commit_with_retry(call: Call, first: Decision) -> Result<Step, WalletError> {
    let Call {
        env,
        tenant,
        user,
        mut op,
        policy,
        idem,
    } = call;
    let Some((commit, request)) = with_request(&first, &idem) else {
        return Ok(Step::Applied(Box::new(first), None));
    };
    match env.ledger.commit(commit).await {
        Ok(()) => Ok(Step::Applied(Box::new(first), request)),
        Err(CommitError::Duplicate) => {
            let Some(k) = idem else {
                return Err(WalletError::Store("duplicate without a key".into()));
            };
            let stored = env
                .store
                .find_money_request(k.scope.clone(), k.key.clone())
                .await
                .map_err(|e| load_failed(&e))?
                .ok_or_else(|| WalletError::Store("idempotency record vanished".into()))?;
            if stored.request_hash != k.hash {
                return Err(WalletError::IdempotencyConflict);
            }
            Ok(Step::Replay {
                status: stored.status,
                body: stored.body,
            })
        }
        // A top-up whose bank reference was credited before, by another request: nothing
        // was written, and the wallet is as it was.
        Err(CommitError::ReferenceUsed) => Ok(Step::Refused(reference_used(&op), None)),
        Err(e @ (CommitError::Fenced | CommitError::NonceUsed | CommitError::CardInactive)) => {
            let now = env.clock.now();
            // `NotFound`: the cardholder was removed meanwhile.
            let fresh = env
                .store
                .load_wallet(tenant, user, now)
                .await
                .map_err(|e| load_failed(&e))?;
            reread_stored(&env, tenant, &mut op).await?;
            match (&e, &mut op) {
                // The store saw this code before (another node, or before a restart).
                (
                    CommitError::NonceUsed,
                    Op::Pay {
                        code: CodeCheck::Valid { reused, .. },
                        ..
                    },
                ) => *reused = true,
                // The cardholder was suspended or left since the payment began.
                (CommitError::CardInactive, Op::Pay { card_active, .. }) => *card_active = false,
                _ => {}
            }
            let second = match decide(&fresh, &op, &policy, now) {
                Ok(d) => d,
                Err(r) => return Ok(Step::Refused(r, Some(Box::new(fresh)))),
            };
            let Some((commit, request)) = with_request(&second, &idem) else {
                return Ok(Step::Applied(Box::new(second), None));
            };
            match env.ledger.commit(commit).await {
                Ok(()) => Ok(Step::Applied(Box::new(second), request)),
                Err(again) => {
                    tracing::warn!(first = %e, again = %again, "a wallet commit failed twice");
                    Err(commit_failed(again))
                }
            }
        }
        Err(e @ (CommitError::Unavailable(_) | CommitError::Failed(_))) => Err(commit_failed(e)),
    }
}

/// An answer that writes nothing (a view, a code, a refusal) rests on the actor's copy of
/// the wallet alone, and another node, or a subsidy rule's approval (written for every
/// target at once, past the actors), may have moved the wallet on since the copy was
/// loaded. The answer stands while the stored version is still `held`, the copy's;
/// otherwise the wallet is reloaded and the operation decided again on the fresh copy
/// (and committed, should it now write something). Writes need no such check: the
/// store's version fence refuses a commit made on a stale copy (`commit_with_retry`).
async fn answer_current(
    mut call: Call,
    held: i64,
    first: Result<Decision, Refusal>,
) -> Result<Step, WalletError> {
    let env = call.env.clone();
    let stored = env
        .store
        .wallet_version(call.user)
        .await
        .map_err(|e| load_failed(&e))?;
    let (decided, fresh) = if stored == held {
        (first, None)
    } else {
        let now = env.clock.now();
        let fresh = env
            .store
            .load_wallet(call.tenant, call.user, now)
            .await
            .map_err(|e| load_failed(&e))?;
        reread_stored(&env, call.tenant, &mut call.op).await?;
        match decide(&fresh, &call.op, &call.policy, now) {
            Ok(d) if d.commit.is_some() => return commit_with_retry(call, d).await,
            again => (again, Some(Box::new(fresh))),
        }
    };
    match decided {
        Ok(d) => Ok(Step::Applied(Box::new(d), None)),
        Err(r) => Ok(Step::Refused(r, fresh)),
    }
}

impl WalletActor {
    fn remember_request(&mut self, r: MoneyRequest) {
        let key = (r.scope, r.key);
        if self
            .requests
            .insert(key.clone(), (r.request_hash, r.status, r.body))
            .is_none()
        {
            self.request_order.push_back(key);
        }
        while self.request_order.len() > RECENT_REQUESTS_MAX {
            if let Some(old) = self.request_order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    fn remember_nonce(&mut self, nonce: Vec<u8>, now: Timestamp) {
        // Codes older than their lifetime are refused as expired before reuse matters.
        let horizon = now - CODE_TTL - CODE_SKEW - CODE_SKEW;
        if self.nonces.len() > 64 {
            self.nonces.retain(|_, at| *at > horizon);
        }
        self.nonces.insert(nonce, now);
    }

    /// Asks the provider to collect each of `payments` still waiting for its deferred
    /// debit (`Wallets::ask_provider`).
    fn drive_deferred(&self, payments: Vec<Payment>) {
        if let Some(w) = self.wallets.upgrade() {
            w.ask_provider(payments);
        }
    }
}

/// Records the provider's answer for a payment with its wallet, waiting out a busy mailbox.
async fn record_deferred(
    wallets: &Weak<Wallets>,
    tenant: TenantId,
    user: UserId,
    payment_id: PaymentId,
    ok: bool,
) {
    for attempt in 0..50u64 {
        let Some(w) = wallets.upgrade() else { return };
        let op = Op::DeferredResult { payment_id, ok };
        match w.call(tenant, user, op, Policy::default(), None).await {
            Err(WalletError::Busy) => {
                tokio::time::sleep(Duration::from_millis(10 * (attempt + 1))).await
            }
            Err(e) => {
                tracing::warn!(error = %e, payment = %payment_id, "could not record a deferred debit result");
                return;
            }
            Ok(_) => return,
        }
    }
}

impl Actor for WalletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.env.mailbox);
        let (store, tenant, user, now) = (
            self.env.store.clone(),
            self.tenant,
            self.user,
            self.env.clock.now(),
        );
        // `wait`: no message is handled before the wallet is loaded.
        ctx.wait(
            async move { store.load_wallet(tenant, user, now).await }
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(snapshot) => {
                        act.drive_deferred(snapshot.open_payments.clone());
                        act.state = Some(snapshot);
                    }
                    Err(e) => act.load_error = Some(e),
                }),
        );
        ctx.run_interval(Duration::from_secs(30), |act, ctx| {
            if act.last_used.elapsed() > WALLET_IDLE || act.load_error.is_some() {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Some(w) = self.wallets.upgrade() {
            w.forget(self.user, &ctx.address());
        }
    }
}

impl Handler<Request> for WalletActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Request, ctx: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        let Request {
            tenant,
            mut op,
            policy,
            idem,
            reply,
        } = msg;
        let done = || AtomicResponse::new(Box::pin(actix::fut::ready(())));
        if tenant != self.tenant {
            reply.send(Err(WalletError::NotFound));
            return done();
        }
        let Some(state) = self.state.clone() else {
            let err = self.load_error.as_ref().map_or_else(
                || WalletError::Store("wallet not loaded".into()),
                load_failed,
            );
            reply.send(Err(err));
            ctx.stop();
            return done();
        };
        if let Some(k) = &idem {
            if let Some((hash, status, body)) = self.requests.get(&(k.scope.clone(), k.key.clone()))
            {
                let answer = if *hash == k.hash {
                    Ok(Outcome::Replay {
                        status: *status,
                        body: body.clone(),
                    })
                } else {
                    Err(WalletError::IdempotencyConflict)
                };
                reply.send(answer);
                return done();
            }
        }
        if let Op::Pay {
            code: CodeCheck::Valid { nonce, reused },
            ..
        } = &mut op
        {
            *reused = self.nonces.contains_key(nonce);
        }
        let now = self.env.clock.now();
        let held = state.wallet.version;
        let mut call = Call {
            env: self.env.clone(),
            tenant: self.tenant,
            user: self.user,
            op,
            policy,
            idem,
        };
        let fut = async move {
            // Only a refund and a top-up reversal await anything before they are decided.
            reread_stored(&call.env, call.tenant, &mut call.op).await?;
            let first = decide(&state, &call.op, &call.policy, now);
            match first {
                Ok(d) if d.commit.is_some() => commit_with_retry(call, d).await,
                first => answer_current(call, held, first).await,
            }
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |res, act, ctx| match res {
                Ok(Step::Applied(d, request)) => {
                    if let Some(commit) = &d.commit {
                        if let Some(nonce) = &commit.used_nonce {
                            act.remember_nonce(nonce.clone(), commit.at);
                        }
                        act.drive_deferred(commit.payments.clone());
                    }
                    if let Some(r) = request {
                        act.remember_request(r);
                    }
                    act.state = Some(d.state.clone());
                    reply.send(Ok(Outcome::Decided {
                        answer: d.answer,
                        body: d.body,
                        state: Box::new(d.state),
                    }));
                }
                Ok(Step::Refused(r, fresh)) => {
                    if let Some(s) = fresh {
                        act.state = Some(*s);
                    }
                    reply.send(Err(WalletError::Refused(r)));
                }
                Ok(Step::Replay { status, body }) => {
                    reply.send(Ok(Outcome::Replay { status, body }));
                }
                Err(e) => {
                    // Whether the commit landed is unknown: drop this actor so the next
                    // message reloads the wallet from the store.
                    tracing::warn!(error = %e, "wallet commit failed");
                    reply.send(Err(e));
                    ctx.stop();
                }
            },
        )))
    }
}

/// The registry of live wallet actors, sharded by user, and the way in for callers.
/// A live wallet actor and how many calls are queued at it or being handled.
#[derive(Clone)]
struct Entry {
    addr: Addr<WalletActor>,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a call in flight until it is dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Wallets {
    shards: Vec<Mutex<HashMap<UserId, Entry>>>,
    /// Payments this node is asking the provider about right now (asked once at a time).
    asking: Mutex<HashSet<PaymentId>>,
    /// `PROVIDER_CONCURRENCY` slots for provider calls.
    provider_slots: Arc<tokio::sync::Semaphore>,
    arbiters: Vec<ArbiterHandle>,
    env: Arc<Env>,
    me: Weak<Wallets>,
    hasher: std::collections::hash_map::RandomState,
}

impl Wallets {
    /// Wallet actors run on the given arbiters (a new one if none is given), sharded by
    /// user, away from the HTTP workers.
    pub fn on(env: Env, arbiters: Vec<ArbiterHandle>) -> Arc<Self> {
        let arbiters = if arbiters.is_empty() {
            vec![Arbiter::new().handle()]
        } else {
            arbiters
        };
        Arc::new_cyclic(|me| Wallets {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            asking: Mutex::new(HashSet::new()),
            provider_slots: Arc::new(tokio::sync::Semaphore::new(PROVIDER_CONCURRENCY)),
            arbiters,
            env: Arc::new(env),
            me: me.clone(),
            hasher: Default::default(),
        })
    }

    fn shard_of(&self, user: UserId) -> usize {
        (self.hasher.hash_one(user) as usize) % SHARDS
    }

    fn entry(&self, tenant: TenantId, user: UserId) -> Entry {
        let shard = self.shard_of(user);
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get(&user).filter(|e| e.addr.connected()) {
            return entry.clone();
        }
        let env = self.env.clone();
        let wallets = self.me.clone();
        let arbiter = &self.arbiters[shard % self.arbiters.len()];
        let addr = WalletActor::start_in_arbiter(arbiter, move |_| WalletActor {
            tenant,
            user,
            env,
            wallets,
            state: None,
            load_error: None,
            nonces: HashMap::new(),
            requests: HashMap::new(),
            request_order: VecDeque::new(),
            last_used: Instant::now(),
        });
        let entry = Entry {
            addr,
            in_flight: Arc::new(AtomicUsize::new(0)),
        };
        map.insert(user, entry.clone());
        entry
    }

    fn forget(&self, user: UserId, addr: &Addr<WalletActor>) {
        let mut map = self.shards[self.shard_of(user)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.get(&user).is_some_and(|e| e.addr == *addr) {
            map.remove(&user);
        }
    }

    /// Asks the provider to collect the deferred debit of each of `payments` still
    /// `accepted` that this node is not asking about already; each answer is recorded by
    /// the payment's wallet (`Op::DeferredResult`). When the provider is unavailable the
    /// payment stays `accepted`, to be asked again (`stale_deferred`). Answers how many
    /// were asked.
    pub fn ask_provider(&self, payments: Vec<Payment>) -> usize {
        let mut asked = 0;
        for p in payments {
            let Some(user) = p.user_id.filter(|_| p.status == PaymentStatus::Accepted) else {
                continue;
            };
            if !self.asking_lock().insert(p.id) {
                continue;
            }
            asked += 1;
            let (env, me, slots) = (
                self.env.clone(),
                self.me.clone(),
                self.provider_slots.clone(),
            );
            actix::spawn(async move {
                // The semaphore is never closed.
                let _slot = slots.acquire_owned().await;
                let asked = env
                    .provider
                    .deferred_debit(user, p.id, p.breakdown.deferred);
                let answer = tokio::time::timeout(env.provider_timeout, asked)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ProviderUnavailable(format!(
                            "no answer within {} ms",
                            env.provider_timeout.as_millis()
                        )))
                    });
                match answer {
                    Ok(ok) => record_deferred(&me, p.tenant_id, user, p.id, ok).await,
                    Err(e) => {
                        tracing::warn!(error = %e, payment = %p.id, "deferred debit not answered; asked again later")
                    }
                }
                if let Some(w) = me.upgrade() {
                    w.asking_lock().remove(&p.id);
                }
            });
        }
        asked
    }

    fn asking_lock(&self) -> std::sync::MutexGuard<'_, HashSet<PaymentId>> {
        self.asking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live wallet actors.
    pub fn live(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Sends one operation to the user's wallet and waits for its answer. A full mailbox
    /// is `Busy` at once (never a hang).
    pub async fn call(
        &self,
        tenant: TenantId,
        user: UserId,
        op: Op,
        policy: Policy,
        idem: Option<IdemKey>,
    ) -> Result<Outcome, WalletError> {
        let (tx, rx) = oneshot::channel();
        let mut msg = Request {
            tenant,
            op,
            policy,
            idem,
            reply: Reply {
                tx,
                home: Home::here(),
                counted: None,
            },
        };
        for _ in 0..2 {
            let entry = self.entry(tenant, user);
            // actix bounds each sender clone on its own, so the mailbox bound is kept
            // here, per wallet, over every caller.
            if entry.in_flight.fetch_add(1, Ordering::AcqRel) >= self.env.mailbox {
                entry.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(WalletError::Busy);
            }
            msg.reply.counted = Some(InFlight(entry.in_flight.clone()));
            match entry.addr.try_send(msg) {
                Ok(()) => {
                    return rx.await.unwrap_or_else(|_| {
                        Err(WalletError::Unavailable("wallet actor stopped".into()))
                    })
                }
                Err(SendError::Full(_)) => return Err(WalletError::Busy),
                Err(SendError::Closed(back)) => {
                    // Its count at the stopped actor goes when the next try counts anew.
                    self.forget(user, &entry.addr);
                    msg = back;
                }
            }
        }
        Err(WalletError::Busy)
    }
}
