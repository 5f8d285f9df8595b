//! A controller's [`bismuth_controller::Stats`] as metrics, brought up to
//! date at scrape time: `bismuth_reconciles_total{controller, result}`,
//! `bismuth_reconcile_seconds_total`, queue depth and keys running.

use std::sync::atomic::{AtomicU64, Ordering};

use bismuth_controller::StatsSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    controller: &'static str,
}

/// One controller's metrics.
#[derive(Debug)]
pub struct ControllerMetrics {
    name: &'static str,
    reconciles: Family<Outcome, Counter>,
    seconds: Family<Name, Counter<f64, AtomicU64>>,
    queued: Family<Name, Gauge>,
    running: Family<Name, Gauge>,
    /// What was already counted: ok, errors, microseconds.
    seen: [AtomicU64; 3],
}

impl ControllerMetrics {
    /// The metrics of controller `name`, not registered yet.
    pub fn new(name: &'static str) -> ControllerMetrics {
        ControllerMetrics {
            name,
            reconciles: Family::default(),
            seconds: Family::default(),
            queued: Family::default(),
            running: Family::default(),
            seen: Default::default(),
        }
    }

    /// Registers them.
    pub fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "bismuth_reconciles",
            "Reconciles run, by controller and result (ok, error)",
            m.reconciles.clone(),
        );
        registry.register(
            "bismuth_reconcile_seconds",
            "Time spent reconciling, by controller",
            m.seconds.clone(),
        );
        registry.register(
            "bismuth_reconcile_queue_depth",
            "Keys waiting to be reconciled",
            m.queued.clone(),
        );
        registry.register(
            "bismuth_reconcile_running",
            "Keys being reconciled now",
            m.running.clone(),
        );
    }

    /// Brings the metrics up to `stats` (call before rendering).
    pub fn update(&self, stats: &StatsSnapshot) {
        let delta =
            |i: usize, now: u64| now.saturating_sub(self.seen[i].swap(now, Ordering::Relaxed));
        let outcome = |result| Outcome {
            controller: self.name,
            result,
        };
        let name = Name {
            controller: self.name,
        };
        self.reconciles
            .get_or_create(&outcome("ok"))
            .inc_by(delta(0, stats.ok));
        self.reconciles
            .get_or_create(&outcome("error"))
            .inc_by(delta(1, stats.errors));
        let micros = stats.duration_sum.as_micros() as u64;
        self.seconds
            .get_or_create(&name)
            .inc_by(delta(2, micros) as f64 / 1e6);
        self.queued.get_or_create(&name).set(stats.queued as i64);
        self.running.get_or_create(&name).set(stats.running as i64);
    }
}
