//! The ledger writer: group commit. Wallet actors hand it their commits; it takes every
//! commit waiting (up to `LEDGER_BATCH_MAX`), writes them in one transaction, and answers
//! each waiter once the transaction is durable. Under load batches grow by themselves (new
//! commits queue while `LEDGER_PIPELINE` batches are being written); at rest a commit is
//! written at once, so batching never adds latency.

use std::sync::Arc;

use onecard_schema::wallet::{CommitError, PendingEvent, WalletCommit};
use onecard_schema::Store;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::realtime::Relay;
use crate::wake::{self, Home};

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

struct Job {
    commit: WalletCommit,
    reply: Reply,
    /// Where the waiter runs (a wallet actor's thread): answered there in one message
    /// per batch (`wake`).
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
                    for (((reply, home), result), events) in
                        waiters.into_iter().zip(results).zip(events)
                    {
                        if result.is_ok() {
                            durable.extend(events);
                        }
                        // A waiter that went away (its request was cancelled) needs no answer.
                        wake::answer(&home, move || {
                            let _ = reply.send(result);
                        });
                    }
                    // The store wrote the applied commits' events as one outbox page,
                    // keyed by its first event.
                    if let Some(key) = durable.first().map(|e| e.event.id) {
                        for e in &mut durable {
                            e.outbox_key = key;
                        }
                    }
                    relay.submit(durable);
                });
            }
        });
        LedgerHandle { tx }
    }

    /// Returns once the commit is durable (or refused).
    pub async fn commit(&self, commit: WalletCommit) -> Result<(), CommitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                commit,
                reply,
                home: Home::here(),
            })
            .await
            .map_err(|_| CommitError::Failed("ledger writer stopped".into()))?;
        rx.await
            .map_err(|_| CommitError::Failed("ledger writer dropped a commit".into()))?
    }
}

fn pending_events(c: &WalletCommit) -> Vec<PendingEvent> {
    c.outbox
        .iter()
        .map(|e| PendingEvent {
            tenant_id: c.wallet.tenant_id,
            event: e.clone(),
            created_at: c.at,
            // Set once the batch is written (the key of the page the store wrote).
            outbox_key: e.id,
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
