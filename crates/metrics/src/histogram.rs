//! A lock-free duration histogram: fixed buckets (0.25 ms to about 16 s,
//! doubling), each an atomic count, and the sum kept in whole nanoseconds.
//! Observing is two atomic adds and no lock, so request paths on several
//! threads do not queue on it (`prometheus-client`'s own histogram takes a
//! mutex per observation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the finite buckets, in seconds: 0.25 ms · 2^i.
const BOUNDS: usize = 17;
const FIRST: f64 = 0.00025;

/// The finite buckets' upper bounds in seconds.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    (0..BOUNDS).map(|i| FIRST * f64::from(1u32 << i))
}

/// Durations by bucket; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records `seconds` (negative and NaN count as zero).
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        self.observe_duration(Duration::from_secs_f64(seconds.min(1e9)));
    }

    /// Records `d`.
    pub fn observe_duration(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.inner.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// (count, sum in seconds).
    pub fn totals(&self) -> (u64, f64) {
        let count = self
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (count, sum)
    }
}

/// The bucket of a duration: the first whose bound is not below it.
fn bucket(nanos: u64) -> usize {
    const FIRST_NANOS: u64 = 250_000;
    if nanos <= FIRST_NANOS {
        return 0;
    }
    // Bound i is FIRST_NANOS << i: the smallest i with nanos <= bound.
    let ratio = nanos.div_ceil(FIRST_NANOS);
    let i = (64 - (ratio - 1).leading_zeros()) as usize;
    i.min(BOUNDS)
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let buckets: Vec<(f64, u64)> = duration_buckets()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_not_below_them() {
        let bounds: Vec<f64> = duration_buckets().collect();
        assert_eq!(bounds.len(), BOUNDS);
        assert!((bounds[16] - 16.384).abs() < 1e-9);
        for (i, b) in bounds.iter().enumerate() {
            let nanos = (b * 1e9).round() as u64;
            assert_eq!(bucket(nanos), i, "at the bound {b}");
            assert_eq!(bucket(nanos + 1), i + 1, "just above {b}");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(u64::MAX), BOUNDS);
    }

    #[test]
    fn counts_and_sums() {
        let h = Histogram::default();
        h.observe(0.001);
        h.observe(2.0);
        h.observe(-1.0);
        h.observe(f64::NAN);
        let (count, sum) = h.totals();
        assert_eq!(count, 4);
        assert!((sum - 2.001).abs() < 1e-9);
    }

    #[test]
    fn encodes_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.003);
        h.observe(100.0);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("d", "durations", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("d_bucket{le=\"0.00025\"} 1"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.004\"} 2"), "{text}");
        assert!(text.contains("d_bucket{le=\"16.384\"} 2"), "{text}");
        assert!(text.contains("d_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("d_count 3"), "{text}");
    }
}
