//! The controller's picture of the cluster, kept by watches: every node
//! (schedulable, alive with its capacity, evacuating), every function
//! (definition, backends, rollout, with versions for the writes), and every
//! container (its function, state and failures). Loaded whole after each
//! (re)connect, then patched one znode per event, so deciding never
//! re-reads the cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use bismuth_model::{
    paths, unpack_backends, Backend, ContainerRecord, ContainerState, FunctionDefinition,
    FunctionId, NodeCapacity, NodeState, ScaleRecord,
};
use bismuth_zk::{Versioned, Zk, ZkError};
use uuid::Uuid;

use super::rollout::{self, Rollout};
use bismuth_model::placement::Candidate;

/// A node as the controller sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    /// Whether new instances may go there.
    pub enabled: bool,
    /// Version of `/node/{ip}` (placements check it).
    pub version: i32,
    /// What it announced while alive; `None` when dead.
    pub capacity: Option<NodeCapacity>,
    /// Drained with evacuation: its instances move away.
    pub evacuate: bool,
}

impl NodeInfo {
    pub fn alive(&self) -> bool {
        self.capacity.is_some()
    }
}

/// A function as the controller sees it.
#[derive(Clone, Debug, Default)]
pub struct FunctionInfo {
    pub def: Option<Versioned<FunctionDefinition>>,
    pub backends: Option<Versioned<Vec<Backend>>>,
    pub rollout: Option<Versioned<Rollout>>,
    /// The autoscaler's stored decision.
    pub scale: Option<Versioned<ScaleRecord>>,
    /// A frontend holds requests for it and asked for an instance.
    pub wake: bool,
}

/// A container as the controller sees it.
#[derive(Clone, Debug, Default)]
pub struct ContainerInfo {
    pub ip: Option<Ipv4Addr>,
    pub function: Option<FunctionId>,
    pub state: Option<ContainerState>,
    /// From its bismuthd's report: failures in a row and the last reason.
    pub failures: u32,
    pub reason: Option<String>,
}

/// Which functions an event concerns.
#[derive(Clone, Debug, PartialEq)]
pub enum Touched {
    None,
    Function(FunctionId),
    All,
}

/// What one watch event read from ZooKeeper, ready to apply to a view.
#[derive(Debug)]
pub enum Change {
    None,
    Function(FunctionId, Option<Versioned<FunctionDefinition>>),
    Backends(FunctionId, Option<Versioned<Vec<Backend>>>),
    Rollout(FunctionId, Option<Versioned<Rollout>>),
    Scale(FunctionId, Option<Versioned<ScaleRecord>>),
    Wake(FunctionId, bool),
    /// A node's (enabled, version) and, read after them, its containers
    /// (every placement bumps the version in the same transaction as its
    /// containers, so the version never runs ahead of the load it vouches
    /// for); `None` when the node is gone.
    Node(Ipv4Addr, Option<NodeRead>),
    Alive(Ipv4Addr, Option<NodeCapacity>),
    Evacuate(Ipv4Addr, bool),
    /// `None`: the container znode is gone; else its function.
    Container(Ipv4Addr, Uuid, Option<Option<FunctionId>>),
    Status(Ipv4Addr, Uuid, Option<ContainerState>),
    Report(Ipv4Addr, Uuid, Option<Vec<u8>>),
}

/// A node re-read: enabled, version, and (container, function, state) each.
pub type NodeRead = (
    bool,
    i32,
    Vec<(Uuid, Option<FunctionId>, Option<ContainerState>)>,
);

/// Reads what a change of `path` names.
pub async fn fetch(zk: &Zk, path: &str) -> Result<Change, ZkError> {
    use paths::Znode;
    let Some(znode) = paths::parse(path) else {
        return Ok(Change::None);
    };
    let raw = || zk.get_opt(path);
    Ok(match znode {
        Znode::Function(id) => Change::Function(id, raw().await?.as_ref().and_then(decode_def)),
        Znode::FunctionBackends(id) => {
            Change::Backends(id, raw().await?.as_ref().and_then(decode_backends))
        }
        Znode::FunctionRollout(id) => {
            Change::Rollout(id, raw().await?.as_ref().and_then(rollout::decode))
        }
        Znode::FunctionScale(id) => Change::Scale(id, raw().await?.as_ref().and_then(decode_scale)),
        Znode::FunctionWake(id) => Change::Wake(id, zk.exists(path).await?),
        Znode::Node(ip) => match raw().await? {
            None => Change::Node(ip, None),
            Some(node) => Change::Node(
                ip,
                Some((
                    NodeState::decode(&node.value) == Ok(NodeState::Enabled),
                    node.version,
                    read_containers(zk, ip).await?,
                )),
            ),
        },
        Znode::NodeAlive(ip) => Change::Alive(
            ip,
            raw()
                .await?
                .and_then(|a| serde_json::from_slice(&a.value).ok()),
        ),
        Znode::NodeEvacuate(ip) => Change::Evacuate(ip, zk.exists(path).await?),
        Znode::Container(ip, cid) => Change::Container(
            ip,
            cid,
            raw().await?.map(|r| {
                ContainerRecord::decode(&r.value)
                    .ok()
                    .map(|r| r.function_id)
            }),
        ),
        Znode::ContainerStatus(ip, cid) => Change::Status(
            ip,
            cid,
            raw().await?.and_then(|s| ContainerState::decode(&s.value)),
        ),
        Znode::ContainerReport(ip, cid) => Change::Report(ip, cid, raw().await?.map(|r| r.value)),
        Znode::NodeContainers(_) | Znode::Route(_) | Znode::Frontend(_) => Change::None,
    })
}

/// The containers of node `ip` with their functions and states.
async fn read_containers(
    zk: &Zk,
    ip: Ipv4Addr,
) -> Result<Vec<(Uuid, Option<FunctionId>, Option<ContainerState>)>, ZkError> {
    let cids: Vec<Uuid> = zk
        .children_opt(&paths::node_containers(ip))
        .await?
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let wanted: Vec<String> = cids
        .iter()
        .flat_map(|c| [paths::container(ip, *c), paths::container_status(ip, *c)])
        .collect();
    let data = zk.get_many(&wanted).await?;
    Ok(cids
        .iter()
        .enumerate()
        .filter_map(|(i, cid)| {
            let record = data[2 * i].as_ref()?;
            Some((
                *cid,
                ContainerRecord::decode(&record.value)
                    .ok()
                    .map(|r| r.function_id),
                data[2 * i + 1]
                    .as_ref()
                    .and_then(|s| ContainerState::decode(&s.value)),
            ))
        })
        .collect())
}

/// The whole picture.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub nodes: BTreeMap<Ipv4Addr, NodeInfo>,
    pub functions: HashMap<FunctionId, FunctionInfo>,
    pub containers: HashMap<Uuid, ContainerInfo>,
}

impl View {
    /// Reads everything with batched multi-reads.
    pub async fn load(zk: &Zk) -> Result<View, ZkError> {
        zk.ensure_bootstrapped().await?;
        let mut view = View::default();
        let ips: Vec<Ipv4Addr> = zk
            .children(paths::NODES)
            .await?
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let node_paths: Vec<String> = ips
            .iter()
            .flat_map(|ip| {
                [
                    paths::node(*ip),
                    paths::node_alive(*ip),
                    paths::node_evacuate(*ip),
                ]
            })
            .collect();
        let data = zk.get_many(&node_paths).await?;
        for (i, ip) in ips.iter().enumerate() {
            let Some(node) = &data[3 * i] else { continue };
            view.nodes.insert(
                *ip,
                NodeInfo {
                    enabled: NodeState::decode(&node.value) == Ok(NodeState::Enabled),
                    version: node.version,
                    capacity: data[3 * i + 1]
                        .as_ref()
                        .and_then(|a| serde_json::from_slice(&a.value).ok()),
                    evacuate: data[3 * i + 2].is_some(),
                },
            );
        }
        let lists = zk
            .children_many(
                &ips.iter()
                    .map(|ip| paths::node_containers(*ip))
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut cids = Vec::new();
        for (ip, list) in ips.iter().zip(&lists) {
            cids.extend(
                list.iter()
                    .filter_map(|c| c.parse().ok())
                    .map(|c: Uuid| (*ip, c)),
            );
        }
        let container_paths: Vec<String> = cids
            .iter()
            .flat_map(|(ip, c)| {
                [
                    paths::container(*ip, *c),
                    paths::container_status(*ip, *c),
                    paths::container_report(*ip, *c),
                ]
            })
            .collect();
        let data = zk.get_many(&container_paths).await?;
        for (i, (ip, cid)) in cids.iter().enumerate() {
            let Some(record) = &data[3 * i] else { continue };
            let mut info = ContainerInfo {
                ip: Some(*ip),
                function: ContainerRecord::decode(&record.value)
                    .ok()
                    .map(|r| r.function_id),
                state: data[3 * i + 1]
                    .as_ref()
                    .and_then(|s| ContainerState::decode(&s.value)),
                ..ContainerInfo::default()
            };
            info.set_report(data[3 * i + 2].as_ref().map(|r| r.value.as_slice()));
            view.containers.insert(*cid, info);
        }
        let ids: Vec<FunctionId> = zk
            .children(paths::FUNCTIONS)
            .await?
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let function_paths: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                [
                    paths::function(*id),
                    paths::function_backends(*id),
                    paths::function_rollout(*id),
                    paths::function_scale(*id),
                    paths::function_wake(*id),
                ]
            })
            .collect();
        let data = zk.get_many(&function_paths).await?;
        for (i, id) in ids.iter().enumerate() {
            let d = &data[5 * i..5 * i + 5];
            view.functions.insert(
                *id,
                FunctionInfo {
                    def: d[0].as_ref().and_then(decode_def),
                    backends: d[1].as_ref().and_then(decode_backends),
                    rollout: d[2].as_ref().and_then(rollout::decode),
                    scale: d[3].as_ref().and_then(decode_scale),
                    wake: d[4].is_some(),
                },
            );
        }
        Ok(view)
    }

    /// Applies what [`fetch`] read for one event; says which functions to
    /// reconcile. No I/O: callers hold the lock only for this.
    pub fn apply(&mut self, change: Change) -> Touched {
        match change {
            Change::None => Touched::None,
            Change::Function(id, def) => {
                match def {
                    Some(def) => self.functions.entry(id).or_default().def = Some(def),
                    None => {
                        self.functions.remove(&id);
                    }
                }
                Touched::Function(id)
            }
            Change::Backends(id, backends) => {
                if let Some(f) = self.functions.get_mut(&id) {
                    f.backends = backends;
                }
                Touched::Function(id)
            }
            Change::Rollout(id, rollout) => {
                self.functions.entry(id).or_default().rollout = rollout;
                Touched::Function(id)
            }
            Change::Scale(id, scale) => {
                if let Some(f) = self.functions.get_mut(&id) {
                    f.scale = scale;
                }
                Touched::Function(id)
            }
            Change::Wake(id, wake) => {
                if let Some(f) = self.functions.get_mut(&id) {
                    f.wake = wake;
                }
                Touched::Function(id)
            }
            Change::Node(ip, None) => {
                self.nodes.remove(&ip);
                Touched::All
            }
            Change::Node(ip, Some((enabled, version, containers))) => {
                let n = self.nodes.entry(ip).or_default();
                n.enabled = enabled;
                n.version = version;
                // Gone ones go; the rest keep what their reports said.
                self.containers.retain(|cid, c| {
                    c.ip != Some(ip) || containers.iter().any(|(k, _, _)| k == cid)
                });
                for (cid, function, state) in containers {
                    let c = self.containers.entry(cid).or_default();
                    c.ip = Some(ip);
                    c.function = function;
                    c.state = state;
                }
                Touched::All
            }
            // A node that comes can take what waits for room; one that goes
            // leaves instances to replace.
            Change::Alive(ip, capacity) => {
                if let Some(n) = self.nodes.get_mut(&ip) {
                    n.capacity = capacity;
                }
                Touched::All
            }
            Change::Evacuate(ip, there) => {
                if let Some(n) = self.nodes.get_mut(&ip) {
                    n.evacuate = there;
                }
                Touched::All
            }
            Change::Container(_, cid, None) => self
                .containers
                .remove(&cid)
                .and_then(|c| c.function)
                .map_or(Touched::None, Touched::Function),
            Change::Container(ip, cid, Some(function)) => {
                let c = self.containers.entry(cid).or_default();
                c.ip = Some(ip);
                c.function = function;
                c.function.map_or(Touched::None, Touched::Function)
            }
            Change::Status(ip, cid, state) => {
                let c = self.containers.entry(cid).or_default();
                c.ip = Some(ip);
                c.state = state;
                c.function.map_or(Touched::None, Touched::Function)
            }
            Change::Report(ip, cid, raw) => {
                let c = self.containers.entry(cid).or_default();
                c.ip = Some(ip);
                c.set_report(raw.as_deref());
                c.function.map_or(Touched::None, Touched::Function)
            }
        }
    }

    /// The functions with an instance on `ip`.
    pub fn functions_on(&self, ip: Ipv4Addr) -> HashSet<FunctionId> {
        self.containers
            .values()
            .filter(|c| c.ip == Some(ip))
            .filter_map(|c| c.function)
            .collect()
    }

    /// Nodes that may take new instances of `function`, with their free room
    /// (capacity minus what every container there was given).
    pub fn candidates(&self, function: FunctionId, avoid: &HashSet<Ipv4Addr>) -> Vec<Candidate> {
        let mut used: HashMap<Ipv4Addr, (f64, u64, usize)> = HashMap::new();
        for c in self.containers.values() {
            let (Some(ip), Some(f)) = (c.ip, c.function) else {
                continue;
            };
            let Some(def) = self.functions.get(&f).and_then(|f| f.def.as_ref()) else {
                continue;
            };
            let u = used.entry(ip).or_default();
            u.0 += def.value.cpu;
            u.1 += def.value.memory;
            if f == function {
                u.2 += 1;
            }
        }
        let isolation = self
            .functions
            .get(&function)
            .and_then(|f| f.def.as_ref())
            .map(|d| d.value.isolation())
            .unwrap_or_default();
        self.nodes
            .iter()
            .filter(|(ip, n)| n.enabled && !n.evacuate && !avoid.contains(ip))
            .filter_map(|(ip, n)| {
                let cap = n.capacity.filter(|c| c.runs(isolation))?;
                let (cpu, memory, instances) = used.get(ip).copied().unwrap_or_default();
                Some(Candidate {
                    ip: *ip,
                    free_cpu: cap.cpu - cpu,
                    free_memory: cap.memory.saturating_sub(memory),
                    instances,
                })
            })
            .collect()
    }
}

impl ContainerInfo {
    fn set_report(&mut self, raw: Option<&[u8]>) {
        let report: Option<bismuth_model::ContainerReport> =
            raw.and_then(|r| serde_json::from_slice(r).ok());
        self.failures = report.as_ref().map_or(0, |r| r.failures);
        self.reason = report.and_then(|r| r.reason);
    }
}

fn decode_def(raw: &Versioned<Vec<u8>>) -> Option<Versioned<FunctionDefinition>> {
    Some(Versioned {
        value: serde_json::from_slice(&raw.value).ok()?,
        version: raw.version,
    })
}

fn decode_scale(raw: &Versioned<Vec<u8>>) -> Option<Versioned<ScaleRecord>> {
    Some(Versioned {
        value: serde_json::from_slice(&raw.value).ok()?,
        version: raw.version,
    })
}

fn decode_backends(raw: &Versioned<Vec<u8>>) -> Option<Versioned<Vec<Backend>>> {
    Some(Versioned {
        value: unpack_backends(&raw.value).ok()?,
        version: raw.version,
    })
}

/// The view every api process keeps (placement of new functions reads it;
/// the leader's controller reconciles from it), with the functions each
/// change touches broadcast to whoever listens.
#[derive(Debug)]
pub struct SharedView {
    view: std::sync::Mutex<View>,
    loaded: std::sync::atomic::AtomicBool,
    touched: tokio::sync::broadcast::Sender<Touched>,
}

impl Default for SharedView {
    fn default() -> Self {
        SharedView {
            view: std::sync::Mutex::default(),
            loaded: std::sync::atomic::AtomicBool::new(false),
            touched: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

/// How often the whole view is read again (drift, missed events).
const RELOAD: std::time::Duration = std::time::Duration::from_secs(30);

impl SharedView {
    /// The current view (hold the guard briefly, never across an await).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether it was loaded at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes from now on (`Touched::All` after every reload).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Touched> {
        self.touched.subscribe()
    }

    /// Keeps the view current from watches on `/node` and `/function`
    /// until `stop`.
    pub async fn maintain(&self, zk: Zk, stop: tokio_util::sync::CancellationToken) {
        use bismuth_zk::WatchEvent;
        let mut nodes = zk.watch_tree(paths::NODES);
        let mut functions = zk.watch_tree(paths::FUNCTIONS);
        let mut reload = tokio::time::interval(RELOAD);
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = nodes.next() => e,
                e = functions.next() => e,
                _ = reload.tick() => Some(WatchEvent::Resync),
            };
            let Some(event) = event else { return };
            if let Err(e) = self.apply(&zk, &event).await {
                tracing::warn!(error = %e, "cannot read a change; reloading the cluster view");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let _ = self.apply(&zk, &WatchEvent::Resync).await;
            }
        }
    }

    async fn apply(&self, zk: &Zk, event: &bismuth_zk::WatchEvent) -> Result<(), ZkError> {
        let touched = match event.path() {
            None => {
                let fresh = View::load(zk).await?;
                *self.lock() = fresh;
                self.loaded
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Touched::All
            }
            Some(path) => {
                // Read first, then hold the lock only to apply.
                let change = fetch(zk, path).await?;
                self.lock().apply(change)
            }
        };
        if touched != Touched::None {
            let _ = self.touched.send(touched);
        }
        Ok(())
    }
}
