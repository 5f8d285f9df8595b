//! bismuthd's `/metrics` (DESIGN.md, "Observability"): containers by
//! state, the phases of every container start, restarts and invocations
//! per function, per-function CPU seconds and memory from the containers'
//! cgroups (what a billing system reads), the reconcile loop's counters,
//! and the process metrics.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bismuth_metrics::{
    histogram_family, ControllerMetrics, Counter, EncodeLabelSet, Family, FunctionCode,
    FunctionLabel, Gauge, HistogramFamily, Id, Metrics,
};
use bismuth_model::{ContainerState, FunctionId};
use uuid::Uuid;

use crate::node::Phases;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// Every metric bismuthd exports.
#[derive(Debug)]
pub struct NodeMetrics {
    metrics: Metrics,
    containers: Family<StateLabel, Gauge>,
    start: HistogramFamily<PhaseLabel>,
    restarts: Family<FunctionLabel, Counter>,
    invocations: Family<FunctionCode, Counter>,
    cold: Family<FunctionLabel, Counter>,
    cpu: Family<FunctionLabel, Counter<f64, AtomicU64>>,
    memory: Family<FunctionLabel, Gauge>,
    controller: ControllerMetrics,
    /// CPU seconds already counted per container.
    cpu_seen: Mutex<HashMap<Uuid, f64>>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let metrics = Metrics::new();
        let containers = Family::default();
        let start = histogram_family();
        let restarts = Family::default();
        let invocations = Family::default();
        let cold = Family::default();
        let cpu = Family::default();
        let memory = Family::default();
        let controller = ControllerMetrics::new("bismuthd");
        metrics.register(|r| {
            r.register(
                "bismuth_containers",
                "Containers on this node by state",
                containers.clone(),
            );
            r.register(
                "bismuth_container_start_duration_seconds",
                "Container starts by phase: image, network, svcprovider, create, ready, total",
                start.clone(),
            );
            r.register(
                "bismuth_container_restarts",
                "Restarts after an exit or a failed start, by function",
                restarts.clone(),
            );
            r.register(
                "bismuth_invocations",
                "Invocations through this node by function and status code",
                invocations.clone(),
            );
            r.register(
                "bismuth_cold_invocations",
                "Invocations that were a container's first (they waited for its start), by function",
                cold.clone(),
            );
            r.register(
                "bismuth_function_cpu_seconds",
                "CPU time used by the function's containers on this node (cgroups)",
                cpu.clone(),
            );
            r.register(
                "bismuth_function_memory_bytes",
                "Memory the function's containers on this node use now (cgroups)",
                memory.clone(),
            );
            controller.register(r);
        });
        NodeMetrics {
            metrics,
            containers,
            start,
            restarts,
            invocations,
            cold,
            cpu,
            memory,
            controller,
            cpu_seen: Mutex::default(),
        }
    }

    /// A container start that reached Running: every phase it went through.
    pub fn started(&self, p: &Phases, ready: Option<Duration>, total: Option<Duration>) {
        for (phase, d) in p.named(ready, total) {
            if let Some(d) = d {
                self.start
                    .get_or_create(&PhaseLabel { phase })
                    .observe(d.as_secs_f64());
            }
        }
    }

    /// A container of `function` failed and will be restarted.
    pub fn restarted(&self, function: FunctionId) {
        self.restarts
            .get_or_create(&FunctionLabel {
                function: Id(function),
            })
            .inc();
    }

    /// One invocation answered with `code`; `cold` if it was its
    /// container's first.
    pub fn invoked(&self, function: FunctionId, code: u16, cold: bool) {
        self.invocations
            .get_or_create(&FunctionCode {
                function: Id(function),
                code,
            })
            .inc();
        if cold {
            self.cold
                .get_or_create(&FunctionLabel {
                    function: Id(function),
                })
                .inc();
        }
    }

    /// Adds what container `cid` of `function` used since the last look
    /// (at every scrape, and once more just before it is removed).
    pub fn account(&self, cid: Uuid, function: FunctionId) -> Option<u64> {
        let usage = cgroup_usage(cid)?;
        let mut seen = self.cpu_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let before = seen.insert(cid, usage.cpu_seconds).unwrap_or(0.0);
        if usage.cpu_seconds > before {
            self.cpu
                .get_or_create(&FunctionLabel {
                    function: Id(function),
                })
                .inc_by(usage.cpu_seconds - before);
        }
        Some(usage.memory_bytes)
    }

    /// Forgets a removed container's CPU bookkeeping.
    pub fn forget(&self, cid: Uuid) {
        self.cpu_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&cid);
    }

    /// Renders everything; `containers` are (id, function, state) now.
    pub fn render(
        &self,
        containers: &[(Uuid, Option<FunctionId>, ContainerState)],
        stats: &bismuth_controller::StatsSnapshot,
    ) -> String {
        let mut by_state: HashMap<&'static str, i64> = [
            ("starting", 0),
            ("running", 0),
            ("failed", 0),
            ("invalid", 0),
        ]
        .into();
        let mut memory: HashMap<FunctionId, i64> = HashMap::new();
        for (cid, function, state) in containers {
            let name = match state {
                ContainerState::Starting => "starting",
                ContainerState::Running => "running",
                ContainerState::Failed => "failed",
                ContainerState::Paused => "paused",
                ContainerState::Invalid => "invalid",
            };
            *by_state.entry(name).or_default() += 1;
            if let Some(f) = function {
                if let Some(bytes) = self.account(*cid, *f) {
                    *memory.entry(*f).or_default() += bytes as i64;
                }
            }
        }
        for (state, n) in by_state {
            self.containers.get_or_create(&StateLabel { state }).set(n);
        }
        self.memory.clear();
        for (f, bytes) in memory {
            self.memory
                .get_or_create(&FunctionLabel { function: Id(f) })
                .set(bytes);
        }
        self.controller.update(stats);
        self.metrics.render()
    }
}

/// A container's CPU time and memory from its cgroup (v2, else v1).
struct Usage {
    cpu_seconds: f64,
    memory_bytes: u64,
}

fn cgroup_usage(cid: Uuid) -> Option<Usage> {
    let read = |p: String| std::fs::read_to_string(p).ok();
    let v2 = format!("/sys/fs/cgroup/bismuth/{cid}");
    if let Some(stat) = read(format!("{v2}/cpu.stat")) {
        let usec: f64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        let mem = read(format!("{v2}/memory.current"))?.trim().parse().ok()?;
        return Some(Usage {
            cpu_seconds: usec / 1e6,
            memory_bytes: mem,
        });
    }
    let ns: f64 = read(format!(
        "/sys/fs/cgroup/cpuacct/bismuth/{cid}/cpuacct.usage"
    ))?
    .trim()
    .parse()
    .ok()?;
    let mem = read(format!(
        "/sys/fs/cgroup/memory/bismuth/{cid}/memory.usage_in_bytes"
    ))?
    .trim()
    .parse()
    .ok()?;
    Some(Usage {
        cpu_seconds: ns / 1e9,
        memory_bytes: mem,
    })
}
