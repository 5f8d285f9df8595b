//! Load collection for the autoscaler, on the leader: every [`TICK`] it asks
//! every registered frontend (`/frontend/{id}`) and every alive node's
//! bismuthd for `GET /load`, turns two reports of a source into each
//! function's (frontends) and instance's (nodes) average concurrency over
//! the tick, and runs each autoscaled function's [`Scaler`]. The decisions
//! and what each instance last reported live on the [`Board`], where the
//! function's reconcile reads them: the reconcile is the one writer of
//! `/function/{id}/scale` and the one that removes instances (only idle
//! ones, nothing in flight). Nothing per request reaches ZooKeeper.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bismuth_controller::Controller;
use bismuth_model::{paths, ContainerState, FrontendRecord, FunctionId, LoadReport};
use bismuth_zk::{Zk, ZkError};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use super::autoscale::{Bounds, Observation, Scaler, Windows};
use super::view::SharedView;

/// How often load is collected and the scalers run.
pub const TICK: Duration = Duration::from_secs(1);
/// How long one source may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_millis(800);
/// What an instance last reported counts this long.
const FRESH: Duration = Duration::from_secs(5);

/// What an instance last reported.
#[derive(Clone, Copy, Debug)]
struct Seen {
    in_flight: u64,
    idle: Duration,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Each source's previous report (by address).
    previous: HashMap<String, LoadReport>,
    instances: HashMap<Uuid, Seen>,
    scalers: HashMap<FunctionId, Scaler>,
    decisions: HashMap<FunctionId, u32>,
}

/// The autoscaler's state, shared with the reconciles.
#[derive(Debug, Default)]
pub struct Board {
    state: Mutex<State>,
    windows: Windows,
}

impl Board {
    pub fn new(windows: Windows) -> Board {
        Board {
            state: Mutex::default(),
            windows,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The scaler's last decision for `function`, if it made one.
    pub fn decision(&self, function: FunctionId) -> Option<u32> {
        self.lock().decisions.get(&function).copied()
    }

    /// A frontend woke `function`: at least one instance, now.
    pub fn woken(&self, function: FunctionId, bounds: Bounds) -> u32 {
        let mut state = self.lock();
        let n = state.scalers.entry(function).or_default().woken(bounds);
        state.decisions.insert(function, n);
        n
    }

    /// Whether instance `cid` may be removed for a scale-down: its node
    /// reported it lately with nothing in flight and idle for `idle_timeout`.
    pub fn idle(&self, cid: Uuid, idle_timeout: Duration) -> bool {
        self.lock()
            .instances
            .get(&cid)
            .is_some_and(|s| s.at.elapsed() < FRESH && s.in_flight == 0 && s.idle >= idle_timeout)
    }
}

/// Collects load and runs the scalers every [`TICK`] until `stop`; every
/// function whose decision or instance count is off is enqueued.
pub async fn run(
    zk: Zk,
    view: std::sync::Arc<SharedView>,
    board: std::sync::Arc<Board>,
    bismuthd_port: u16,
    ctl: Controller<FunctionId>,
    stop: CancellationToken,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(300)));
    connector.set_nodelay(true);
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Nothing autoscales: ask nobody (and start afresh when something does).
        let any = view
            .lock()
            .functions
            .values()
            .any(|f| f.def.as_ref().is_some_and(|d| d.value.autoscaled()));
        if !any {
            board.lock().previous.clear();
            continue;
        }
        let sources = match sources(&zk, &view, bismuthd_port).await {
            Ok(s) => s.all(),
            Err(e) => {
                debug!(error = %e, "cannot list load sources this tick");
                continue;
            }
        };
        let reports =
            futures_util::future::join_all(sources.iter().map(|addr| ask(&http, addr.clone())))
                .await;
        let fresh: Vec<(String, LoadReport)> = sources
            .into_iter()
            .zip(reports)
            .filter_map(|(addr, r)| r.map(|r| (addr, r)))
            .collect();
        for f in step(&board, &view, fresh, Instant::now()) {
            ctl.enqueue(f);
        }
    }
}

/// Where load and metrics are read: every registered frontend and every
/// alive node's bismuthd, as `host:port`.
#[derive(Debug, Default)]
pub struct Sources {
    pub frontends: Vec<String>,
    pub nodes: Vec<(std::net::Ipv4Addr, String)>,
}

impl Sources {
    /// Frontends and nodes alike.
    pub fn all(self) -> Vec<String> {
        let mut out = self.frontends;
        out.extend(self.nodes.into_iter().map(|(_, addr)| addr));
        out
    }
}

/// Every frontend's and alive node's `host:port`.
pub async fn sources(zk: &Zk, view: &SharedView, bismuthd_port: u16) -> Result<Sources, ZkError> {
    let ids = zk.children_opt(paths::FRONTENDS).await?;
    let records = zk
        .get_many(
            &ids.iter()
                .filter_map(|c| c.parse().ok())
                .map(paths::frontend)
                .collect::<Vec<_>>(),
        )
        .await?;
    let frontends = records
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_slice::<FrontendRecord>(&r.value).ok())
        .map(|r| r.addr)
        .collect();
    let nodes = view
        .lock()
        .nodes
        .iter()
        .filter(|(_, n)| n.alive())
        .map(|(ip, _)| (*ip, format!("{ip}:{bismuthd_port}")))
        .collect();
    Ok(Sources { frontends, nodes })
}

/// One source's report, `None` if it does not answer in time.
async fn ask(http: &Client<HttpConnector, Empty<Bytes>>, addr: String) -> Option<LoadReport> {
    match get_within(http, &addr, "/load", ASK_TIMEOUT).await {
        Ok(body) => serde_json::from_slice::<LoadReport>(&body?).ok(),
        Err(Elapsed) => {
            warn!(source = addr, "no load report within {ASK_TIMEOUT:?}");
            None
        }
    }
}

/// The answer did not come in time.
#[derive(Debug)]
pub struct Elapsed;

/// `GET http://{addr}{path}`'s body within `timeout`; `Ok(None)` when it
/// cannot be reached or does not answer 2xx. Load reports and the
/// dashboard's scrapes of `/metrics` both read the daemons this way.
pub async fn get_within(
    http: &Client<HttpConnector, Empty<Bytes>>,
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<Option<Bytes>, Elapsed> {
    let fetch = async {
        let uri: http::Uri = format!("http://{addr}{path}").parse().ok()?;
        let resp = http.get(uri).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        Some(resp.into_body().collect().await.ok()?.to_bytes())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| Elapsed)
}

/// Per function, what one tick saw.
#[derive(Debug, Default)]
struct TickLoad {
    frontends: f64,
    nodes: f64,
    active: bool,
}

/// Applies one tick's reports; the functions to reconcile.
fn step(
    board: &Board,
    view: &SharedView,
    reports: Vec<(String, LoadReport)>,
    now: Instant,
) -> Vec<FunctionId> {
    let mut guard = board.lock();
    let state = &mut *guard;
    let mut seen: HashMap<FunctionId, TickLoad> = HashMap::new();
    let mut answered = HashSet::new();
    for (addr, report) in reports {
        let previous = state.previous.remove(&addr);
        let previous = previous.as_ref();
        let dt = previous
            .map(|p| report.uptime_s - p.uptime_s)
            .filter(|dt| *dt > 0.0);
        for f in &report.functions {
            let s = seen.entry(f.function).or_default();
            let before =
                previous.and_then(|p| p.functions.iter().find(|x| x.function == f.function));
            let (busy0, req0) = before.map_or((0.0, 0), |b| (b.busy_s, b.requests));
            if let Some(dt) = dt {
                s.frontends += ((f.busy_s - busy0) / dt).max(0.0);
            } else {
                s.frontends += f.in_flight as f64;
            }
            s.active |= f.in_flight > 0 || f.requests > req0;
        }
        for i in &report.instances {
            let s = seen.entry(i.function).or_default();
            let before = previous.and_then(|p| {
                p.instances
                    .iter()
                    .find(|x| x.container_id == i.container_id)
            });
            let (busy0, req0) = before.map_or((0.0, 0), |b| (b.busy_s, b.requests));
            if let Some(dt) = dt {
                s.nodes += ((i.busy_s - busy0) / dt).max(0.0);
            } else {
                s.nodes += i.in_flight as f64;
            }
            s.active |= i.in_flight > 0 || (before.is_some() && i.requests > req0);
            state.instances.insert(
                i.container_id,
                Seen {
                    in_flight: i.in_flight,
                    idle: Duration::from_secs_f64(i.idle_s.max(0.0)),
                    at: now,
                },
            );
        }
        answered.insert(addr.clone());
        state.previous.insert(addr, report);
    }
    state.previous.retain(|a, _| answered.contains(a));
    state
        .instances
        .retain(|_, s| now.duration_since(s.at) < FRESH);

    let view = view.lock();
    let mut touched = Vec::new();
    let mut autoscaled = HashSet::new();
    for (id, f) in &view.functions {
        let (Some(def), Some(backends)) = (f.def.as_ref(), f.backends.as_ref()) else {
            continue;
        };
        let def = &def.value;
        if !def.autoscaled() {
            continue;
        }
        autoscaled.insert(*id);
        let bounds = Bounds {
            min: def.min(),
            max: def.max_instances,
            concurrency: def.concurrency(),
            idle_timeout: def.idle_timeout(),
        };
        let running = backends
            .value
            .iter()
            .filter(|b| {
                view.containers.get(&b.container_id).and_then(|c| c.state)
                    == Some(ContainerState::Running)
            })
            .count() as u32;
        let s = seen.remove(id).unwrap_or_default();
        // Idle for as long as its most recently busy instance has been.
        let idle_for = if s.active {
            Duration::ZERO
        } else {
            backends
                .value
                .iter()
                .map(|b| {
                    state
                        .instances
                        .get(&b.container_id)
                        .map_or(Duration::ZERO, |i| i.idle)
                })
                .min()
                .unwrap_or(Duration::MAX)
        };
        let observation = Observation {
            concurrency: s.frontends.max(s.nodes),
            idle_for,
        };
        let decided = state.scalers.entry(*id).or_default().decide(
            now,
            board.windows,
            bounds,
            running,
            observation,
        );
        if let Some(n) = decided {
            state.decisions.insert(*id, n);
            let stored = def.desired(f.scale.as_ref().map(|s| s.value));
            if n != stored || backends.value.len() as u32 != n {
                touched.push(*id);
            }
        }
    }
    state.scalers.retain(|id, _| autoscaled.contains(id));
    state.decisions.retain(|id, _| autoscaled.contains(id));
    touched
}
