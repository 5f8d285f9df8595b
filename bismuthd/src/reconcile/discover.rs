//! Finding every container id this daemon has anything of: what ZooKeeper
//! wants, what it knows, containerd's containers, network namespaces and
//! files named by an id. Start-up, the periodic resync and `--clean-up`
//! enqueue them all; the reconcile of each decides.

use std::collections::HashSet;

use bismuth_containerd::api::snapshots::ListSnapshotsRequest;
use bismuth_containerd::{CtdError, RpcResult};
use uuid::Uuid;

use crate::node::Node;

/// Every container id found.
pub async fn discover(node: &Node) -> Result<HashSet<Uuid>, CtdError> {
    let cfg = &node.cfg;
    let mut ids: HashSet<Uuid> = node.desired();
    ids.extend(node.all().iter().map(|h| h.cid));
    for c in node.rt.list_containers().await? {
        if let Ok(cid) = Uuid::parse_str(&c.id) {
            ids.insert(cid);
        }
    }
    let prefix = format!("{}{}-", crate::net::NETNS_PREFIX, cfg.instance);
    for ns in crate::net::our_namespaces(&cfg.instance) {
        if let Some(cid) = ns
            .strip_prefix(&prefix)
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            ids.insert(cid);
        }
    }
    for dir in [
        cfg.state_dir.join("containers"),
        cfg.run_dir.join("containers"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            ids.extend(
                entries
                    .flatten()
                    .filter_map(|e| Uuid::parse_str(&e.file_name().to_string_lossy()).ok()),
            );
        }
    }
    Ok(ids)
}

/// Removes snapshots no container owns: per-container ones left by a crash
/// between snapshot and container, and interrupted unpacks. Only at
/// start-up, before anything unpacks.
pub async fn sweep_snapshots(node: &Node) -> Result<usize, CtdError> {
    let containers: HashSet<String> = node
        .rt
        .list_containers()
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut stream = node
        .rt
        .ctd
        .snapshots()
        .list(node.rt.ctd.request(ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec![],
        }))
        .await
        .rpc("snapshots.list")?;
    let mut stale = Vec::new();
    while let Ok(Some(page)) = stream.message().await {
        for info in page.info {
            let orphan = Uuid::parse_str(&info.name).is_ok() && !containers.contains(&info.name);
            if orphan || info.name.starts_with("extract-") {
                stale.push(info.name);
            }
        }
    }
    let mut removed = 0;
    for key in stale {
        if node.rt.ctd.remove_snapshot(&key).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}
