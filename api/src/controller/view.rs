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
    FunctionId, NodeCapacity, NodeState,
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
                ]
            })
            .collect();
        let data = zk.get_many(&function_paths).await?;
        for (i, id) in ids.iter().enumerate() {
            view.functions.insert(
                *id,
                FunctionInfo {
                    def: data[3 * i].as_ref().and_then(decode_def),
                    backends: data[3 * i + 1].as_ref().and_then(decode_backends),
                    rollout: data[3 * i + 2].as_ref().and_then(rollout::decode),
                },
            );
        }
        Ok(view)
    }

    /// Applies a change of `path` (re-read from ZooKeeper); says which
    /// functions to reconcile.
    pub async fn apply(&mut self, zk: &Zk, path: &str) -> Result<Touched, ZkError> {
        let Some(znode) = paths::parse(path) else {
            return Ok(Touched::None);
        };
        use paths::Znode;
        Ok(match znode {
            Znode::Function(id) => {
                let raw = zk.get_opt(path).await?;
                match raw.as_ref().and_then(decode_def) {
                    Some(def) => self.functions.entry(id).or_default().def = Some(def),
                    None => {
                        self.functions.remove(&id);
                    }
                }
                Touched::Function(id)
            }
            Znode::FunctionBackends(id) => {
                let raw = zk.get_opt(path).await?;
                if let Some(f) = self.functions.get_mut(&id) {
                    f.backends = raw.as_ref().and_then(decode_backends);
                }
                Touched::Function(id)
            }
            Znode::Node(ip) => {
                match zk.get_opt(path).await? {
                    Some(raw) => {
                        let n = self.nodes.entry(ip).or_default();
                        n.enabled = NodeState::decode(&raw.value) == Ok(NodeState::Enabled);
                        n.version = raw.version;
                        // Every placement bumps this version in the same
                        // transaction as its containers: read them now, so
                        // the version never runs ahead of the load it vouches for.
                        self.reload_containers(zk, ip).await?;
                    }
                    None => {
                        self.nodes.remove(&ip);
                    }
                }
                Touched::All
            }
            Znode::NodeAlive(ip) => {
                let raw = zk.get_opt(path).await?;
                if let Some(n) = self.nodes.get_mut(&ip) {
                    n.capacity = raw.and_then(|a| serde_json::from_slice(&a.value).ok());
                }
                // A node that comes can take what waits for room; one that
                // goes leaves instances to replace.
                Touched::All
            }
            Znode::FunctionRollout(id) => {
                let r = zk.get_opt(path).await?;
                self.functions.entry(id).or_default().rollout =
                    r.as_ref().and_then(rollout::decode);
                Touched::Function(id)
            }
            Znode::NodeEvacuate(ip) => {
                let there = zk.exists(path).await?;
                if let Some(n) = self.nodes.get_mut(&ip) {
                    n.evacuate = there;
                }
                Touched::All
            }
            Znode::ContainerReport(ip, cid) => {
                let r = zk.get_opt(path).await?;
                let c = self.containers.entry(cid).or_default();
                c.ip = Some(ip);
                c.set_report(r.as_ref().map(|r| r.value.as_slice()));
                c.function.map_or(Touched::None, Touched::Function)
            }
            Znode::NodeContainers(_) | Znode::Route(_) => Touched::None,
            Znode::Container(ip, cid) => match zk.get_opt(path).await? {
                Some(raw) => {
                    let c = self.containers.entry(cid).or_default();
                    c.ip = Some(ip);
                    c.function = ContainerRecord::decode(&raw.value)
                        .ok()
                        .map(|r| r.function_id);
                    c.function.map_or(Touched::None, Touched::Function)
                }
                None => self
                    .containers
                    .remove(&cid)
                    .and_then(|c| c.function)
                    .map_or(Touched::None, Touched::Function),
            },
            Znode::ContainerStatus(ip, cid) => {
                let raw = zk.get_opt(path).await?;
                let c = self.containers.entry(cid).or_default();
                c.ip = Some(ip);
                c.state = raw.and_then(|s| ContainerState::decode(&s.value));
                c.function.map_or(Touched::None, Touched::Function)
            }
        })
    }

    /// Re-reads the containers of node `ip` (records and states).
    async fn reload_containers(&mut self, zk: &Zk, ip: Ipv4Addr) -> Result<(), ZkError> {
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
        // Gone ones go; the rest keep what their reports said.
        self.containers
            .retain(|cid, c| c.ip != Some(ip) || cids.contains(cid));
        for (i, cid) in cids.iter().enumerate() {
            let Some(record) = &data[2 * i] else { continue };
            let c = self.containers.entry(*cid).or_default();
            c.ip = Some(ip);
            c.function = ContainerRecord::decode(&record.value)
                .ok()
                .map(|r| r.function_id);
            c.state = data[2 * i + 1]
                .as_ref()
                .and_then(|s| ContainerState::decode(&s.value));
        }
        Ok(())
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
        self.nodes
            .iter()
            .filter(|(ip, n)| n.enabled && !n.evacuate && !avoid.contains(ip))
            .filter_map(|(ip, n)| {
                let cap = n.capacity?;
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
                // Events are applied in order by this one task: no other
                // writer races the clone.
                let mut view = self.lock().clone();
                let touched = view.apply(zk, path).await?;
                *self.lock() = view;
                touched
            }
        };
        if touched != Touched::None {
            let _ = self.touched.send(touched);
        }
        Ok(())
    }
}
