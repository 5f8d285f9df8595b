//! A coarse timer for hyper's per-connection timeouts (the header read
//! timeout, which also ends idle keep-alive connections): deadlines kept in
//! an ordered map and fired by one ticker task per runtime, a few times a
//! second.
//!
//! Handing hyper tokio's timer costs a timer registration per request, and
//! whenever that deadline is earlier than the runtime's next wake-up tokio
//! unparks its driver, which is a `write` to an eventfd and another trip
//! through `epoll_wait`: on a proxy's hot path, for a 30-second timeout
//! that never fires. Here arming a deadline is a map insert, and nothing
//! wakes until the ticker finds it due; a timeout fires up to one tick late.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// How often due deadlines are looked for.
pub const TICK: Duration = Duration::from_millis(250);

/// Pending deadlines, earliest first, with the waker of who waits on each.
#[derive(Debug, Default)]
struct Wheel {
    due: Mutex<BTreeMap<(Instant, u64), Waker>>,
    next_id: AtomicU64,
}

impl Wheel {
    /// Wakes every waiter whose deadline is at or before `now`.
    fn fire(&self, now: Instant) {
        let due = {
            let Ok(mut map) = self.due.lock() else {
                return;
            };
            // Everything after `now` stays; what is left in `map` is due.
            let later = map.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *map, later)
        };
        for waker in due.into_values() {
            waker.wake();
        }
    }

    fn remove(&self, key: (Instant, u64)) {
        if let Ok(mut map) = self.due.lock() {
            map.remove(&key);
        }
    }
}

/// The timer to give hyper's connection builder; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CoarseTimer {
    wheel: Arc<Wheel>,
}

impl CoarseTimer {
    /// A timer whose deadlines are fired by a ticker task it spawns on the
    /// current runtime (every [`TICK`]); the ticker ends when the timer and
    /// its sleeps are gone.
    pub fn start() -> Self {
        let timer = CoarseTimer::default();
        let wheel = Arc::downgrade(&timer.wheel);
        tokio::spawn(tick(wheel, TICK));
        timer
    }
}

/// Fires due deadlines every `every` while the wheel exists.
async fn tick(wheel: Weak<Wheel>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match wheel.upgrade() {
            Some(w) => w.fire(Instant::now()),
            None => return,
        }
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            wheel: Arc::clone(&self.wheel),
            deadline,
            key: None,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut s) => s.move_to(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// One deadline; registered with the wheel only once polled (most are
/// dropped before they are ever waited on).
#[derive(Debug)]
struct CoarseSleep {
    wheel: Arc<Wheel>,
    deadline: Instant,
    key: Option<(Instant, u64)>,
}

impl CoarseSleep {
    fn move_to(&mut self, deadline: Instant) {
        if let Some(key) = self.key.take() {
            self.wheel.remove(key);
        }
        self.deadline = deadline;
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(key) = self.key.take() {
                self.wheel.remove(key);
            }
            return Poll::Ready(());
        }
        let this = &mut *self;
        let Ok(mut map) = this.wheel.due.lock() else {
            return Poll::Pending;
        };
        let key = *this.key.get_or_insert_with(|| {
            (
                this.deadline,
                this.wheel.next_id.fetch_add(1, Ordering::Relaxed),
            )
        });
        // Inserted anew if the ticker already took it (a wake-up that
        // arrived just as the deadline moved).
        match map.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                map.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.wheel.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_after_the_deadline_and_not_before() {
        let timer = CoarseTimer::start();
        let start = Instant::now();
        timer.sleep(Duration::from_millis(300)).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "woke early: {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_dropped_or_reset_sleep_leaves_nothing_behind() {
        let timer = CoarseTimer::start();
        let mut sleep = timer.sleep(Duration::from_secs(60));
        let waker = futures_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timer.wheel.due.lock().unwrap().len(), 1);
        // Reset into the past: ready at once, and unregistered.
        timer.reset(&mut sleep, Instant::now() - Duration::from_secs(1));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert!(timer.wheel.due.lock().unwrap().is_empty());
        let mut other = timer.sleep(Duration::from_secs(60));
        assert!(other.as_mut().poll(&mut cx).is_pending());
        drop(other);
        assert!(timer.wheel.due.lock().unwrap().is_empty());
    }

    #[test]
    fn fire_wakes_only_what_is_due() {
        let wheel = Wheel::default();
        let now = Instant::now();
        let waker = futures_waker();
        let mut map = wheel.due.lock().unwrap();
        map.insert((now - Duration::from_secs(1), 0), waker.clone());
        map.insert((now, 1), waker.clone());
        map.insert((now + Duration::from_secs(1), 2), waker);
        drop(map);
        wheel.fire(now);
        let left: Vec<u64> = wheel.due.lock().unwrap().keys().map(|k| k.1).collect();
        assert_eq!(left, vec![2]);
    }

    fn futures_waker() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        Waker::from(Arc::new(Noop))
    }
}
