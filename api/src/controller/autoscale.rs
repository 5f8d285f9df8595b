//! How many instances a function wants, from its load: pure logic over a
//! clock the caller passes in (unit-tested with a simulated one: the tests
//! advance `now` tick by tick).
//!
//! Knative's stable/panic scheme (DESIGN.md, "Elasticity"): every tick the
//! collector gives the function's average concurrency over that tick
//! (requests in flight, held ones included). Desired instances are
//! `ceil(average / (TARGET_UTILIZATION × concurrency))` over the stable
//! window (60 s), clamped to `min..=max`. When the panic window's (6 s)
//! figure asks for at least [`PANIC_THRESHOLD`] times the instances that
//! run, the scaler panics: it scales up to the panic figure at once and does
//! not scale down until a whole stable window has passed without panic.
//! A function with no request for `idle_timeout` goes to `min` (its window
//! is forgotten), so scale to zero takes `idle_timeout`, not a window.
//!
//! The scaler only says how many; which instances go (only idle ones, with
//! nothing in flight) is the reconcile's decision.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The autoscaler aims at this fraction of an instance's `concurrency`.
pub const TARGET_UTILIZATION: f64 = 0.7;
/// Panic when the panic window wants this many times the running instances.
pub const PANIC_THRESHOLD: f64 = 2.0;

/// The windows (DESIGN.md's defaults: 60 s and 6 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub stable: Duration,
    pub panic: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            stable: Duration::from_secs(60),
            panic: Duration::from_secs(6),
        }
    }
}

/// What bounds a function's decision (from its definition).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    /// Requests one instance serves at once.
    pub concurrency: u32,
    pub idle_timeout: Duration,
}

/// One tick's observation of a function.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// Average requests in flight over the tick.
    pub concurrency: f64,
    /// How long the function has had no request at all (no request in
    /// flight anywhere, none begun); zero while it is busy.
    pub idle_for: Duration,
}

/// One function's scaler.
#[derive(Debug, Default)]
pub struct Scaler {
    samples: VecDeque<(Instant, f64)>,
    /// Panicking until this instant (extended while the panic lasts).
    panic_until: Option<Instant>,
    /// The last decision (panic never goes below it).
    last: Option<u32>,
}

impl Scaler {
    /// Records one tick and decides; `running` is how many instances run
    /// now. `None`: nothing observed yet (keep what is stored).
    pub fn decide(
        &mut self,
        now: Instant,
        windows: Windows,
        bounds: Bounds,
        running: u32,
        seen: Observation,
    ) -> Option<u32> {
        let clamp = |n: u32| n.clamp(bounds.min, bounds.max.max(bounds.min));
        if seen.idle_for >= bounds.idle_timeout && seen.concurrency == 0.0 {
            // Idle long enough: down to the minimum, the history forgotten.
            self.samples.clear();
            self.panic_until = None;
            self.last = Some(clamp(0));
            return self.last;
        }
        self.samples.push_back((now, seen.concurrency.max(0.0)));
        while let Some((t, _)) = self.samples.front() {
            if now.duration_since(*t) > windows.stable {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let average = |window: Duration| {
            let recent: Vec<f64> = self
                .samples
                .iter()
                .filter(|(t, _)| now.duration_since(*t) < window)
                .map(|(_, c)| *c)
                .collect();
            recent.iter().sum::<f64>() / recent.len().max(1) as f64
        };
        let per_instance = TARGET_UTILIZATION * f64::from(bounds.concurrency.max(1));
        let want = |c: f64| (c / per_instance - 1e-9).ceil().max(0.0) as u32;
        let stable = want(average(windows.stable));
        let panic = want(average(windows.panic));

        let over = f64::from(panic) >= PANIC_THRESHOLD * f64::from(running.max(1));
        if over {
            self.panic_until = Some(now + windows.stable);
        } else if self.panic_until.is_some_and(|until| now >= until) {
            self.panic_until = None;
        }
        let desired = if self.panic_until.is_some() {
            // Up at once; never down while panicking.
            panic.max(stable).max(self.last.unwrap_or(0))
        } else {
            stable
        };
        // Requests want an instance, however few.
        let desired = if seen.concurrency > 0.0 {
            desired.max(1)
        } else {
            desired
        };
        self.last = Some(clamp(desired));
        self.last
    }

    /// A frontend woke the function (a request waits): at least one.
    pub fn woken(&mut self, bounds: Bounds) -> u32 {
        let n = self.last.unwrap_or(0).max(1).min(bounds.max.max(1));
        self.last = Some(n);
        n
    }

    /// Whether it is panicking now.
    pub fn panicking(&self) -> bool {
        self.panic_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    fn bounds(min: u32, max: u32, concurrency: u32) -> Bounds {
        Bounds {
            min,
            max,
            concurrency,
            idle_timeout: Duration::from_secs(30),
        }
    }

    fn busy(c: f64) -> Observation {
        Observation {
            concurrency: c,
            idle_for: Duration::ZERO,
        }
    }

    /// Runs `ticks` ticks of `seen`, each with `running` instances; the last decision.
    fn run(
        s: &mut Scaler,
        now: &mut Instant,
        ticks: u32,
        b: Bounds,
        running: u32,
        seen: Observation,
    ) -> Option<u32> {
        let mut last = None;
        for _ in 0..ticks {
            *now += TICK;
            last = s.decide(*now, Windows::default(), b, running, seen);
        }
        last
    }

    #[test]
    fn steady_load_wants_seventy_percent_utilization() {
        let mut s = Scaler::default();
        let mut now = Instant::now();
        let b = bounds(0, 100, 10);
        // 14 requests in flight at concurrency 10: 14 / 7 = 2 instances.
        assert_eq!(run(&mut s, &mut now, 90, b, 2, busy(14.0)), Some(2));
        // 14.1 needs a third.
        assert_eq!(run(&mut s, &mut now, 90, b, 3, busy(14.1)), Some(3));
    }

    #[test]
    fn a_load_step_panics_up_at_once() {
        let mut s = Scaler::default();
        let mut now = Instant::now();
        let b = bounds(0, 10, 1);
        assert_eq!(run(&mut s, &mut now, 60, b, 1, busy(0.5)), Some(1));
        // Four clients at concurrency 1: the first tick already doubles
        // (the 6 s window's average is (5 × 0.5 + 4) / 6), and panics.
        assert_eq!(run(&mut s, &mut now, 1, b, 1, busy(4.0)), Some(2));
        assert!(s.panicking());
        // Within the panic window it reaches 4 / 0.7 → 6, where the stable
        // window alone would still want 1.
        assert_eq!(run(&mut s, &mut now, 5, b, 2, busy(4.0)), Some(6));
    }

    #[test]
    fn max_and_min_bound_the_decision() {
        let mut s = Scaler::default();
        let mut now = Instant::now();
        assert_eq!(
            run(&mut s, &mut now, 3, bounds(0, 3, 1), 1, busy(50.0)),
            Some(3)
        );
        let mut s = Scaler::default();
        assert_eq!(
            run(&mut s, &mut now, 3, bounds(2, 5, 100), 2, busy(0.1)),
            Some(2)
        );
    }

    #[test]
    fn no_scale_down_while_panicking_then_down_after_the_stable_window() {
        let mut s = Scaler::default();
        let mut now = Instant::now();
        let b = bounds(0, 10, 1);
        assert_eq!(run(&mut s, &mut now, 10, b, 1, busy(4.0)), Some(6));
        // Load drops to one client: the panic window forgets the burst in
        // 6 s, but the decision holds until a stable window without panic.
        assert_eq!(run(&mut s, &mut now, 30, b, 6, busy(1.0)), Some(6));
        let after = run(&mut s, &mut now, 61, b, 6, busy(1.0));
        assert_eq!(
            after,
            Some(2),
            "1 / 0.7 → 2 once the stable window is all 1.0"
        );
        assert!(!s.panicking());
    }

    #[test]
    fn idle_for_the_timeout_goes_to_min_at_once() {
        let mut s = Scaler::default();
        let mut now = Instant::now();
        let b = bounds(0, 10, 1);
        assert_eq!(run(&mut s, &mut now, 5, b, 1, busy(1.0)), Some(2));
        let idle = |d| Observation {
            concurrency: 0.0,
            idle_for: Duration::from_secs(d),
        };
        // Not yet idle long enough: the stable window still remembers load.
        assert_eq!(run(&mut s, &mut now, 1, b, 2, idle(29)), Some(2));
        assert_eq!(run(&mut s, &mut now, 1, b, 2, idle(30)), Some(0));
        // A floor stays.
        let mut s = Scaler::default();
        assert_eq!(
            run(&mut s, &mut now, 1, bounds(1, 4, 1), 1, idle(31)),
            Some(1)
        );
    }

    #[test]
    fn any_request_wants_an_instance_and_a_wake_gives_one() {
        let mut s = Scaler::default();
        let mut now = Instant::now();
        let b = bounds(0, 10, 100);
        // 0.01 requests in flight on average at concurrency 100: still one.
        assert_eq!(run(&mut s, &mut now, 1, b, 0, busy(0.01)), Some(1));
        let mut s = Scaler::default();
        assert_eq!(s.woken(b), 1);
        assert_eq!(s.woken(bounds(0, 10, 1)), 1);
    }
}
