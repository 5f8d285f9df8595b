//! A controller's counters, for its daemon's `/metrics`: reconciles by
//! outcome, their durations as a histogram, queue depth and keys in flight.
//! Plain atomics, so recording costs a few nanoseconds and reading never
//! blocks a reconcile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the reconcile duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Live counters.
#[derive(Debug, Default)]
pub struct Stats {
    ok: AtomicU64,
    errors: AtomicU64,
    requeues: AtomicU64,
    /// Per bucket (non-cumulative), the last one being +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    queued: AtomicU64,
    running: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Reconciles that returned `Ok`.
    pub ok: u64,
    /// Reconciles that returned `Err`.
    pub errors: u64,
    /// Reconciles that asked to run again later (`Ok` with a delay, or an error).
    pub requeues: u64,
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`], then +Inf.
    pub buckets: Vec<u64>,
    /// Sum of all reconcile durations.
    pub duration_sum: Duration,
    /// Keys waiting.
    pub queued: u64,
    /// Keys being reconciled.
    pub running: u64,
}

impl Stats {
    pub(crate) fn record(&self, ok: bool, requeued: bool, took: Duration) {
        if ok { &self.ok } else { &self.errors }.fetch_add(1, Ordering::Relaxed);
        if requeued {
            self.requeues.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_depth(&self, queued: usize, running: usize) {
        self.queued.store(queued as u64, Ordering::Relaxed);
        self.running.store(running as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut total = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        StatsSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            requeues: self.requeues.load(Ordering::Relaxed),
            buckets,
            duration_sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
            queued: self.queued.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let s = Stats::default();
        s.record(true, false, Duration::from_micros(500));
        s.record(false, true, Duration::from_millis(20));
        s.record(true, true, Duration::from_secs(60));
        let snap = s.snapshot();
        assert_eq!((snap.ok, snap.errors, snap.requeues), (2, 1, 2));
        assert_eq!(snap.buckets[0], 1);
        assert_eq!(snap.buckets[4], 2); // <= 25 ms
        assert_eq!(snap.buckets[DURATION_BUCKETS.len() - 1], 2);
        assert_eq!(*snap.buckets.last().unwrap(), 3);
    }
}
