//! Answering tasks that wait on other threads, in batches. Completing a waiter that runs
//! on another thread wakes that thread: a system call, and often a context switch. A
//! thread that answers many waiters in one go (the ledger writer after a batch, a wallet
//! thread after the batch's answers) gathers its answers per home thread and, once its
//! current task yields, sends each home one message that completes its waiters there,
//! where waking them is a local queue push.

use std::cell::RefCell;
use std::thread::ThreadId;

use actix::{Arbiter, ArbiterHandle};

type Deferred = Box<dyn FnOnce() + Send>;

thread_local! {
    static PENDING: RefCell<Vec<(ThreadId, ArbiterHandle, Vec<Deferred>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Where a waiter runs: its arbiter and that arbiter's thread (none off actix).
#[derive(Clone, Default)]
pub struct Home(Option<(ThreadId, ArbiterHandle)>);

impl Home {
    /// The calling task's home.
    pub fn here() -> Self {
        Home(Arbiter::try_current().map(|a| (std::thread::current().id(), a)))
    }
}

/// Runs `answer`, which completes a waiter at `home`, on `home`'s thread: at once when
/// that is this thread or there is no home, otherwise with the other answers this thread
/// makes before its current task yields.
pub fn answer(home: &Home, answer: impl FnOnce() + Send + 'static) {
    let Some((thread, arbiter)) = &home.0 else {
        return answer();
    };
    let here = std::thread::current().id();
    if *thread == here {
        return answer();
    }
    if Arbiter::try_current().is_none() {
        // No local task set here to flush from later: one message now.
        arbiter.spawn(async move { answer() });
        return;
    }
    let first = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let first = p.is_empty();
        match p.iter_mut().find(|(t, _, _)| t == thread) {
            Some((_, _, group)) => group.push(Box::new(answer)),
            None => p.push((*thread, arbiter.clone(), vec![Box::new(answer)])),
        }
        first
    });
    if first {
        // Queued behind the tasks already woken on this thread, so their answers join.
        // A runtime task, not a local one: the caller may itself be a runtime task, where
        // there is no local set to spawn on.
        tokio::spawn(async { flush() });
    }
}

fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (_, arbiter, group) in pending {
        // An arbiter that stopped has no waiters left to answer.
        arbiter.spawn(async move {
            for answer in group {
                answer();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// The home of a task on a new arbiter, and that arbiter's thread.
    async fn home_on(arbiter: &Arbiter) -> (Home, ThreadId) {
        let (tx, rx) = oneshot::channel();
        arbiter.spawn(async move {
            let _ = tx.send((Home::here(), std::thread::current().id()));
        });
        rx.await.expect("the arbiter runs")
    }

    async fn answered(
        rx: &mut mpsc::UnboundedReceiver<(usize, ThreadId)>,
        n: usize,
    ) -> Vec<(usize, ThreadId)> {
        let mut got = Vec::new();
        while got.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            got.push(next.expect("every answer arrives").expect("sender alive"));
        }
        got
    }

    #[test]
    fn answers_run_in_order_on_the_home_thread_from_a_local_or_a_runtime_task() {
        actix::System::new().block_on(async {
            let (home_arbiter, other) = (Arbiter::new(), Arbiter::new());
            let (home, home_thread) = home_on(&home_arbiter).await;
            let (_, other_thread) = home_on(&other).await;
            assert_ne!(home_thread, other_thread);
            let (tx, mut rx) = mpsc::unbounded_channel();
            // From a local task (as a wallet actor answers) and from a runtime task (as
            // the ledger writer's batch task does): the latter once hung, as a local
            // flush task cannot be spawned from there.
            for runtime_task in [false, true] {
                let (home, tx) = (home.clone(), tx.clone());
                let send_all = move || {
                    for i in 0..10 {
                        let tx = tx.clone();
                        answer(&home, move || {
                            let _ = tx.send((i, std::thread::current().id()));
                        });
                    }
                };
                other.spawn(async move {
                    if runtime_task {
                        tokio::spawn(async move { send_all() });
                    } else {
                        send_all();
                    }
                });
                let got = answered(&mut rx, 10).await;
                assert_eq!(
                    got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                    (0..10).collect::<Vec<_>>()
                );
                assert!(
                    got.iter().all(|(_, t)| *t == home_thread),
                    "answered on the home thread"
                );
            }
            home_arbiter.stop();
            other.stop();
        });
    }

    #[test]
    fn an_answer_without_a_home_or_from_outside_actix_runs_at_once_or_still_arrives() {
        // No home: at once, here.
        let (tx, rx) = std::sync::mpsc::channel();
        answer(&Home::default(), move || {
            tx.send(std::thread::current().id()).unwrap()
        });
        assert_eq!(rx.try_recv().ok(), Some(std::thread::current().id()));
        // A home, answered from a plain thread (no arbiter there): sent at once.
        actix::System::new().block_on(async {
            let home_arbiter = Arbiter::new();
            let (home, home_thread) = home_on(&home_arbiter).await;
            let (tx, mut rx) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                answer(&home, move || {
                    let _ = tx.send((0, std::thread::current().id()));
                })
            });
            assert_eq!(answered(&mut rx, 1).await, vec![(0, home_thread)]);
            home_arbiter.stop();
        });
    }
}
