//! The live figures the dashboard (`/ui/`) and `bismuthctl top` show,
//! served as `GET /stats` and `GET /stats/function/{id}`: per function its
//! status, instances, request rate, error ratio, p50/p99 latency and cold
//! starts; per node its liveness, capacity, use and request rate; and each
//! function's last ten minutes as points for charts.
//!
//! Read from the daemons' own `/metrics` (every registered frontend's
//! requests and durations, every alive bismuthd's cold invocations and
//! invocations), every [`INTERVAL`], by a sampler that runs only while
//! somebody asks: the first request starts it, and it stops [`IDLE_STOP`]
//! after the last. Several api processes sample independently; nothing of
//! it goes to ZooKeeper. Prometheus (which `start_all.sh` runs) keeps the
//! long history.

pub mod prom;
pub mod series;

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bismuth_model::{ContainerState, FunctionId};
use serde::Serialize;
use tracing::debug;

use crate::controller::view::View;
use crate::state::AppState;
use series::{add_bucket, Counts, Figures, Reading};

/// How often the daemons are read.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// The summary's figures cover this many intervals (10 s).
const WINDOW: usize = 5;
/// Points kept per function (ten minutes).
const KEEP: usize = 300;
/// The sampler stops this long after the last request for figures.
const IDLE_STOP: Duration = Duration::from_secs(15 * 60);
/// How long one daemon may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

/// The sampler and what it has seen.
#[derive(Debug, Default)]
pub struct Stats {
    state: Mutex<State>,
    asked: Mutex<Option<Instant>>,
    running: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// When sampling began (the figures count from then).
    since: Option<SystemTime>,
    /// Each source's last reading, by address.
    previous: HashMap<String, Reading>,
    /// Each node's last invocation count, by address.
    previous_node: HashMap<String, u64>,
    /// Running totals per function, over all sources.
    totals: HashMap<FunctionId, Counts>,
    /// Running totals of invocations per node.
    node_totals: HashMap<Ipv4Addr, u64>,
    /// The totals at the last few samples, newest last.
    recent: VecDeque<Snapshot>,
    /// Each function's points, oldest first.
    history: HashMap<FunctionId, VecDeque<Point>>,
    /// Sources that did not answer the last sample.
    unreachable: Vec<String>,
    frontends: usize,
    nodes: usize,
}

#[derive(Debug)]
struct Snapshot {
    at: Instant,
    functions: HashMap<FunctionId, Counts>,
    nodes: HashMap<Ipv4Addr, u64>,
}

/// One interval of a function.
#[derive(Clone, Copy, Debug, Serialize, schemars::JsonSchema)]
pub struct Point {
    /// End of the interval, milliseconds since the Unix epoch.
    pub t: u64,
    #[serde(flatten)]
    pub figures: Figures,
    /// Instances wanted and Running then.
    pub desired: u32,
    pub running: u32,
}

/// `GET /stats`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Seconds between samples.
    pub interval_s: f64,
    /// Seconds the rates and latencies cover (0 until two samples exist).
    pub window_s: f64,
    /// When sampling began (RFC 3339); counts start there.
    pub since: Option<String>,
    /// Frontends and nodes read; those that did not answer.
    pub frontends: usize,
    pub nodes_read: usize,
    pub unreachable: Vec<String>,
    pub functions: Vec<FunctionStats>,
    pub nodes: Vec<NodeStats>,
}

/// One function in [`Summary`].
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FunctionStats {
    pub id: FunctionId,
    pub image: String,
    /// Its routed hostnames.
    pub routes: Vec<String>,
    /// `Running`, `Starting`, `Failed` (some instance is), or `Idle`
    /// (scaled to zero).
    pub status: &'static str,
    /// Why an instance failed, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub desired: u32,
    pub running: u32,
    /// Over the window.
    #[serde(flatten)]
    pub figures: Figures,
    /// Requests in flight at the frontends now.
    pub in_flight: u64,
    /// Requests and cold invocations since sampling began.
    pub requests: u64,
    pub cold_starts: u64,
}

/// One node in [`Summary`].
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NodeStats {
    #[serde(flatten)]
    pub node: crate::cluster::NodeView,
    /// Invocations per second through its bismuthd, over the window.
    pub rate: f64,
}

/// `GET /stats/function/{id}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct History {
    pub id: FunctionId,
    pub interval_s: f64,
    /// Its figures now, as in [`Summary`].
    pub now: Option<FunctionStats>,
    /// Oldest first; at most ten minutes.
    pub points: Vec<Point>,
}

impl Stats {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Somebody wants figures: keeps the sampler running (starting it).
    pub fn touch(&self, app: &AppState) {
        *self.asked.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if !self.running.swap(true, Ordering::AcqRel) {
            let app = app.clone();
            tokio::spawn(async move { sample_while_asked(app).await });
        }
    }

    fn idle(&self) -> bool {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(true, |at| at.elapsed() > IDLE_STOP)
    }

    /// The summary over the view's functions and `nodes`.
    pub fn summary(&self, view: &View, nodes: Vec<crate::cluster::NodeView>) -> Summary {
        let state = self.lock();
        let window = state.window();
        let mut functions: Vec<FunctionStats> = view
            .functions
            .keys()
            .filter_map(|id| state.function(view, *id, window))
            .collect();
        functions.sort_by_key(|f| f.id);
        let nodes = nodes
            .into_iter()
            .map(|node| {
                let rate = match window {
                    Some((o, n, seconds)) => {
                        let now = n.nodes.get(&node.ip).copied().unwrap_or(0);
                        let then = o.nodes.get(&node.ip).copied().unwrap_or(0);
                        now.saturating_sub(then) as f64 / seconds
                    }
                    None => 0.0,
                };
                NodeStats { node, rate }
            })
            .collect();
        Summary {
            interval_s: INTERVAL.as_secs_f64(),
            window_s: window.map_or(0.0, |w| w.2),
            since: state
                .since
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            frontends: state.frontends,
            nodes_read: state.nodes,
            unreachable: state.unreachable.clone(),
            functions,
            nodes,
        }
    }

    /// One function's figures now and its points.
    pub fn history(&self, view: &View, id: FunctionId) -> History {
        let state = self.lock();
        History {
            id,
            interval_s: INTERVAL.as_secs_f64(),
            now: state.function(view, id, state.window()),
            points: state
                .history
                .get(&id)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// Folds one sample's readings in.
    fn record(
        &self,
        view: &View,
        frontends: Vec<(String, Option<Reading>)>,
        nodes: Vec<NodeReading>,
    ) {
        let mut state = self.lock();
        let state = &mut *state;
        state.since.get_or_insert_with(SystemTime::now);
        state.frontends = frontends.len();
        state.nodes = nodes.len();
        state.unreachable.clear();
        for t in state.totals.values_mut() {
            t.in_flight = 0;
        }
        let mut seen = Vec::new();
        for (addr, reading) in frontends {
            let Some(reading) = reading else {
                state.unreachable.push(addr);
                continue;
            };
            fold(state, &addr, reading);
            seen.push(addr);
        }
        for n in nodes {
            let Some((reading, invocations)) = n.reading else {
                state.unreachable.push(n.addr);
                continue;
            };
            let before = state.previous_node.insert(n.addr.clone(), invocations);
            let delta = match before {
                Some(b) if invocations >= b => invocations - b,
                Some(_) => invocations,
                None => 0,
            };
            *state.node_totals.entry(n.ip).or_default() += delta;
            fold(state, &n.addr, reading);
            seen.push(n.addr);
        }
        // A source gone for good is forgotten (it would count from zero again).
        state
            .previous
            .retain(|a, _| seen.contains(a) || state.unreachable.contains(a));
        state.totals.retain(|f, _| view.functions.contains_key(f));

        let now = Instant::now();
        let t = unix_ms(SystemTime::now());
        let State {
            recent,
            history,
            totals,
            node_totals,
            ..
        } = state;
        // Each function's point for the interval since the last sample
        // (the first sample is only a baseline).
        if let Some(before) = recent.back() {
            let seconds = now.duration_since(before.at).as_secs_f64();
            for (id, f) in &view.functions {
                if f.def.is_none() {
                    continue;
                }
                let inst = instances(view, *id);
                let change = totals.get(id).map(|c| c.minus(before.functions.get(id)));
                let active = change
                    .as_ref()
                    .is_some_and(|c| c.requests > 0 || c.cold > 0);
                let points = history.entry(*id).or_default();
                if !active && inst.desired == 0 && inst.running == 0 && points.is_empty() {
                    continue;
                }
                points.push_back(Point {
                    t,
                    figures: change.map_or_else(Figures::default, |c| Figures::of(&c, seconds)),
                    desired: inst.desired,
                    running: inst.running,
                });
                while points.len() > KEEP {
                    points.pop_front();
                }
            }
        }
        recent.push_back(Snapshot {
            at: now,
            functions: totals.clone(),
            nodes: node_totals.clone(),
        });
        while recent.len() > WINDOW + 1 {
            recent.pop_front();
        }
        history.retain(|f, _| view.functions.contains_key(f));
    }

    fn reset(&self) {
        *self.lock() = State::default();
    }
}

impl State {
    /// The oldest and newest of the recent samples and the seconds between
    /// them, once there are two.
    fn window(&self) -> Option<(&Snapshot, &Snapshot, f64)> {
        let (o, n) = (self.recent.front()?, self.recent.back()?);
        let seconds = n.at.duration_since(o.at).as_secs_f64();
        (seconds > 0.0).then_some((o, n, seconds))
    }

    /// A function's figures over `window`; `None` if the view has no
    /// definition for it.
    fn function(
        &self,
        view: &View,
        id: FunctionId,
        window: Option<(&Snapshot, &Snapshot, f64)>,
    ) -> Option<FunctionStats> {
        let def = &view.functions.get(&id)?.def.as_ref()?.value;
        let inst = instances(view, id);
        let total = self.totals.get(&id);
        let figures = window
            .and_then(|(o, n, seconds)| {
                let change = n.functions.get(&id)?.minus(o.functions.get(&id));
                Some(Figures::of(&change, seconds))
            })
            .unwrap_or_default();
        Some(FunctionStats {
            id,
            image: def.image.clone(),
            routes: def.hostnames().collect(),
            status: inst.status(),
            reason: inst.reason,
            desired: inst.desired,
            running: inst.running,
            figures,
            in_flight: total.map_or(0, |t| t.in_flight),
            requests: total.map_or(0, |t| t.requests),
            cold_starts: total.map_or(0, |t| t.cold),
        })
    }
}

/// Adds one source's reading to the totals.
fn fold(state: &mut State, addr: &str, reading: Reading) {
    let previous = state.previous.get(addr);
    if previous.is_some() {
        for (f, cur) in &reading {
            let total = state.totals.entry(*f).or_default();
            total.add_since(previous.and_then(|p| p.get(f)), cur);
        }
    }
    for (f, cur) in &reading {
        if cur.in_flight > 0 {
            state.totals.entry(*f).or_default().in_flight += cur.in_flight;
        }
    }
    state.previous.insert(addr.to_owned(), reading);
}

/// A function's instances in the view.
#[derive(Debug, Default)]
struct InstanceCounts {
    desired: u32,
    running: u32,
    starting: u32,
    failed: u32,
    reason: Option<String>,
}

impl InstanceCounts {
    fn status(&self) -> &'static str {
        if self.failed > 0 {
            "Failed"
        } else if self.desired == 0 && self.running == 0 {
            "Idle"
        } else if self.running >= self.desired && self.starting == 0 {
            "Running"
        } else {
            "Starting"
        }
    }
}

fn instances(view: &View, id: FunctionId) -> InstanceCounts {
    let mut out = InstanceCounts::default();
    let Some(f) = view.functions.get(&id) else {
        return out;
    };
    if let Some(def) = &f.def {
        out.desired = def.value.desired(f.scale.as_ref().map(|s| s.value));
    }
    for b in f.backends.iter().flat_map(|b| b.value.iter()) {
        let c = view.containers.get(&b.container_id);
        match c.and_then(|c| c.state) {
            Some(ContainerState::Running) => out.running += 1,
            Some(ContainerState::Failed) => {
                out.failed += 1;
                out.reason = c.and_then(|c| c.reason.clone());
            }
            _ => out.starting += 1,
        }
    }
    out
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one node's bismuthd said: cold invocations per function, and all
/// its invocations.
struct NodeReading {
    ip: Ipv4Addr,
    addr: String,
    reading: Option<(Reading, u64)>,
}

/// Samples every [`INTERVAL`] until nobody asked for [`IDLE_STOP`].
async fn sample_while_asked(app: AppState) {
    let stats = app.stats();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if stats.idle() {
            stats.running.store(false, Ordering::Release);
            // Asked again meanwhile: go on (touch saw it running).
            if !stats.idle() && !stats.running.swap(true, Ordering::AcqRel) {
                continue;
            }
            stats.reset();
            debug!("figures sampler stopped: nobody asked for a while");
            return;
        }
        if let Err(e) = sample(&app).await {
            debug!(error = %e, "no figures this interval");
        }
    }
}

async fn sample(app: &AppState) -> Result<(), crate::error::ApiError> {
    let zk = app.zk()?;
    let sources =
        crate::controller::load::sources(zk, app.view(), app.config().bismuthd_port).await?;
    let frontends =
        futures_util::future::join_all(sources.frontends.into_iter().map(|addr| async {
            let text = scrape(app, &addr).await;
            (addr, text.map(|t| frontend_reading(&t)))
        }));
    let nodes =
        futures_util::future::join_all(sources.nodes.into_iter().map(|(ip, addr)| async move {
            let text = scrape(app, &addr).await;
            NodeReading {
                ip,
                reading: text.map(|t| node_reading(&t)),
                addr,
            }
        }));
    let (frontends, nodes) = tokio::join!(frontends, nodes);
    let view = app.view().lock();
    app.stats().record(&view, frontends, nodes);
    Ok(())
}

/// `GET http://{addr}/metrics`, `None` if it does not answer in time.
async fn scrape(app: &AppState, addr: &str) -> Option<String> {
    let body = crate::controller::load::get_within(app.http(), addr, "/metrics", SCRAPE_TIMEOUT)
        .await
        .ok()??;
    String::from_utf8(body.into()).ok()
}

fn function_of(s: &prom::Sample<'_>) -> Option<FunctionId> {
    s.label("function")?.parse().ok()
}

/// A frontend's requests, errors, durations and in-flight requests.
fn frontend_reading(text: &str) -> Reading {
    let mut out = Reading::new();
    for s in prom::parse(text) {
        let Some(f) = function_of(&s) else { continue };
        let n = s.value.max(0.0) as u64;
        match s.name {
            "bismuth_fe_requests_total" => {
                let c = out.entry(f).or_default();
                c.requests += n;
                if s.label("code")
                    .and_then(|c| c.parse::<u16>().ok())
                    .is_some_and(|c| c >= 500)
                {
                    c.errors += n;
                }
            }
            "bismuth_fe_request_duration_seconds_bucket" => {
                let le = match s.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                add_bucket(&mut out.entry(f).or_default().buckets, le, n);
            }
            "bismuth_fe_in_flight_requests" => out.entry(f).or_default().in_flight += n,
            _ => {}
        }
    }
    out
}

/// A node's cold invocations per function, and its invocations in all.
fn node_reading(text: &str) -> (Reading, u64) {
    let mut out = Reading::new();
    let mut invocations = 0;
    for s in prom::parse(text) {
        match s.name {
            "bismuth_cold_invocations_total" => {
                if let Some(f) = function_of(&s) {
                    out.entry(f).or_default().cold += s.value.max(0.0) as u64;
                }
            }
            "bismuth_invocations_total" => invocations += s.value.max(0.0) as u64,
            _ => {}
        }
    }
    (out, invocations)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "6f1b1a54-0a36-4d38-9d0f-0e0c1b2a3c4d";

    fn fe(requests: u64, errors: u64) -> String {
        format!(
            "bismuth_fe_requests_total{{function=\"{F}\",code=\"200\"}} {}\n\
             bismuth_fe_requests_total{{function=\"{F}\",code=\"502\"}} {errors}\n\
             bismuth_fe_request_duration_seconds_bucket{{function=\"{F}\",le=\"0.005\"}} {}\n\
             bismuth_fe_request_duration_seconds_bucket{{function=\"{F}\",le=\"+Inf\"}} {requests}\n\
             bismuth_fe_in_flight_requests{{function=\"{F}\"}} 2\n",
            requests - errors,
            requests
        )
    }

    #[test]
    fn reads_a_frontends_metrics() {
        let r = frontend_reading(&fe(10, 1));
        let c = &r[&F.parse().unwrap()];
        assert_eq!((c.requests, c.errors, c.in_flight), (10, 1, 2));
        assert_eq!(c.buckets, vec![(0.005, 10), (f64::INFINITY, 10)]);
    }

    #[test]
    fn reads_a_nodes_metrics() {
        let text = format!(
            "bismuth_cold_invocations_total{{function=\"{F}\"}} 3\n\
             bismuth_invocations_total{{function=\"{F}\",code=\"200\"}} 7\n\
             bismuth_invocations_total{{function=\"{F}\",code=\"500\"}} 1\n"
        );
        let (r, n) = node_reading(&text);
        assert_eq!((r[&F.parse().unwrap()].cold, n), (3, 8));
    }

    #[test]
    fn samples_become_totals_and_points() {
        let id: FunctionId = F.parse().unwrap();
        let mut view = View::default();
        let def: bismuth_model::FunctionDefinition = serde_json::from_str(
            r#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Executable": ["/bin/cat"]}}"#,
        )
        .unwrap();
        view.functions.insert(
            id,
            crate::controller::view::FunctionInfo {
                def: Some(bismuth_zk::Versioned {
                    value: def,
                    version: 0,
                }),
                ..Default::default()
            },
        );
        let stats = Stats::default();
        let read = |n, e| vec![("fe:1".to_owned(), Some(frontend_reading(&fe(n, e))))];
        stats.record(&view, read(100, 0), vec![]);
        stats.record(&view, read(150, 5), vec![]);
        let s = stats.summary(&view, vec![]);
        let f = &s.functions[0];
        assert_eq!(
            (f.requests, f.status, f.desired, f.running),
            (50, "Starting", 1, 0)
        );
        assert!(f.figures.rate > 0.0);
        assert!((f.figures.error_ratio - 0.1).abs() < 1e-9);
        let h = stats.history(&view, id);
        assert_eq!(h.points.len(), 1);
        assert_eq!(h.points[0].desired, 1);
        // The frontend restarted: counting from zero, nothing lost.
        stats.record(&view, read(20, 0), vec![]);
        assert_eq!(stats.summary(&view, vec![]).functions[0].requests, 70);
    }
}
