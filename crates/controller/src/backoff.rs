//! Jittered exponential backoff: the one retry delay of the workspace.
//! Delays double from `min` up to `max`, and each is drawn from
//! `[(1 - jitter) × d, d]`, so clients that fail together (containers of one
//! bad image, watches after a ZooKeeper restart) retry spread out rather
//! than in lockstep (linkerd's `exp-backoff` is the model).

use std::time::Duration;

/// The shape of a backoff: stateless, cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Doubling from `min` to `max` with the default jitter (50 %).
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            jitter: 0.5,
        }
    }

    /// The share of each delay drawn at random, 0 (none) to 1 (full jitter).
    pub fn with_jitter(mut self, jitter: f64) -> Backoff {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The shortest delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `attempt` (0-based) without jitter:
    /// `min × 2^attempt`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max).max(self.min)
    }

    /// The delay before retry number `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if self.jitter == 0.0 {
            return ceiling;
        }
        let cut = self.jitter * rand::random::<f64>();
        ceiling.mul_f64(1.0 - cut)
    }

    /// A counter of attempts over this shape.
    pub fn retry(self) -> Retry {
        Retry {
            backoff: self,
            attempt: 0,
        }
    }
}

/// A running count of failures over a [`Backoff`]: `next_delay` after each
/// failure, `reset` after a success.
#[derive(Clone, Debug)]
pub struct Retry {
    backoff: Backoff,
    attempt: u32,
}

impl Retry {
    /// The delay to wait now, and counts the failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Sleeps for [`Retry::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over at the shortest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS).with_jitter(0.0);
        let got: Vec<u128> = (0..6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), 1000 * MS);
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let b = Backoff::new(100 * MS, 10_000 * MS);
        for attempt in 0..10 {
            let ceiling = b.ceiling(attempt);
            for _ in 0..100 {
                let d = b.delay(attempt);
                assert!(d <= ceiling && d >= ceiling / 2, "{d:?} vs {ceiling:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_simultaneous_failures() {
        // Fifty containers failing together must not all retry at one instant.
        let b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut delays: Vec<Duration> = (0..50).map(|_| b.delay(3)).collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
        let spread = delays[delays.len() - 1] - delays[0];
        assert!(spread > 2000 * MS, "spread {spread:?}");
    }

    #[test]
    fn retry_counts_and_resets() {
        let mut r = Backoff::new(10 * MS, 1000 * MS).with_jitter(0.0).retry();
        assert_eq!(r.next_delay(), 10 * MS);
        assert_eq!(r.next_delay(), 20 * MS);
        assert_eq!(r.attempts(), 2);
        r.reset();
        assert_eq!(r.next_delay(), 10 * MS);
    }
}
