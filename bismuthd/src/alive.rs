//! Announces this node to the api: the ephemeral `/node/{ip}/alive` znode
//! holding its capacity as JSON, held by bismuthd's session and made again
//! after every reconnect (a new session after expiry lost it).
//!
//! bismuthd's session outlives the process (it is detached) and the znode
//! is left in place on SIGTERM: a restart is not the node's death. The next
//! bismuthd replaces its predecessor's znode with its own in one
//! transaction, so nobody ever sees the node without it.

use std::net::Ipv4Addr;
use std::time::Duration;

use bismuth_controller::Backoff;
use bismuth_model::{paths, NodeCapacity};
use bismuth_zk::{WatchEvent, Zk, ZkError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Keeps the znode present until `shutdown` (and leaves it there).
pub async fn hold(zk: Zk, ip: Ipv4Addr, capacity: NodeCapacity, shutdown: CancellationToken) {
    let path = paths::node_alive(ip);
    let data = serde_json::to_vec(&capacity).unwrap_or_default();
    let mut watch = zk.watch_tree(&path);
    let mut warned = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = watch.next() => e,
        };
        match event {
            Some(WatchEvent::Resync | WatchEvent::Deleted(_)) => {}
            Some(_) => continue,
            None => break,
        }
        // Ours already (our own replacement made this event)?
        if matches!(zk.holds(&path).await, Ok(true)) {
            continue;
        }
        // Create until it exists; the node may not be provisioned yet.
        let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).retry();
        loop {
            let mut replace = bismuth_zk::Txn::new();
            replace
                .delete(path.as_str(), None)
                .create_ephemeral(path.as_str(), data.clone());
            let announced = match zk.create_ephemeral(&path, &data).await {
                // A predecessor's (or our own from before a reconnect).
                Err(ZkError::NodeExists { .. }) => zk.commit(&replace).await,
                other => other,
            };
            match announced {
                Ok(()) | Err(ZkError::NodeExists { .. }) => {
                    info!(node = %ip, "node announced as alive");
                    warned = false;
                    break;
                }
                Err(ZkError::NoNode { .. }) => {
                    if !warned {
                        warn!(node = %ip, "this node is not provisioned; run `bismuthctl provision {ip}`");
                        warned = true;
                    }
                }
                Err(e) => warn!(error = %e, "cannot announce the node"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = retry.wait() => {}
            }
        }
    }
}
