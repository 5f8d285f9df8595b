//! Reports container states to ZooKeeper (`/node/{ip}/container/{cid}/status`)
//! from one task: the latest state per container wins, writes are retried
//! while ZooKeeper is away, and a container whose znode is gone is dropped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bismuth_controller::Backoff;
use bismuth_model::{paths, ContainerState};
use bismuth_zk::{Zk, ZkError};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

/// Hands states to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusReporter {
    tx: mpsc::UnboundedSender<(Uuid, ContainerState)>,
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
        let _ = self.tx.send((cid, state));
    }
}

async fn write_loop(zk: Zk, ip: Ipv4Addr, mut rx: mpsc::UnboundedReceiver<(Uuid, ContainerState)>) {
    let mut pending: HashMap<Uuid, ContainerState> = HashMap::new();
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(3)).retry();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((cid, state)) => {
                    pending.insert(cid, state);
                }
                None => return,
            }
        }
        while let Ok((cid, state)) = rx.try_recv() {
            pending.insert(cid, state);
        }
        let batch: Vec<(Uuid, ContainerState)> = pending.iter().map(|(c, s)| (*c, *s)).collect();
        let mut again = false;
        for (cid, state) in batch {
            let path = paths::container_status(ip, cid);
            match zk.set(&path, &[state.to_byte()], None).await {
                Ok(_) => {
                    debug!(container = %cid, ?state, "status written");
                    remove_if_same(&mut pending, cid, state);
                }
                Err(ZkError::NoNode { .. }) => {
                    // Removed meanwhile (or the status child is missing): make it if the container is still wanted.
                    let container = paths::container(ip, cid);
                    if matches!(zk.exists(&container).await, Ok(true)) {
                        let _ = zk.create(&path, &[state.to_byte()]).await;
                    }
                    remove_if_same(&mut pending, cid, state);
                }
                Err(e) if e.is_transient() => {
                    again = true;
                    break;
                }
                Err(e) => {
                    warn!(container = %cid, error = %e, "cannot write status");
                    remove_if_same(&mut pending, cid, state);
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

fn remove_if_same(pending: &mut HashMap<Uuid, ContainerState>, cid: Uuid, state: ContainerState) {
    if pending.get(&cid) == Some(&state) {
        pending.remove(&cid);
    }
}
