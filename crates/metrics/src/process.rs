//! The process metrics Prometheus' own clients export, read from
//! `/proc/self` when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

#[derive(Debug)]
pub struct Process {
    rss: Gauge,
    fds: Gauge,
    start: Gauge<f64, AtomicU64>,
    cpu: Counter<f64, AtomicU64>,
    /// CPU seconds already counted, as f64 bits.
    counted: AtomicU64,
}

impl Process {
    pub fn register(registry: &mut Registry) -> Process {
        let p = Process {
            rss: Gauge::default(),
            fds: Gauge::default(),
            start: Gauge::default(),
            cpu: Counter::default(),
            counted: AtomicU64::new(0),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.rss.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu.clone(),
        );
        p
    }

    /// Reads `/proc/self` into the metrics.
    pub fn refresh(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kb = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(kb) = kb {
                self.rss.set(kb * 1024);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(dir.count() as i64);
        }
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime (fields 14, 15) and starttime (22), counted from
        // the state (field 3) after the command name.
        let cpu = (field(11) + field(12)) / TICKS;
        let before = f64::from_bits(self.counted.swap(cpu.to_bits(), Ordering::Relaxed));
        if cpu > before {
            self.cpu.inc_by(cpu - before);
        }
        if self.start.get() == 0.0 {
            self.start.set(boot_time() + field(19) / TICKS);
        }
    }
}

/// The system's boot time, seconds since the epoch (`btime` of /proc/stat).
fn boot_time() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
