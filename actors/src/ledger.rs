//! The ledger writer: group commit. Wallet actors hand it their commits; it takes every
//! commit waiting (up to `LEDGER_BATCH_MAX`), writes them in one transaction, and answers
//! each waiter once the transaction is durable. Under load batches grow by themselves (new
//! commits queue while `LEDGER_PIPELINE` batches are being written); at rest a commit is
//! written at once, so batching never adds latency.

use std::sync::Arc;
use std::thread::ThreadId;

use actix::ArbiterHandle;
use onecard_schema::wallet::{CommitError, PendingEvent, WalletCommit};
use onecard_schema::Store;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::realtime::Relay;

/// Commits in one transaction, at most.
pub const LEDGER_BATCH_MAX: usize = 512;
/// Commits waiting for the writer before wallet actors wait.
pub const LEDGER_QUEUE_MAX: usize = 8192;
/// Batches being written at once. A wallet never has two commits in flight (its actor
/// waits for each), so batches in flight never touch the same wallet; a second batch lets
/// the store start the next transaction the moment one commits, instead of after a
/// round trip through this task.
pub const LEDGER_PIPELINE: usize = 2;

type Reply = oneshot::Sender<Result<(), CommitError>>;
/// Where a waiter runs: its arbiter and that arbiter's thread.
type Home = Option<(ThreadId, ArbiterHandle)>;

struct Job {
    commit: WalletCommit,
    reply: Reply,
    /// The arbiter the waiter runs on, if any (wallet actors do), and its thread.
    home: Home,
}

#[derive(Clone)]
pub struct LedgerHandle {
    tx: mpsc::Sender<Job>,
}

impl LedgerHandle {
    /// Starts the writer on the current tokio runtime. Events of applied commits go to
    /// the relay once they are durable.
    pub fn spawn(store: Arc<dyn Store>, relay: Relay) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(LEDGER_QUEUE_MAX);
        let inflight = Arc::new(Semaphore::new(LEDGER_PIPELINE));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a free slot first: whatever queues meanwhile joins this batch.
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    return;
                };
                let mut batch: Vec<Job> = Vec::with_capacity(LEDGER_BATCH_MAX);
                batch.push(first);
                while batch.len() < LEDGER_BATCH_MAX {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (store, relay) = (store.clone(), relay.clone());
                tokio::spawn(async move {
                    let (commits, waiters): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .map(|j| (j.commit, (j.reply, j.home)))
                        .unzip();
                    metrics_batch(commits.len());
                    let events: Vec<Vec<PendingEvent>> =
                        commits.iter().map(pending_events).collect();
                    let started = std::time::Instant::now();
                    let results = store.commit_wallets(commits).await;
                    COMMIT_MICROS.fetch_add(
                        started.elapsed().as_micros() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    drop(permit);
                    let mut durable = Vec::new();
                    let mut answers = Answers::default();
                    for ((waiter, result), events) in waiters.into_iter().zip(results).zip(events) {
                        if result.is_ok() {
                            durable.extend(events);
                        }
                        answers.add(waiter, result);
                    }
                    answers.send();
                    relay.submit(durable);
                });
            }
        });
        LedgerHandle { tx }
    }

    /// Returns once the commit is durable (or refused).
    pub async fn commit(&self, commit: WalletCommit) -> Result<(), CommitError> {
        let (reply, rx) = oneshot::channel();
        let home = actix::Arbiter::try_current().map(|a| (std::thread::current().id(), a));
        self.tx
            .send(Job {
                commit,
                reply,
                home,
            })
            .await
            .map_err(|_| CommitError::Failed("ledger writer stopped".into()))?;
        rx.await
            .map_err(|_| CommitError::Failed("ledger writer dropped a commit".into()))?
    }
}

/// A batch's answers, grouped by the arbiter their waiters run on. Answering a waiter on
/// another thread wakes that thread, a system call each; one message per arbiter that
/// answers its waiters there wakes each thread once per batch instead of once per commit.
#[derive(Default)]
struct Answers {
    direct: Vec<Answer>,
    homes: Vec<(ThreadId, ArbiterHandle, Vec<Answer>)>,
}

type Answer = (Reply, Result<(), CommitError>);

impl Answers {
    fn add(&mut self, (reply, home): (Reply, Home), result: Result<(), CommitError>) {
        let Some((thread, arbiter)) = home else {
            self.direct.push((reply, result));
            return;
        };
        match self.homes.iter_mut().find(|(t, _, _)| *t == thread) {
            Some((_, _, group)) => group.push((reply, result)),
            None => self.homes.push((thread, arbiter, vec![(reply, result)])),
        }
    }

    fn send(self) {
        // A waiter that went away (its request was cancelled) needs no answer, and an
        // arbiter that stopped has no waiters left.
        for (reply, result) in self.direct {
            let _ = reply.send(result);
        }
        for (_, arbiter, group) in self.homes {
            arbiter.spawn(async move {
                for (reply, result) in group {
                    let _ = reply.send(result);
                }
            });
        }
    }
}

fn pending_events(c: &WalletCommit) -> Vec<PendingEvent> {
    c.outbox
        .iter()
        .map(|e| PendingEvent {
            tenant_id: c.wallet.tenant_id,
            event: e.clone(),
            created_at: c.at,
        })
        .collect()
}

fn metrics_batch(size: usize) {
    tracing::trace!(size, "group commit");
    BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    COMMITS.fetch_add(size as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Batches and commits written so far (exported as metrics by the edge).
pub static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Time spent writing batches, in microseconds: over `BATCHES`, the mean time a batch
/// takes from its first statement to its durable commit.
pub static COMMIT_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
