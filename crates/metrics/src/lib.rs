//! bismuth-metrics: what every daemon's `GET /metrics` shares. Metrics are
//! `prometheus-client` counters and gauges (atomics; a labelled family is
//! one read-locked map lookup per use) and our lock-free duration
//! [`Histogram`], registered in
//! one [`Metrics`] per daemon; [`Metrics::render`] refreshes the process
//! metrics (resident memory, CPU seconds, open file descriptors, start
//! time) and encodes everything in Prometheus' text format (0.0.4, what
//! `promtool check metrics` checks; the client writes OpenMetrics, whose
//! counter families are renamed to their `_total` samples' name here).
//!
//! Why `prometheus-client`: it is the Prometheus project's own Rust client,
//! has no global state (each daemon, and each test, owns its registry), and
//! its families need no string formatting on the hot path (labels such as
//! [`FunctionLabel`] encode a function id without allocating).

mod controller;
mod histogram;
mod labels;
pub mod load;
mod process;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use controller::ControllerMetrics;
pub use histogram::{duration_buckets, Histogram};
pub use labels::{FunctionCode, FunctionLabel, Id};
pub use load::{LoadMeter, LoadSample};
pub use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output: Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A histogram with [`duration_buckets`] (a family's constructor).
pub fn duration_histogram() -> Histogram {
    Histogram::default()
}

/// A labelled histogram family over [`duration_buckets`].
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A new [`HistogramFamily`].
pub fn histogram_family<L>() -> HistogramFamily<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(duration_histogram)
}

/// One daemon's registry and its process metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    process: process::Process,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry with the process metrics in it.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let process = process::Process::register(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            process,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers more metrics (at start-up).
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry());
    }

    /// Every metric, in Prometheus' text format.
    pub fn render(&self) -> String {
        self.process.refresh();
        let registry = self.registry();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        drop(registry);
        to_prometheus_text(&out)
    }
}

/// OpenMetrics text → Prometheus text 0.0.4: a counter family `x` (samples
/// `x_total`) is named `x_total` in its HELP and TYPE lines, and the
/// OpenMetrics-only `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_process_and_registered_metrics() {
        let m = Metrics::new();
        let requests: Family<FunctionCode, Counter> = Family::default();
        m.register(|r| r.register("test_requests", "Requests", requests.clone()));
        let id = uuid::Uuid::nil();
        requests
            .get_or_create(&FunctionCode {
                function: Id(id),
                code: 200,
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains(&format!(
                "test_requests_total{{function=\"{id}\",code=\"200\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(
            text.contains("# TYPE test_requests_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}

#[cfg(test)]
mod promtool {
    /// `promtool check metrics` (Debian `prometheus`) accepts the output,
    /// when promtool is installed.
    #[test]
    fn promtool_accepts_the_output() {
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool is not installed; skipped");
            return;
        };
        let m = super::Metrics::new();
        let h: super::HistogramFamily<super::FunctionLabel> = super::histogram_family();
        let c: super::Family<super::FunctionCode, super::Counter> = super::Family::default();
        m.register(|r| {
            r.register("bismuth_test_seconds", "A histogram", h.clone());
            r.register("bismuth_test_requests", "A counter", c.clone());
        });
        let id = super::Id(uuid::Uuid::new_v4());
        h.get_or_create(&super::FunctionLabel { function: id })
            .observe(0.01);
        c.get_or_create(&super::FunctionCode {
            function: id,
            code: 503,
        })
        .inc();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(m.render().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
