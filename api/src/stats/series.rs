//! The arithmetic of the dashboard's figures: counters read from several
//! sources summed into running totals that survive a source's restart,
//! and two totals a while apart turned into a rate, an error ratio and
//! latency quantiles (Prometheus' `histogram_quantile`).

use std::collections::HashMap;

use bismuth_model::FunctionId;

/// One function's counters, from one source or summed over all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests answered (frontends).
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// Invocations that waited for their container's start (nodes).
    pub cold: u64,
    /// The duration histogram: cumulative counts by upper bound, in
    /// seconds, ascending (the last bound is +Inf).
    pub buckets: Vec<(f64, u64)>,
    /// Requests in flight now (a gauge: not accumulated).
    pub in_flight: u64,
}

/// Per function, what one source reported.
pub type Reading = HashMap<FunctionId, Counts>;

impl Counts {
    /// Adds what happened between a source's `prev` and `cur` reports. A
    /// counter that went down means the source restarted: all of `cur` is new.
    pub fn add_since(&mut self, prev: Option<&Counts>, cur: &Counts) {
        let delta = |p: u64, c: u64| if c >= p { c - p } else { c };
        let p = prev.cloned().unwrap_or_default();
        self.requests += delta(p.requests, cur.requests);
        self.errors += delta(p.errors, cur.errors);
        self.cold += delta(p.cold, cur.cold);
        for &(le, count) in &cur.buckets {
            let before = p
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0, |(_, c)| *c);
            add_bucket(&mut self.buckets, le, delta(before, count));
        }
    }

    /// What happened from `older` to `self` (both running totals).
    pub fn minus(&self, older: Option<&Counts>) -> Counts {
        let o = older.cloned().unwrap_or_default();
        Counts {
            requests: self.requests.saturating_sub(o.requests),
            errors: self.errors.saturating_sub(o.errors),
            cold: self.cold.saturating_sub(o.cold),
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    let before = o.buckets.iter().find(|(l, _)| *l == le).map_or(0, |b| b.1);
                    (le, c.saturating_sub(before))
                })
                .collect(),
            in_flight: self.in_flight,
        }
    }

    /// The `q` quantile (0–1) of the durations, in seconds; `None` without
    /// requests. Linear within a bucket; in the +Inf bucket, the highest
    /// finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(le, count) in &self.buckets {
            if count as f64 >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let inside = (count - lower.1) as f64;
                let frac = if inside > 0.0 {
                    (rank - lower.1 as f64) / inside
                } else {
                    0.0
                };
                return Some(lower.0 + (le - lower.0) * frac);
            }
            lower = (le, count);
        }
        Some(lower.0)
    }
}

/// Adds `n` to the bucket with bound `le`, keeping the bounds sorted.
pub fn add_bucket(buckets: &mut Vec<(f64, u64)>, le: f64, n: u64) {
    match buckets.binary_search_by(|(l, _)| l.total_cmp(&le)) {
        Ok(i) => buckets[i].1 += n,
        Err(i) => buckets.insert(i, (le, n)),
    }
}

/// Rates over `seconds` from a function's change in totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Figures {
    /// Requests per second.
    pub rate: f64,
    /// Share of requests answered 5xx (0 without requests).
    pub error_ratio: f64,
    /// Median time to the response's headers, in ms (none without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile, in ms.
    pub p99_ms: Option<f64>,
    /// Cold invocations in the period.
    pub cold: u64,
}

impl Figures {
    pub fn of(change: &Counts, seconds: f64) -> Figures {
        let ms = |s: f64| (s * 1000.0 * 1000.0).round() / 1000.0;
        Figures {
            rate: if seconds > 0.0 {
                change.requests as f64 / seconds
            } else {
                0.0
            },
            error_ratio: if change.requests > 0 {
                change.errors as f64 / change.requests as f64
            } else {
                0.0
            },
            p50_ms: change.quantile(0.5).map(ms),
            p99_ms: change.quantile(0.99).map(ms),
            cold: change.cold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> Counts {
        Counts {
            requests,
            errors,
            buckets: buckets.to_vec(),
            ..Counts::default()
        }
    }

    #[test]
    fn totals_survive_a_source_restart() {
        let mut total = Counts::default();
        let a = counts(10, 1, &[(0.01, 8), (f64::INFINITY, 10)]);
        total.add_since(None, &a);
        let b = counts(15, 1, &[(0.01, 12), (f64::INFINITY, 15)]);
        total.add_since(Some(&a), &b);
        assert_eq!((total.requests, total.errors), (15, 1));
        // Restarted: counting from zero again.
        let c = counts(3, 0, &[(0.01, 3), (f64::INFINITY, 3)]);
        total.add_since(Some(&b), &c);
        assert_eq!(total.requests, 18);
        assert_eq!(total.buckets, vec![(0.01, 15), (f64::INFINITY, 18)]);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let c = counts(
            100,
            0,
            &[(0.001, 0), (0.002, 50), (0.004, 100), (f64::INFINITY, 100)],
        );
        assert_eq!(c.quantile(0.5), Some(0.002));
        let p99 = c.quantile(0.99).unwrap();
        assert!((p99 - 0.00396).abs() < 1e-9, "{p99}");
        let p25 = c.quantile(0.25).unwrap();
        assert!((p25 - 0.0015).abs() < 1e-9, "{p25}");
        // Beyond the last finite bound: that bound.
        let slow = counts(10, 0, &[(0.5, 0), (f64::INFINITY, 10)]);
        assert_eq!(slow.quantile(0.5), Some(0.5));
        assert_eq!(counts(0, 0, &[(0.5, 0)]).quantile(0.5), None);
    }

    #[test]
    fn figures_over_a_period() {
        let old = counts(100, 0, &[(0.01, 100), (f64::INFINITY, 100)]);
        let new = counts(150, 5, &[(0.01, 140), (f64::INFINITY, 150)]);
        let f = Figures::of(&new.minus(Some(&old)), 10.0);
        assert_eq!(f.rate, 5.0);
        assert_eq!(f.error_ratio, 0.1);
        assert!(f.p50_ms.is_some_and(|p| p > 0.0 && p <= 10.0));
        assert_eq!(Figures::of(&Counts::default(), 10.0).p50_ms, None);
    }
}
