//! Helpers for the benchmark programs (`*/examples/bench_*.rs`, `*/benches/`):
//! running wrk and reading its figures, reading a process's memory, and
//! summarizing samples.

use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug)]
pub struct WrkStats {
    /// Requests per second.
    pub rps: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
}

/// Runs `wrk --latency ARGS…` and parses its summary; fails on non-2xx answers.
pub fn wrk(args: &[String]) -> anyhow::Result<WrkStats> {
    let out = Command::new("wrk")
        .arg("--latency")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    match (
        field("Requests/sec:").and_then(|v| v.parse().ok()),
        field("50%").and_then(to_ms),
        field("99%").and_then(to_ms),
    ) {
        (Some(rps), Some(p50_ms), Some(p99_ms)) => Ok(WrkStats {
            rps,
            p50_ms,
            p99_ms,
        }),
        _ => anyhow::bail!("cannot parse wrk output:\n{text}"),
    }
}

/// Converts wrk's `123.45us` / `1.2ms` / `2s` to milliseconds.
pub fn to_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// A process's resident memory in KiB: (`VmRSS`, `RssAnon`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// A whole number from the environment variable `name`, or `default`.
pub fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0.0–1.0) of sorted samples.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints a line with the count, p50, p90 and p99 of millisecond samples;
/// returns the p50.
pub fn stats(label: &str, mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let p50 = pct(&v, 0.5);
    println!(
        "{label:<48} n={:<4} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms",
        v.len(),
        p50,
        pct(&v, 0.9),
        pct(&v, 0.99)
    );
    p50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_units() {
        assert_eq!(to_ms("250.00us"), Some(0.25));
        assert_eq!(to_ms("1.50ms"), Some(1.5));
        assert_eq!(to_ms("2.00s"), Some(2000.0));
        assert_eq!(to_ms("x"), None);
    }
}
