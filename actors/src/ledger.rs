//! The ledger writer: group commit. Wallet actors hand it their commits; it takes every
//! commit waiting (up to `LEDGER_BATCH_MAX`), writes them in one transaction, and answers
//! each waiter once the transaction is durable. Under load batches grow by themselves (new
//! commits queue while `LEDGER_PIPELINE` batches are being written); at rest a commit is
//! written at once, so batching never adds latency. While a batch is being written, the
//! next one goes early only once it holds `LEDGER_BATCH_FILL` commits.

use std::sync::Arc;

use onecard_schema::wallet::{CommitError, OutboxPage, PendingEvent, WalletCommit};
use onecard_schema::Store;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::realtime::Relay;
use crate::wake::{self, Home};

/// Commits in one transaction, at most.
pub const LEDGER_BATCH_MAX: usize = 512;
/// Commits waiting for the writer before wallet actors wait.
pub const LEDGER_QUEUE_MAX: usize = 8192;
/// Batches being written at once. A wallet never has two commits in flight (its actor
/// waits for each), so batches in flight never touch the same wallet; a second batch lets
/// the store start the next transaction while one commits, once it is worth it
/// (`LEDGER_BATCH_FILL`).
pub const LEDGER_PIPELINE: usize = 2;
/// While another batch is being written, a batch waits until it holds this many commits
/// or that batch is durable, whichever comes first. Without it the second slot halved the
/// batches under load (64 tills: ~15 commits each instead of ~27), and the store spent
/// more per commit: PostgreSQL's CPU per payment was 9–33 % higher in six of seven pairs
/// (docs/BENCHMARKS.md, twenty-first run).
pub const LEDGER_BATCH_FILL: usize = 32;

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
        // Told each time a batch is durable.
        let written = Arc::new(Notify::new());
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a free slot first: whatever queues meanwhile joins this batch.
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    return;
                };
                // Holding a slot, another batch is being written while fewer than
                // `LEDGER_PIPELINE - 1` slots are free.
                let others_writing = || inflight.available_permits() < LEDGER_PIPELINE - 1;
                let batch = gather(&mut rx, first, others_writing, &written).await;
                let (store, relay, written) = (store.clone(), relay.clone(), written.clone());
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
                    written.notify_waiters();
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
                    // The store wrote the applied commits' events as one outbox page.
                    OutboxPage::key_events(&mut durable);
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
            .map_err(|_| CommitError::Unavailable("ledger writer stopped".into()))?;
        // The writer stops when the node does; a commit it dropped may have applied.
        rx.await
            .map_err(|_| CommitError::Unavailable("ledger writer dropped a commit".into()))?
    }
}

/// A batch: `first` and every commit already waiting, up to `LEDGER_BATCH_MAX`. While
/// `others_writing`, it also waits for more, until it holds `LEDGER_BATCH_FILL` or
/// `written` says a batch is durable (the store is then free for this one).
async fn gather<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    others_writing: impl Fn() -> bool,
    written: &Notify,
) -> Vec<T> {
    let mut batch = Vec::with_capacity(LEDGER_BATCH_MAX);
    batch.push(first);
    while batch.len() < LEDGER_BATCH_MAX {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    while batch.len() < LEDGER_BATCH_FILL {
        // Registered before the check, so a batch that becomes durable in between is
        // not missed.
        let durable = written.notified();
        tokio::pin!(durable);
        durable.as_mut().enable();
        if !others_writing() {
            break;
        }
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => batch.push(job),
                None => break,
            },
            () = &mut durable => break,
        }
    }
    batch
}

fn pending_events(c: &WalletCommit) -> Vec<PendingEvent> {
    c.outbox
        .iter()
        .map(|e| PendingEvent {
            tenant_id: c.wallet.tenant_id,
            event: e.clone(),
            created_at: c.at,
            // Set once the batch is written (`OutboxPage::key_events`).
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    fn queue(items: std::ops::Range<usize>) -> (mpsc::Sender<usize>, mpsc::Receiver<usize>) {
        let (tx, rx) = mpsc::channel(LEDGER_QUEUE_MAX);
        for i in items {
            tx.try_send(i).expect("room in the queue");
        }
        (tx, rx)
    }

    #[tokio::test]
    async fn at_rest_a_batch_takes_what_waits_and_goes_at_once() {
        let (_tx, mut rx) = queue(1..4);
        let batch = gather(&mut rx, 0, || false, &Notify::new()).await;
        assert_eq!(batch, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_batch_takes_at_most_the_batch_max() {
        let (_tx, mut rx) = queue(1..LEDGER_BATCH_MAX + 10);
        let batch = gather(&mut rx, 0, || true, &Notify::new()).await;
        assert_eq!(batch, (0..LEDGER_BATCH_MAX).collect::<Vec<_>>());
        assert_eq!(rx.try_recv().ok(), Some(LEDGER_BATCH_MAX));
    }

    #[tokio::test]
    async fn while_another_batch_is_written_a_batch_waits_to_fill() {
        let (tx, mut rx) = queue(1..3);
        let written = Notify::new();
        let late = tokio::spawn(async move {
            for i in 3..LEDGER_BATCH_FILL + 5 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if tx.send(i).await.is_err() {
                    return;
                }
            }
        });
        let batch = gather(&mut rx, 0, || true, &written).await;
        assert_eq!(batch, (0..LEDGER_BATCH_FILL).collect::<Vec<_>>());
        late.abort();
    }

    #[tokio::test]
    async fn a_waiting_batch_goes_once_the_other_is_durable() {
        let (_tx, mut rx) = queue(1..3);
        let written = Arc::new(Notify::new());
        let writing = Arc::new(AtomicBool::new(true));
        let (w, busy) = (written.clone(), writing.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            busy.store(false, Ordering::SeqCst);
            w.notify_waiters();
        });
        let batch = tokio::time::timeout(
            Duration::from_secs(5),
            gather(&mut rx, 0, || writing.load(Ordering::SeqCst), &written),
        )
        .await
        .expect("the batch goes once the other is durable");
        assert_eq!(batch, vec![0, 1, 2]);
        assert!(
            !writing.load(Ordering::SeqCst),
            "it went before the other batch was durable"
        );
    }
}
