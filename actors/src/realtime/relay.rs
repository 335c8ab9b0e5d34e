//! The outbox relay. Writers hand it the events they have just made durable (`submit`,
//! after the commit, never before); it publishes them to the topic log and then deletes
//! them from the outbox. A sweep every second publishes whatever is still in the outbox a
//! few seconds after it was written: events a crashed node never relayed, or ones the log
//! refused while Redis was away. At start-up it sweeps everything. Publishing twice is
//! harmless (the log drops an event id it has seen), so the relays of several nodes may
//! sweep the same rows.
//!
//! Once the log has an event, the relay hands it to its sink (the open platform's
//! webhooks, which store a delivery for each app that wants it) before the outbox forgets
//! it: a sink that fails leaves the event in the outbox, and the sweep hands it over
//! again (the sink, like the log, takes an event it already has as done).
//!
//! Each topic's events are published in the order they were committed, outages included:
//! once a publish fails (or the relay's queue overflows), fresh events are left to the
//! outbox too, and the relay goes back to publishing them as they come only after a sweep
//! of the whole outbox has published everything in it, oldest first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use onecard_schema::ids::EventId;
use onecard_schema::wallet::PendingEvent;
use onecard_schema::Store;
use tokio::sync::mpsc;

use super::{EventSink, TopicLog};
use crate::clock::Clock;

/// Fresh events waiting for the relay before it leaves them to the sweep.
const QUEUE_MAX: usize = 1 << 16;
/// Events per publish call.
const BATCH_MAX: usize = 4096;
/// Outbox pages read per sweep query.
const SWEEP_PAGE: usize = 500;
/// Relayed outbox pages deleted per statement, at most.
const DELETE_MAX: usize = 8192;

/// Events published by this node's relay, and events its sweep found left behind.
pub static RELAYED: AtomicU64 = AtomicU64::new(0);
pub static SWEPT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
pub struct Relay {
    tx: mpsc::Sender<Vec<PendingEvent>>,
    /// Some events wait in the outbox: until a sweep has published them, newer ones wait
    /// there too.
    behind: Arc<AtomicBool>,
}

/// How often the sweep runs and how old a row must be before it takes it.
#[derive(Clone, Copy, Debug)]
pub struct SweepTiming {
    pub every: Duration,
    pub stale_after: Duration,
}

impl Default for SweepTiming {
    fn default() -> Self {
        SweepTiming {
            every: Duration::from_secs(1),
            stale_after: Duration::from_secs(3),
        }
    }
}

impl Relay {
    /// Starts the relay (and its outbox cleaner) on the current tokio runtime.
    pub fn spawn(
        store: Arc<dyn Store>,
        log: Arc<dyn TopicLog>,
        sink: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        timing: SweepTiming,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let behind = Arc::new(AtomicBool::new(false));
        tokio::spawn(clean(store.clone(), done_rx));
        let ends = Ends {
            store,
            log,
            sink,
            done: done_tx,
            behind: behind.clone(),
        };
        tokio::spawn(run(ends, clock, timing, rx));
        Relay { tx, behind }
    }

    /// Events that are durable now. Never blocks: when the relay is far behind, the
    /// events wait in the outbox for the sweep instead (and so do the ones after them).
    pub fn submit(&self, events: Vec<PendingEvent>) {
        if events.is_empty() {
            return;
        }
        if self.tx.try_send(events).is_err() {
            self.behind.store(true, Ordering::SeqCst);
            tracing::warn!("relay queue full: events wait for the outbox sweep");
        }
    }
}

/// What the relay reads from and publishes to.
struct Ends {
    store: Arc<dyn Store>,
    log: Arc<dyn TopicLog>,
    sink: Arc<dyn EventSink>,
    /// Published outbox pages, for the cleaner to delete.
    done: mpsc::UnboundedSender<Vec<EventId>>,
    behind: Arc<AtomicBool>,
}

impl Ends {
    /// Publishes fresh events, unless older ones wait in the outbox: then they are left
    /// there for the sweep, which publishes them after those.
    async fn fresh(&self, batch: &[PendingEvent]) {
        if self.behind.load(Ordering::SeqCst) {
            return;
        }
        if publish(&*self.log, &*self.sink, batch, &self.done).await {
            RELAYED.fetch_add(batch.len() as u64, Ordering::Relaxed);
        } else {
            self.behind.store(true, Ordering::SeqCst);
        }
    }

    /// The sweep: every row when the relay is behind (it is caught up once they are
    /// published), otherwise the rows written before `stale`.
    async fn sweep(&self, stale: Option<jiff::Timestamp>) {
        let caught_up = if self.behind.swap(false, Ordering::SeqCst) {
            sweep(self, None).await
        } else {
            sweep(self, stale).await
        };
        if !caught_up {
            self.behind.store(true, Ordering::SeqCst);
        }
    }
}

async fn run(
    ends: Ends,
    clock: Arc<dyn Clock>,
    timing: SweepTiming,
    mut rx: mpsc::Receiver<Vec<PendingEvent>>,
) {
    ends.behind.store(true, Ordering::SeqCst);
    ends.sweep(None).await;
    let mut tick = tokio::time::interval(timing.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = rx.recv() => {
                let Some(mut batch) = got else { return };
                while batch.len() < BATCH_MAX {
                    match rx.try_recv() {
                        Ok(more) => batch.extend(more),
                        Err(_) => break,
                    }
                }
                ends.fresh(&batch).await;
            }
            _ = tick.tick() => {
                let stale = jiff::SignedDuration::try_from(timing.stale_after).unwrap_or_default();
                ends.sweep(clock.now().checked_sub(stale).ok()).await;
            }
        }
    }
}

/// Publishes, hands the events to the sink, then queues the ids for deletion. False when
/// the log or the sink refused (the rows stay in the outbox for the next sweep).
async fn publish(
    log: &dyn TopicLog,
    sink: &dyn EventSink,
    batch: &[PendingEvent],
    done: &mpsc::UnboundedSender<Vec<EventId>>,
) -> bool {
    let handed = match log.publish(batch).await {
        Ok(()) => sink.take(batch).await,
        Err(e) => Err(e),
    };
    match handed {
        Ok(()) => {
            // A page's events come together (the relay never splits a submitted batch
            // or a swept page), so the page goes once all of them are published.
            let mut keys: Vec<EventId> = batch.iter().map(|p| p.outbox_key).collect();
            keys.dedup();
            let _ = done.send(keys);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, events = batch.len(), "relay could not publish; the sweep retries");
            false
        }
    }
}

/// Publishes the outbox's rows written before `before` (all of them for `None`), oldest
/// first; answers whether it published every row it found.
async fn sweep(ends: &Ends, before: Option<jiff::Timestamp>) -> bool {
    let store = &*ends.store;
    loop {
        let rows = match store.pending_outbox(before, SWEEP_PAGE).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "outbox sweep could not read");
                return false;
            }
        };
        if rows.is_empty() {
            return true;
        }
        let chunks = whole_pages(&rows, BATCH_MAX);
        let full = chunks.iter().map(|c| c.pages).sum::<usize>() == SWEEP_PAGE;
        for chunk in chunks {
            if !publish(&*ends.log, &*ends.sink, chunk.events, &ends.done).await {
                return false;
            }
        }
        SWEPT.fetch_add(rows.len() as u64, Ordering::Relaxed);
        tracing::info!(
            events = rows.len(),
            "outbox sweep published events left behind"
        );
        if !full {
            return true;
        }
        // The next page: these rows are published but maybe not deleted yet, and the log
        // would drop them anyway; wait for the cleaner so the page moves on.
        tokio::time::sleep(Duration::from_millis(50) + store.outbox_delete_gather()).await;
    }
}

/// Consecutive events of whole outbox pages, and how many pages they are.
struct Chunk<'a> {
    events: &'a [PendingEvent],
    pages: usize,
}

/// `events` (whole pages, each page's events together) cut at page boundaries into chunks
/// of at most `max` events, so that one publish call stays as large as the relay's own
/// (a page of more than `max` events goes alone).
fn whole_pages(events: &[PendingEvent], max: usize) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let (mut start, mut end, mut pages) = (0, 0, 0);
    for page in events.chunk_by(|a, b| a.outbox_key == b.outbox_key) {
        if pages > 0 && end + page.len() - start > max {
            chunks.push(Chunk {
                events: &events[start..end],
                pages,
            });
            (start, pages) = (end, 0);
        }
        pages += 1;
        end += page.len();
    }
    if pages > 0 {
        chunks.push(Chunk {
            events: &events[start..end],
            pages,
        });
    }
    chunks
}

/// Deletes published events from the outbox, many per statement.
async fn clean(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Vec<EventId>>) {
    let wait = store.outbox_delete_gather();
    while let Some(ids) = gather(&mut rx, wait, DELETE_MAX).await {
        if let Err(e) = store.delete_outbox(ids).await {
            // Left in the outbox: the sweep republishes them and the log drops them.
            tracing::warn!(error = %e, "could not delete relayed outbox events");
        }
    }
}

/// The next items to write (here, ids to delete): the first to arrive, what is already
/// waiting, and what arrives within `wait` after the first, up to about `max`. None once
/// the channel is closed and empty.
pub async fn gather<T>(
    rx: &mut mpsc::UnboundedReceiver<Vec<T>>,
    wait: Duration,
    max: usize,
) -> Option<Vec<T>> {
    let mut items = rx.recv().await?;
    let until = tokio::time::Instant::now() + wait;
    while items.len() < max {
        match rx.try_recv() {
            Ok(more) => items.extend(more),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(more)) => items.extend(more),
                    // Closed, or gathered long enough.
                    _ => break,
                }
            }
        }
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(key: EventId, n: usize) -> Vec<PendingEvent> {
        (0..n)
            .map(|_| PendingEvent {
                tenant_id: onecard_schema::ids::TenantId::new(),
                event: onecard_schema::wallet::OutboxEvent {
                    id: EventId::new(),
                    topics: vec!["tenant".into()],
                    kind: "test".into(),
                    payload: onecard_schema::wallet::Payload::of(&1),
                },
                created_at: jiff::Timestamp::now(),
                outbox_key: key,
            })
            .collect()
    }

    #[test]
    fn a_sweep_publishes_whole_pages_in_chunks_of_at_most_the_batch() {
        let (a, b, c, d) = (
            EventId::new(),
            EventId::new(),
            EventId::new(),
            EventId::new(),
        );
        let events: Vec<PendingEvent> = [page(a, 3), page(b, 2), page(c, 6), page(d, 1)].concat();
        let cut: Vec<(Vec<EventId>, usize)> = whole_pages(&events, 5)
            .iter()
            .map(|c| (c.events.iter().map(|e| e.outbox_key).collect(), c.pages))
            .collect();
        assert_eq!(
            cut,
            vec![
                (vec![a, a, a, b, b], 2),
                // Larger than the batch on its own: it goes alone, not split.
                (vec![c; 6], 1),
                (vec![d], 1),
            ]
        );
        assert!(whole_pages(&[], 5).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ids_arriving_within_the_wait_are_deleted_together() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(vec![1, 2]).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            late.send(vec![3]).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            late.send(vec![4]).unwrap();
        });
        let wait = Duration::from_millis(200);
        assert_eq!(gather(&mut rx, wait, 100).await, Some(vec![1, 2, 3]));
        assert_eq!(gather(&mut rx, wait, 100).await, Some(vec![4]));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_only_what_is_waiting_goes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(vec![1]).unwrap();
        tx.send(vec![2]).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.send(vec![3]).unwrap();
        });
        assert_eq!(gather(&mut rx, Duration::ZERO, 100).await, Some(vec![1, 2]));
        assert_eq!(gather(&mut rx, Duration::ZERO, 100).await, Some(vec![3]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_statement_goes_at_once_and_a_closed_channel_flushes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(vec![1, 2]).unwrap();
        tx.send(vec![3, 4]).unwrap();
        tx.send(vec![5]).unwrap();
        let wait = Duration::from_secs(60);
        let started = tokio::time::Instant::now();
        assert_eq!(gather(&mut rx, wait, 4).await, Some(vec![1, 2, 3, 4]));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a full batch does not wait"
        );
        drop(tx);
        assert_eq!(gather(&mut rx, wait, 4).await, Some(vec![5]));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a closed channel does not wait"
        );
        assert_eq!(gather(&mut rx, wait, 4).await, None);
    }
}
