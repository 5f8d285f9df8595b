//! bismuthfe's `/metrics` (DESIGN.md, "Observability"): requests by
//! function and status, their duration (to the response's headers), those
//! in flight, and how long held requests waited. Recording a request costs
//! one lookup in a lock-free map of the function's metrics and a few atomic
//! adds, no lock and no allocation (see BENCHMARKS.md for the measured cost
//! on throughput).

use std::sync::Arc;
use std::time::Instant;

use crate::cow::CowMap;

use bismuth_metrics::{
    duration_histogram, histogram_family, Counter, Family, FunctionCode, FunctionLabel, Gauge,
    Histogram, HistogramFamily, Id, Metrics,
};
use bismuth_model::FunctionId;

/// Every metric bismuthfe exports.
#[derive(Debug)]
pub struct FrontendMetrics {
    /// False with `--no-metrics`: nothing per request is recorded.
    enabled: bool,
    metrics: Metrics,
    requests: Family<FunctionCode, Counter>,
    duration: HistogramFamily<FunctionLabel>,
    in_flight: Family<FunctionLabel, Gauge>,
    held: Histogram,
    /// Each function's metrics resolved once, read without locking; the
    /// families stay the registry's view.
    resolved: CowMap<Resolved>,
}

/// One function's metrics, cloned out of the families (clones share counts).
#[derive(Debug)]
struct Resolved {
    in_flight: Gauge,
    duration: Histogram,
    /// `code="200"`, by far the most common; other codes use the family.
    ok: Counter,
}

impl Default for FrontendMetrics {
    fn default() -> Self {
        FrontendMetrics::new(true)
    }
}

impl FrontendMetrics {
    /// The metrics; `enabled` false records nothing per request.
    pub fn new(enabled: bool) -> FrontendMetrics {
        let m = FrontendMetrics {
            enabled,
            metrics: Metrics::new(),
            requests: Family::default(),
            duration: histogram_family(),
            in_flight: Family::default(),
            held: duration_histogram(),
            resolved: CowMap::default(),
        };
        m.metrics.register(|r| {
            r.register(
                "bismuth_fe_requests",
                "Requests by function and status code",
                m.requests.clone(),
            );
            r.register(
                "bismuth_fe_request_duration_seconds",
                "Time to the response's headers, by function",
                m.duration.clone(),
            );
            r.register(
                "bismuth_fe_in_flight_requests",
                "Requests being answered now, by function",
                m.in_flight.clone(),
            );
            r.register(
                "bismuth_fe_cold_start_wait_seconds",
                "How long held requests waited for a backend to accept",
                m.held.clone(),
            );
        });
        m
    }

    /// A request for `function` begins; [`InFlight::done`] ends it.
    pub fn begin(&self, function: FunctionId) -> Option<InFlight<'_>> {
        if !self.enabled {
            return None;
        }
        let resolved = self.resolved(function);
        resolved.in_flight.inc();
        Some(InFlight {
            metrics: self,
            function,
            resolved,
            started: Instant::now(),
            code: 0,
        })
    }

    /// The function's metrics, resolved from the families at its first request.
    fn resolved(&self, function: FunctionId) -> Arc<Resolved> {
        self.resolved.get_or_insert_with(function, || {
            let label = FunctionLabel {
                function: Id(function),
            };
            Resolved {
                in_flight: self.in_flight.get_or_create(&label).clone(),
                duration: self.duration.get_or_create(&label).clone(),
                ok: self
                    .requests
                    .get_or_create(&FunctionCode {
                        function: Id(function),
                        code: 200,
                    })
                    .clone(),
            }
        })
    }

    /// A request is held; its wait is observed when the returned guard drops.
    pub fn hold(&self) -> Held<'_> {
        Held {
            histogram: &self.held,
            since: Instant::now(),
        }
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> String {
        self.metrics.render()
    }
}

/// One request in flight; counted when dropped (status 0 means the client
/// left before an answer: counted as 499, as nginx does).
#[derive(Debug)]
pub struct InFlight<'a> {
    metrics: &'a FrontendMetrics,
    function: FunctionId,
    resolved: Arc<Resolved>,
    started: Instant,
    code: u16,
}

impl InFlight<'_> {
    /// The status answered.
    pub fn done(mut self, code: u16) {
        self.code = code;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let r = &self.resolved;
        r.in_flight.dec();
        match self.code {
            200 => {
                r.ok.inc();
            }
            code => {
                let code = if code == 0 { 499 } else { code };
                self.metrics
                    .requests
                    .get_or_create(&FunctionCode {
                        function: Id(self.function),
                        code,
                    })
                    .inc();
            }
        }
        r.duration.observe_duration(self.started.elapsed());
    }
}

/// A held request's wait, observed when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    histogram: &'a Histogram,
    since: Instant,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.since.elapsed().as_secs_f64());
    }
}
