//! Load as the autoscaler needs it: requests in flight now, and their
//! integral over time (so any two readings give the average concurrency
//! between them, whatever happened in between), plus how long the last
//! request ended ago. Lock-free: a request costs four atomic adds at its
//! start and five at its end.
//!
//! The integral uses `busy(T) = Σ durations of finished requests +
//! in_flight × T − Σ start times of those in flight`, all in nanoseconds
//! since one process-wide epoch, in wrapping u64 arithmetic (exact as long
//! as the true value fits, i.e. for centuries).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process's load clock: nanoseconds since the first use.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Seconds on the load clock (what load reports call `uptime_s`).
pub fn uptime_s() -> f64 {
    now_ns() as f64 / 1e9
}

/// One meter: a function at a frontend, or an instance on its node.
#[derive(Debug)]
pub struct LoadMeter {
    in_flight: AtomicU64,
    start_sum: AtomicU64,
    done: AtomicU64,
    requests: AtomicU64,
    last_end: AtomicU64,
}

impl Default for LoadMeter {
    fn default() -> Self {
        LoadMeter {
            in_flight: AtomicU64::new(0),
            start_sum: AtomicU64::new(0),
            done: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            // Idle since it was made (an instance that never served).
            last_end: AtomicU64::new(now_ns()),
        }
    }
}

/// A reading of a [`LoadMeter`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadSample {
    pub in_flight: u64,
    /// Integral of in-flight requests over time since the meter was made.
    pub busy: Duration,
    pub requests: u64,
    /// Time since the last request ended (since the meter was made if none
    /// did); zero while one is in flight.
    pub idle: Duration,
}

impl LoadMeter {
    /// A request begins; it ends when the guard drops.
    pub fn begin(&self) -> LoadGuard<'_> {
        LoadGuard {
            meter: self,
            start: self.start(),
        }
    }

    fn start(&self) -> u64 {
        let start = now_ns();
        self.start_sum.fetch_add(start, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        start
    }

    fn end(&self, start: u64) {
        let end = now_ns();
        self.done.fetch_add(end.wrapping_sub(start), Relaxed);
        self.start_sum.fetch_sub(start, Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
        self.last_end.fetch_max(end, Relaxed);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Reads the meter now.
    pub fn sample(&self) -> LoadSample {
        // Read in the order that keeps a concurrent request from counting
        // twice; an error of one request's few nanoseconds is possible.
        let in_flight = self.in_flight.load(Relaxed);
        let start_sum = self.start_sum.load(Relaxed);
        let done = self.done.load(Relaxed);
        let now = now_ns();
        let busy = done
            .wrapping_add(in_flight.wrapping_mul(now))
            .wrapping_sub(start_sum);
        // A torn read can land slightly beyond the truth; never absurd.
        let busy = if busy > now.saturating_mul(in_flight.max(1) + 1_000_000) {
            done
        } else {
            busy
        };
        let idle = if in_flight > 0 {
            0
        } else {
            now.saturating_sub(self.last_end.load(Relaxed))
        };
        LoadSample {
            in_flight,
            busy: Duration::from_nanos(busy),
            requests: self.requests.load(Relaxed),
            idle: Duration::from_nanos(idle),
        }
    }
}

/// A request in flight on a [`LoadMeter`].
#[derive(Debug)]
pub struct LoadGuard<'a> {
    meter: &'a LoadMeter,
    start: u64,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        self.meter.end(self.start);
    }
}

/// A request in flight on a shared meter (for guards that outlive a borrow).
#[derive(Debug)]
pub struct OwnedLoadGuard {
    meter: std::sync::Arc<LoadMeter>,
    start: u64,
}

impl OwnedLoadGuard {
    /// A request begins on `meter`.
    pub fn begin(meter: std::sync::Arc<LoadMeter>) -> OwnedLoadGuard {
        let start = meter.start();
        OwnedLoadGuard { meter, start }
    }
}

impl Drop for OwnedLoadGuard {
    fn drop(&mut self) {
        self.meter.end(self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_counts_time_in_flight() {
        let m = LoadMeter::default();
        let before = m.sample();
        assert_eq!(before.in_flight, 0);
        assert_eq!(before.busy, Duration::ZERO);
        {
            let _a = m.begin();
            let _b = m.begin();
            assert_eq!(m.in_flight(), 2);
            std::thread::sleep(Duration::from_millis(50));
            let s = m.sample();
            assert_eq!(s.idle, Duration::ZERO);
            // Two requests for ~50 ms: ~100 ms of busy time so far.
            assert!(s.busy >= Duration::from_millis(100), "{s:?}");
        }
        let after = m.sample();
        assert_eq!(after.in_flight, 0);
        assert_eq!(after.requests, 2);
        assert!(after.busy >= Duration::from_millis(100));
        assert!(after.busy < Duration::from_millis(1000), "{after:?}");
        // Nothing in flight: the integral stands still, idle time grows.
        std::thread::sleep(Duration::from_millis(20));
        let later = m.sample();
        assert_eq!(later.busy, after.busy);
        assert!(later.idle >= Duration::from_millis(20));
    }

    #[test]
    fn owned_guards_end_like_borrowed_ones() {
        let m = std::sync::Arc::new(LoadMeter::default());
        let g = OwnedLoadGuard::begin(std::sync::Arc::clone(&m));
        assert_eq!(m.in_flight(), 1);
        drop(g);
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.sample().requests, 1);
    }

    #[test]
    fn concurrent_requests_balance() {
        let m = std::sync::Arc::new(LoadMeter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _g = m.begin();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = m.sample();
        assert_eq!((s.in_flight, s.requests), (0, 40_000));
        assert!(s.busy < Duration::from_secs(5), "{s:?}");
    }
}
