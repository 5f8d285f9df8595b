//! The daemon's shared state: configuration and clients, what ZooKeeper
//! wants on this node ([`Desired`], kept by the watch), and one [`Handle`]
//! per container bismuthd knows of (what it made and last saw, changed only
//! by that container's reconcile; read by the HTTP handlers).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use bismuth_containerd::Puller;
use bismuth_controller::Controller;
use bismuth_model::{ContainerState, FunctionDefinition, FunctionId};
use bismuth_zk::Zk;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::Config;
use crate::files::Files;
use crate::net::Net;
use crate::reconcile::Key;
use crate::runtime::Runtime;
use crate::status::StatusReporter;

/// What an invocation needs to reach a Running container.
#[derive(Debug)]
pub struct Target {
    pub function_id: FunctionId,
    pub def: FunctionDefinition,
    pub net: Net,
    /// The runner's socket on the host (Executable mode).
    pub runner_socket: PathBuf,
    /// One permit per request it may serve at once (`concurrency`).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Requests waiting for a permit now.
    pub waiting: std::sync::atomic::AtomicU64,
}

impl Target {
    /// What an invocation of `def`'s container needs.
    pub fn new(
        function_id: FunctionId,
        def: FunctionDefinition,
        net: Net,
        runner_socket: PathBuf,
    ) -> Target {
        let permits = def.concurrency() as usize;
        Target {
            function_id,
            def,
            net,
            runner_socket,
            slots: Arc::new(tokio::sync::Semaphore::new(permits)),
            waiting: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// What the reconcile of one container knows about it. Only that reconcile
/// (one at a time per container) changes it.
#[derive(Debug, Default)]
pub struct Actual {
    /// The function, its network and its svcprovider token, once read.
    pub function: Option<(FunctionId, FunctionDefinition)>,
    pub net: Option<Net>,
    /// Pid of the task's process this daemon last saw running (0: none).
    pub pid: u32,
    /// When that process was first seen running (for the restart backoff).
    pub running_since: Option<std::time::Instant>,
    /// When that process started (for the readiness log line).
    pub started_at: Option<std::time::Instant>,
    /// Failures in a row (exits or failed starts).
    pub failures: u32,
    /// No new start before this instant.
    pub next_start: Option<std::time::Instant>,
    /// Whether "still waiting" was logged for the current start.
    pub waiting_logged: bool,
    /// How long each phase of the current start took.
    pub phases: Phases,
}

/// The phases of one container start (DESIGN.md's cold-start phases).
#[derive(Clone, Debug, Default)]
pub struct Phases {
    /// When the start began (its first reconcile).
    pub began: Option<std::time::Instant>,
    pub image: Option<std::time::Duration>,
    pub network: Option<std::time::Duration>,
    pub svcprovider: Option<std::time::Duration>,
    pub create: Option<std::time::Duration>,
}

impl Phases {
    /// Each phase by name with its duration: the ones recorded here, then
    /// `ready` (process start → Running) and `total` (first reconcile →
    /// Running) as measured at the end.
    pub fn named(
        &self,
        ready: Option<std::time::Duration>,
        total: Option<std::time::Duration>,
    ) -> [(&'static str, Option<std::time::Duration>); 6] {
        [
            ("image", self.image),
            ("network", self.network),
            ("svcprovider", self.svcprovider),
            ("create", self.create),
            ("ready", ready),
            ("total", total),
        ]
    }
}

/// One container bismuthd runs or has to remove.
#[derive(Debug)]
pub struct Handle {
    pub cid: Uuid,
    pub files: Files,
    /// The state last reported.
    pub state: watch::Sender<ContainerState>,
    /// Set once the container serves: what invocations need.
    pub target: OnceLock<Arc<Target>>,
    /// Why it last failed, for people.
    pub reason: Mutex<Option<String>>,
    /// Whether the current process has answered a request (the first one is "cold").
    pub served: std::sync::atomic::AtomicBool,
    /// Its requests in flight and their integral (for the autoscaler).
    pub load: Arc<bismuth_metrics::LoadMeter>,
    pub actual: tokio::sync::Mutex<Actual>,
}

impl Handle {
    pub fn state(&self) -> ContainerState {
        *self.state.borrow()
    }

    /// Why it last failed.
    pub fn reason_lock(&self) -> MutexGuard<'_, Option<String>> {
        lock(&self.reason)
    }

    /// The target, while the container is Running.
    pub fn running_target(&self) -> Option<Arc<Target>> {
        (self.state() == ContainerState::Running)
            .then(|| self.target.get().cloned())
            .flatten()
    }
}

/// What ZooKeeper wants on this node, as the watch last read it.
#[derive(Debug, Default)]
pub struct Desired {
    /// False until the children of `/node/{ip}/container` were read once:
    /// nothing is removed for being unwanted before that.
    pub known: bool,
    pub containers: HashSet<Uuid>,
}

/// Shared daemon state.
#[derive(Debug)]
pub struct Node {
    pub cfg: Config,
    pub zk: Zk,
    pub rt: Runtime,
    pub puller: Puller,
    pub status: StatusReporter,
    pub firewall: crate::firewall::Firewall,
    pub svc: crate::svc::Supervisor,
    pub ctl: Controller<Key>,
    pub metrics: crate::metrics::NodeMetrics,
    pub calls: crate::calls::CallLog,
    /// Set with `--otlp-endpoint`: spans of invocations and container starts.
    pub tracer: Option<bismuth_daemon::otel::Tracer>,
    /// gVisor, prepared at the first sandboxed container.
    sandbox: std::sync::OnceLock<Result<crate::sandbox::Sandbox, String>>,
    desired: Mutex<Desired>,
    /// The containers: changed under this lock (rarely: a container comes
    /// or goes), then published whole to `published`, which every request
    /// reads without a lock.
    containers: Mutex<HashMap<Uuid, Arc<Handle>>>,
    published: ArcSwap<HashMap<Uuid, Arc<Handle>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    pub fn new(cfg: Config, zk: Zk, rt: Runtime, puller: Puller) -> Arc<Node> {
        let status = StatusReporter::start(zk.clone(), cfg.node_ip);
        let firewall = crate::firewall::Firewall::new(&cfg.instance, cfg.egress, cfg.pool.cidr());
        let ctl = Controller::new("bismuthd");
        let svc = crate::svc::Supervisor::new(cfg.svc.clone(), ctl.clone());
        let tracer = cfg.otlp_endpoint.as_ref().and_then(|e| {
            bismuth_daemon::otel::Tracer::new("bismuthd", e)
                .map_err(|e| tracing::error!(error = %e, "spans are not exported"))
                .ok()
        });
        Arc::new(Node {
            firewall,
            svc,
            cfg,
            zk,
            rt,
            puller,
            status,
            ctl,
            metrics: crate::metrics::NodeMetrics::new(),
            calls: crate::calls::CallLog::default(),
            tracer,
            desired: Mutex::default(),
            containers: Mutex::default(),
            published: ArcSwap::default(),
            sandbox: std::sync::OnceLock::new(),
        })
    }

    /// What sandboxed (`"isolation": "sandbox"`) containers are created
    /// with; why not when this node cannot run them.
    pub fn sandbox(&self) -> Result<&crate::sandbox::Sandbox, String> {
        self.sandbox
            .get_or_init(|| {
                crate::sandbox::Sandbox::prepare(&self.cfg.runsc, &self.cfg.run_dir)
                    .map_err(|e| format!("this node cannot run \"isolation\": \"sandbox\": {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The container `cid`, if this node knows it (no lock: every
    /// invocation asks).
    pub fn get(&self, cid: Uuid) -> Option<Arc<Handle>> {
        self.published.load().get(&cid).cloned()
    }

    /// The container `cid`, made known if it was not.
    pub fn get_or_insert(&self, cid: Uuid) -> Arc<Handle> {
        if let Some(h) = self.get(cid) {
            return h;
        }
        let mut all = lock(&self.containers);
        let h = Arc::clone(all.entry(cid).or_insert_with(|| {
            Arc::new(Handle {
                cid,
                files: Files::new(&self.cfg.state_dir, &self.cfg.run_dir, cid),
                state: watch::Sender::new(ContainerState::Invalid),
                target: OnceLock::new(),
                reason: Mutex::new(None),
                served: std::sync::atomic::AtomicBool::new(false),
                load: Arc::default(),
                actual: tokio::sync::Mutex::default(),
            })
        }));
        self.published.store(Arc::new(all.clone()));
        h
    }

    /// Forgets `cid` (after it was removed).
    pub fn forget(&self, cid: Uuid) {
        let mut all = lock(&self.containers);
        if all.remove(&cid).is_some() {
            self.published.store(Arc::new(all.clone()));
        }
    }

    /// Every container this node knows.
    pub fn all(&self) -> Vec<Arc<Handle>> {
        self.published.load().values().cloned().collect()
    }

    /// Whether ZooKeeper wants `cid` here: `None` while not known yet.
    pub fn wanted(&self, cid: Uuid) -> Option<bool> {
        let d = lock(&self.desired);
        d.known.then(|| d.containers.contains(&cid))
    }

    /// Every container ZooKeeper wants here.
    pub fn desired(&self) -> HashSet<Uuid> {
        lock(&self.desired).containers.clone()
    }

    /// Replaces the wanted set (a full read); returns the keys that changed.
    pub fn set_desired(&self, containers: HashSet<Uuid>) -> Vec<Uuid> {
        let mut d = lock(&self.desired);
        let changed = d
            .containers
            .symmetric_difference(&containers)
            .copied()
            .collect();
        d.containers = containers;
        d.known = true;
        changed
    }

    /// Adds or removes one wanted container (a watch event).
    pub fn set_wanted(&self, cid: Uuid, wanted: bool) {
        let mut d = lock(&self.desired);
        if wanted {
            d.containers.insert(cid);
        } else {
            d.containers.remove(&cid);
        }
    }

    /// Records and reports a container's new state (once per change).
    pub fn set_state(&self, h: &Handle, state: ContainerState) {
        if h.state.send_replace(state) != state {
            self.status.report(h.cid, state);
        }
    }

    /// Writes every container's state again (after ZooKeeper was away).
    pub fn resend_statuses(&self) {
        for h in self.all() {
            let state = h.state();
            if state != ContainerState::Invalid {
                self.status.report(h.cid, state);
            }
        }
    }
}
