//! The daemon's shared state: configuration, clients, the network pool and
//! the live containers by id, with what ZooKeeper wants applied to them
//! (start the new, stop the removed).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bismuth_containerd::Puller;
use bismuth_model::{ContainerState, FunctionDefinition, FunctionId};
use bismuth_zk::Zk;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::Config;
use crate::files::Files;
use crate::ipam::Subnet;
use crate::net::Net;
use crate::runtime::Runtime;
use crate::status::StatusReporter;

/// A process exit seen by containerd: the pid and its exit status.
pub type Exit = (u32, u32);

/// What an invocation needs to reach a Running container.
#[derive(Clone, Debug)]
pub struct Target {
    pub function_id: FunctionId,
    pub def: FunctionDefinition,
    pub net: Net,
    /// The runner's socket on the host (Executable mode).
    pub runner_socket: PathBuf,
    /// The container's svcprovider token (`BISMUTH_AUTH`).
    pub token: String,
}

/// A container that survived a bismuthd restart, to be adopted as it is.
#[derive(Clone, Debug)]
pub struct Adopted {
    pub subnet: Subnet,
    pub pid: u32,
    /// Its svcprovider token, from the container's spec.
    pub token: Option<String>,
}

/// One container bismuthd runs.
#[derive(Debug)]
pub struct Handle {
    pub cid: Uuid,
    pub files: Files,
    /// The state last reported.
    pub state: watch::Sender<ContainerState>,
    /// Set once the container's function and network are known.
    pub target: OnceLock<Arc<Target>>,
    /// The network to release on removal (set as soon as it is allocated).
    pub net: Mutex<Option<Net>>,
    /// Pid of the current task's process (0: none).
    pub pid: AtomicU32,
    pub exits: mpsc::UnboundedSender<Exit>,
    /// Cancelled when ZooKeeper no longer wants the container.
    pub stop: CancellationToken,
}

impl Handle {
    pub fn state(&self) -> ContainerState {
        *self.state.borrow()
    }
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
    containers: Mutex<HashMap<Uuid, Arc<Handle>>>,
    /// Containers found running at start-up, adopted when ZooKeeper wants them.
    adoptable: Mutex<HashMap<Uuid, Adopted>>,
}

impl Node {
    pub fn new(cfg: Config, zk: Zk, rt: Runtime, puller: Puller) -> Arc<Node> {
        let status = StatusReporter::start(zk.clone(), cfg.node_ip);
        let firewall = crate::firewall::Firewall::new(&cfg.instance, cfg.egress, cfg.pool.cidr());
        Arc::new(Node {
            firewall,
            cfg,
            zk,
            rt,
            puller,
            status,
            containers: Mutex::default(),
            adoptable: Mutex::default(),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Handle>>> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The container `cid`, if this node runs it.
    pub fn get(&self, cid: Uuid) -> Option<Arc<Handle>> {
        self.map().get(&cid).cloned()
    }

    /// Every container.
    pub fn all(&self) -> Vec<Arc<Handle>> {
        self.map().values().cloned().collect()
    }

    pub fn set_adoptable(&self, found: HashMap<Uuid, Adopted>) {
        *self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = found;
    }

    /// Starts `cid` unless it runs already.
    pub fn want(self: &Arc<Self>, cid: Uuid) {
        let mut map = self.map();
        if map.contains_key(&cid) {
            return;
        }
        let adopted = self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&cid);
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let handle = Arc::new(Handle {
            cid,
            files: Files::new(&self.cfg.state_dir, &self.cfg.run_dir, cid),
            state: watch::Sender::new(ContainerState::Invalid),
            target: OnceLock::new(),
            net: Mutex::new(None),
            pid: AtomicU32::new(adopted.as_ref().map_or(0, |a| a.pid)),
            exits: exits_tx,
            stop: CancellationToken::new(),
        });
        map.insert(cid, Arc::clone(&handle));
        let node = Arc::clone(self);
        let span = tracing::info_span!("container", id = %cid);
        tokio::spawn(crate::container::run(node, handle, exits_rx, adopted).instrument(span));
    }

    /// Stops and removes `cid` (the actor removes itself from the map when done).
    pub fn unwant(&self, cid: Uuid) {
        if let Some(h) = self.get(cid) {
            h.stop.cancel();
        }
    }

    /// Makes the running set equal `wanted`.
    pub fn sync(self: &Arc<Self>, wanted: &HashSet<Uuid>) {
        for h in self.all() {
            if !wanted.contains(&h.cid) {
                h.stop.cancel();
            }
        }
        for cid in wanted {
            self.want(*cid);
        }
    }

    /// Called by an actor after tear-down.
    pub fn forget(&self, cid: Uuid) {
        self.map().remove(&cid);
    }

    /// Routes a process exit to its container.
    pub fn notify_exit(&self, cid: Uuid, exit: Exit) {
        if let Some(h) = self.get(cid) {
            let _ = h.exits.send(exit);
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

    /// Records and reports a container's new state.
    pub fn set_state(&self, h: &Handle, state: ContainerState) {
        h.state.send_replace(state);
        self.status.report(h.cid, state);
    }

    /// Asks containerd about every container with a live process and
    /// delivers the exits that an event-stream gap may have hidden.
    pub async fn check_exits(&self) {
        for h in self.all() {
            let pid = h.pid.load(Ordering::SeqCst);
            if pid == 0 {
                continue;
            }
            match self.rt.task_state(&h.cid.to_string()).await {
                Ok(Some(crate::runtime::TaskState::Stopped { exit })) => {
                    let _ = h.exits.send((pid, exit));
                }
                Ok(None) => {
                    let _ = h.exits.send((pid, 255));
                }
                _ => {}
            }
        }
    }
}
