//! Reports container states to ZooKeeper (`/node/{ip}/container/{cid}/status`)
//! and, on failures, why and how many in a row (`…/report`, read by the
//! control plane) from one task: the latest value per container and kind
//! wins, writes are retried while ZooKeeper is away, and a container whose
//! znode is gone is dropped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bismuth_controller::Backoff;
use bismuth_model::{paths, ContainerReport, ContainerState};
use bismuth_zk::{Zk, ZkError};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

/// Hands states to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusReporter {
    tx: mpsc::UnboundedSender<(Uuid, Update)>,
}

/// One value to write for a container.
#[derive(Clone, Debug, PartialEq)]
enum Update {
    State(ContainerState),
    Report(ContainerReport),
}

impl Update {
    fn kind(&self) -> u8 {
        match self {
            Update::State(_) => 0,
            Update::Report(_) => 1,
        }
    }

    fn path(&self, ip: Ipv4Addr, cid: Uuid) -> String {
        match self {
            Update::State(_) => paths::container_status(ip, cid),
            Update::Report(_) => paths::container_report(ip, cid),
        }
    }

    fn data(&self) -> Vec<u8> {
        match self {
            Update::State(s) => vec![s.to_byte()],
            Update::Report(r) => serde_json::to_vec(r).unwrap_or_default(),
        }
    }
}

impl StatusReporter {
    /// Starts the writer task for node `ip`.
    pub fn start(zk: Zk, ip: Ipv4Addr) -> StatusReporter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(zk, ip, rx));
        StatusReporter { tx }
    }

    /// Queues `state` for `cid`.
    pub fn report(&self, cid: Uuid, state: ContainerState) {
        let _ = self.tx.send((cid, Update::State(state)));
    }

    /// Queues what the control plane should know of `cid`'s failures.
    pub fn report_failures(&self, cid: Uuid, report: ContainerReport) {
        let _ = self.tx.send((cid, Update::Report(report)));
    }
}

type Pending = HashMap<(Uuid, u8), Update>;

async fn write_loop(zk: Zk, ip: Ipv4Addr, mut rx: mpsc::UnboundedReceiver<(Uuid, Update)>) {
    let mut pending: Pending = HashMap::new();
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(3)).retry();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((cid, u)) => {
                    pending.insert((cid, u.kind()), u);
                }
                None => return,
            }
        }
        while let Ok((cid, u)) = rx.try_recv() {
            pending.insert((cid, u.kind()), u);
        }
        let batch: Vec<((Uuid, u8), Update)> =
            pending.iter().map(|(k, u)| (*k, u.clone())).collect();
        let mut again = false;
        for ((cid, kind), u) in batch {
            let path = u.path(ip, cid);
            match zk.set(&path, &u.data(), None).await {
                Ok(_) => {
                    debug!(container = %cid, update = ?u, "written");
                    remove_if_same(&mut pending, (cid, kind), &u);
                }
                Err(ZkError::NoNode { .. }) => {
                    // Removed meanwhile (or the child is missing): make it if the container is still wanted.
                    let container = paths::container(ip, cid);
                    if matches!(zk.exists(&container).await, Ok(true)) {
                        let _ = zk.create(&path, &u.data()).await;
                    }
                    remove_if_same(&mut pending, (cid, kind), &u);
                }
                Err(e) if e.is_transient() => {
                    again = true;
                    break;
                }
                Err(e) => {
                    warn!(container = %cid, error = %e, "cannot write status");
                    remove_if_same(&mut pending, (cid, kind), &u);
                }
            }
        }
        if again {
            retry.wait().await;
        } else {
            retry.reset();
        }
    }
}

fn remove_if_same(pending: &mut Pending, key: (Uuid, u8), written: &Update) {
    if pending.get(&key) == Some(written) {
        pending.remove(&key);
    }
}
