//! The reconcile loop: takes due keys from the [`Queue`], runs
//! `reconcile(key)` for each (one at a time per key, up to
//! `Config::concurrency` keys at once), and queues the key again as its
//! [`Action`] or, on error, the error policy (jittered exponential backoff
//! per key, reset by the next success) says.

use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::queue::{Next, Queue};
use crate::{Backoff, Stats, StatsSnapshot};

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Converged: run again only when a trigger enqueues the key.
    Done,
    /// Run again after this long (a probe, a timer, a restart delay).
    RequeueAfter(Duration),
}

impl Action {
    /// Converged.
    pub fn done() -> Action {
        Action::Done
    }

    /// Run again after `d`.
    pub fn requeue(d: Duration) -> Action {
        Action::RequeueAfter(d)
    }
}

/// How a controller runs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Keys reconciled at once at most.
    pub concurrency: usize,
    /// Delays after consecutive errors of one key.
    pub error_backoff: Backoff,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: 32,
            error_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(60)),
        }
    }
}

struct Shared<K> {
    name: &'static str,
    queue: Mutex<Queue<K>>,
    /// Consecutive errors per key.
    failures: Mutex<HashMap<K, u32>>,
    wake: Notify,
    stats: Stats,
}

/// A controller over keys `K`; clones share the queue, so triggers hold a
/// clone and call [`Controller::enqueue`].
pub struct Controller<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Controller<K> {
    fn clone(&self) -> Self {
        Controller {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> Debug for Controller<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K> Controller<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    /// A controller named `name` (in logs and metrics) with an empty queue.
    pub fn new(name: &'static str) -> Controller<K> {
        Controller {
            shared: Arc::new(Shared {
                name,
                queue: Mutex::new(Queue::default()),
                failures: Mutex::default(),
                wake: Notify::new(),
                stats: Stats::default(),
            }),
        }
    }

    /// The controller's name.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// Reconciles `key` as soon as possible (once, however often it is called).
    pub fn enqueue(&self, key: K) {
        self.enqueue_at(key, Instant::now());
    }

    /// Reconciles `key` after `delay` (or earlier if something else asks).
    pub fn enqueue_after(&self, key: K, delay: Duration) {
        self.enqueue_at(key, Instant::now() + delay);
    }

    /// Reconciles every key of `keys` as soon as possible.
    pub fn enqueue_all(&self, keys: impl IntoIterator<Item = K>) {
        let now = Instant::now();
        let mut q = lock(&self.shared.queue);
        for k in keys {
            q.push(k, now);
        }
        drop(q);
        self.shared.wake.notify_one();
    }

    fn enqueue_at(&self, key: K, when: Instant) {
        lock(&self.shared.queue).push(key, when);
        self.shared.wake.notify_one();
    }

    /// Whether `key` is queued or being reconciled.
    pub fn is_pending(&self, key: &K) -> bool {
        lock(&self.shared.queue).contains(key)
    }

    /// Consecutive errors of `key` so far.
    pub fn failures(&self, key: &K) -> u32 {
        lock(&self.shared.failures).get(key).copied().unwrap_or(0)
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        let snap = self.shared.stats.snapshot();
        let q = lock(&self.shared.queue);
        StatsSnapshot {
            queued: q.len() as u64,
            running: q.running() as u64,
            ..snap
        }
    }

    /// Runs reconciles until `shutdown`; reconciles still running then are
    /// dropped (each must be safe to stop at any await, as the next run
    /// converges from whatever it left).
    pub async fn run<R, F, E>(&self, cfg: Config, reconcile: R, shutdown: CancellationToken)
    where
        R: Fn(K) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let Some(key) = self.next_key(&shutdown).await else {
                break;
            };
            let this = self.clone();
            let reconcile = Arc::clone(&reconcile);
            let span = tracing::info_span!("reconcile", controller = self.shared.name, key = ?key);
            tasks.spawn(
                async move {
                    let started = Instant::now();
                    // Its own task, so a panic is an error of this key, not the loop's.
                    let result = tokio::spawn(reconcile(key.clone()).in_current_span()).await;
                    let outcome = match result {
                        Ok(Ok(action)) => Ok(action),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(format!("reconcile panicked: {e}")),
                    };
                    this.finish(&key, outcome, started.elapsed(), cfg.error_backoff);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// Waits for the next due key; `None` on shutdown.
    async fn next_key(&self, shutdown: &CancellationToken) -> Option<K> {
        loop {
            let next = {
                let mut q = lock(&self.shared.queue);
                let next = q.pop(Instant::now());
                self.shared.stats.set_depth(q.len(), q.running());
                next
            };
            match next {
                Next::Key(k) => return Some(k),
                Next::At(t) => tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(t) => {}
                },
                Next::Empty => tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = self.shared.wake.notified() => {}
                },
            }
        }
    }

    /// Applies a reconcile's outcome: the error policy, the requeue, the stats.
    fn finish(&self, key: &K, outcome: Result<Action, String>, took: Duration, backoff: Backoff) {
        let now = Instant::now();
        let (requeue, ok) = match outcome {
            Ok(action) => {
                lock(&self.shared.failures).remove(key);
                debug!(?action, took_ms = took.as_millis() as u64, "reconciled");
                match action {
                    Action::Done => (None, true),
                    Action::RequeueAfter(d) => (Some(now + d), true),
                }
            }
            Err(error) => {
                let attempt = {
                    let mut f = lock(&self.shared.failures);
                    let n = f.entry(key.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                let delay = backoff.delay(attempt - 1);
                warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
                (Some(now + delay), false)
            }
        };
        self.shared.stats.record(ok, requeue.is_some(), took);
        lock(&self.shared.queue).done(key, requeue);
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    fn spawn_run<R, F>(ctl: &Controller<u32>, cfg: Config, r: R) -> CancellationToken
    where
        R: Fn(u32) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Action, String>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let c = ctl.clone();
        let s = stop.clone();
        tokio::spawn(async move { c.run(cfg, r, s).await });
        stop
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn one_reconcile_per_key_at_a_time_and_keys_in_parallel() {
        let ctl = Controller::<u32>::new("test");
        let now_running = Arc::new(Mutex::new(HashMap::<u32, u32>::new()));
        let max_same = Arc::new(AtomicU32::new(0));
        let max_total = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicU32::new(0));
        let (nr, ms, mt, rn) = (
            Arc::clone(&now_running),
            Arc::clone(&max_same),
            Arc::clone(&max_total),
            Arc::clone(&runs),
        );
        let cfg = Config {
            concurrency: 3,
            ..Config::default()
        };
        let stop = spawn_run(&ctl, cfg, move |k| {
            let (nr, ms, mt, rn) = (
                Arc::clone(&nr),
                Arc::clone(&ms),
                Arc::clone(&mt),
                Arc::clone(&rn),
            );
            async move {
                {
                    let mut m = lock(&nr);
                    let n = m.entry(k).or_insert(0);
                    *n += 1;
                    ms.fetch_max(*n, Ordering::SeqCst);
                    mt.fetch_max(m.values().sum::<u32>() as usize, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                *lock(&nr).get_mut(&k).unwrap() -= 1;
                rn.fetch_add(1, Ordering::SeqCst);
                Ok(Action::Done)
            }
        });
        for round in 0..5 {
            for k in 0..6 {
                ctl.enqueue(k);
            }
            tokio::time::sleep(Duration::from_millis(3 + round)).await;
        }
        until(|| ctl.stats().queued == 0 && ctl.stats().running == 0).await;
        assert_eq!(
            max_same.load(Ordering::SeqCst),
            1,
            "a key ran twice at once"
        );
        assert_eq!(
            max_total.load(Ordering::SeqCst),
            3,
            "the bound was not used or exceeded"
        );
        // Duplicates merged: far fewer runs than the 30 triggers.
        assert!(runs.load(Ordering::SeqCst) < 30);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_per_key_and_success_resets() {
        let ctl = Controller::<u32>::new("test");
        let calls = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let c = Arc::clone(&calls);
        let cfg = Config {
            concurrency: 4,
            error_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
                .with_jitter(0.0),
        };
        let stop = spawn_run(&ctl, cfg, move |_k| {
            let c = Arc::clone(&c);
            async move {
                let mut v = lock(&c);
                v.push(Instant::now());
                if v.len() < 4 {
                    Err("not yet".to_owned())
                } else {
                    Ok(Action::Done)
                }
            }
        });
        ctl.enqueue(7);
        until(|| lock(&calls).len() == 4).await;
        until(|| ctl.failures(&7) == 0).await;
        let v = lock(&calls).clone();
        let gaps: Vec<u128> = v.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, vec![100, 200, 400]);
        let s = ctl.stats();
        assert_eq!((s.errors, s.ok), (3, 1));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_runs_again_and_triggers_come_earlier() {
        let ctl = Controller::<u32>::new("test");
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let stop = spawn_run(&ctl, Config::default(), move |_k| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, String>(if n == 0 {
                    Action::requeue(Duration::from_secs(3600))
                } else {
                    Action::Done
                })
            }
        });
        ctl.enqueue(1);
        until(|| calls.load(Ordering::SeqCst) == 1).await;
        assert!(ctl.is_pending(&1));
        // A trigger does not wait for the hour.
        ctl.enqueue(1);
        until(|| calls.load(Ordering::SeqCst) == 2).await;
        until(|| !ctl.is_pending(&1)).await;
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_an_error_of_its_key() {
        let ctl = Controller::<u32>::new("test");
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let stop = spawn_run(&ctl, Config::default(), move |k| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if k == 1 && n == 0 {
                    panic!("boom");
                }
                Ok::<_, String>(Action::Done)
            }
        });
        ctl.enqueue(1);
        until(|| calls.load(Ordering::SeqCst) == 2).await;
        assert_eq!(ctl.stats().errors, 1);
        stop.cancel();
    }
}
