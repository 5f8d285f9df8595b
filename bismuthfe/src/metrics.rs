//! bismuthfe's `/metrics` (DESIGN.md, "Observability"): requests by
//! function and status, their duration (to the response's headers), those
//! in flight, and how long held requests waited. Recording a request costs
//! a few family lookups and atomic adds, no allocation (see BENCHMARKS.md
//! for the measured cost on throughput).

use std::time::Instant;

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
        let label = FunctionLabel {
            function: Id(function),
        };
        let gauge = self.in_flight.get_or_create(&label).clone();
        gauge.inc();
        Some(InFlight {
            metrics: self,
            label,
            gauge,
            started: Instant::now(),
            code: 0,
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
    label: FunctionLabel,
    gauge: Gauge,
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
        self.gauge.dec();
        let code = if self.code == 0 { 499 } else { self.code };
        self.metrics
            .requests
            .get_or_create(&FunctionCode {
                function: self.label.function,
                code,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&self.label)
            .observe(self.started.elapsed().as_secs_f64());
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
