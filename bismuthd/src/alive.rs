//! Announces this node to the api: the ephemeral `/node/{ip}/alive` znode
//! holding its capacity as JSON, held by bismuthd's session and made again
//! after every reconnect (a new session after expiry lost it).

use std::net::Ipv4Addr;
use std::time::Duration;

use bismuth_controller::Backoff;
use bismuth_model::{paths, NodeCapacity};
use bismuth_zk::{WatchEvent, Zk, ZkError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Keeps the znode present until `shutdown`.
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
        // Create until it exists; the node may not be provisioned yet.
        let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).retry();
        loop {
            match zk.create_ephemeral(&path, &data).await {
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
    let _ = zk.delete(&path, None).await;
}
