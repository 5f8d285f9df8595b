//! Start-up reconciliation: compare what ZooKeeper wants on this node with
//! what containerd and the host have. Running containers ZooKeeper still
//! wants are adopted as they are (no restart); everything else a crash left
//! behind (tasks, containers, snapshots, namespaces, veths, files) goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bismuth_containerd::api::snapshots::ListSnapshotsRequest;
use bismuth_containerd::RpcResult;
use bismuth_model::paths;
use tracing::{info, warn};
use uuid::Uuid;

use crate::node::{Adopted, Node};
use crate::runtime::{TaskState, LABEL_SLOT};

/// What reconciliation did.
#[derive(Debug, Default)]
pub struct Report {
    pub adopted: usize,
    pub removed_containers: usize,
    pub removed_networks: usize,
    pub removed_snapshots: usize,
}

/// Runs once before the desired-state watch starts.
pub async fn startup(node: &Arc<Node>) -> anyhow::Result<Report> {
    let wanted: HashSet<Uuid> = node
        .zk
        .children_opt(&paths::node_containers(node.cfg.node_ip))
        .await?
        .iter()
        .filter_map(|c| Uuid::parse_str(c).ok())
        .collect();
    converge(node, &wanted).await
}

/// Makes the host hold exactly `wanted`: adopts those still running, removes
/// everything else of this daemon's (containers, snapshots, networks,
/// svcproviders, files), installs the rules, and starts what is missing.
/// With nothing wanted it leaves the host as if bismuthd had never run
/// there, but for the rules table (see [`crate::clean_up`]).
pub async fn converge(node: &Arc<Node>, wanted: &HashSet<Uuid>) -> anyhow::Result<Report> {
    let cfg = &node.cfg;
    let mut report = Report::default();
    let mut keep: HashMap<Uuid, Adopted> = HashMap::new();

    for c in node.rt.list_containers().await? {
        let Ok(cid) = Uuid::parse_str(&c.id) else {
            continue;
        };
        let subnet = c
            .labels
            .get(LABEL_SLOT)
            .and_then(|s| s.parse().ok())
            .and_then(|slot| cfg.pool.subnet(slot));
        if let (true, Some(subnet)) = (wanted.contains(&cid), subnet) {
            let running = node.rt.task_state(&c.id).await?;
            let (netns, _) = crate::net::names(&cfg.instance, cid);
            let has_net = std::path::Path::new("/run/netns").join(&netns).exists();
            if let Some(TaskState::Running { pid }) = running {
                if has_net && cfg.pool.reserve(subnet.slot) {
                    let token = spec_env(&c, "BISMUTH_AUTH");
                    keep.insert(cid, Adopted { subnet, pid, token });
                    continue;
                }
            }
        }
        if let Err(e) = node.rt.remove(&c.id, Duration::ZERO).await {
            warn!(container = %c.id, error = %e, "cannot remove a leftover container");
        }
        report.removed_containers += 1;
    }

    // Networks of containers not adopted.
    let kept_links: HashSet<String> = keep
        .keys()
        .map(|c| crate::net::names(&cfg.instance, *c).1)
        .collect();
    let kept_ns: HashSet<String> = keep
        .keys()
        .map(|c| crate::net::names(&cfg.instance, *c).0)
        .collect();
    for ns in crate::net::our_namespaces(&cfg.instance) {
        if !kept_ns.contains(&ns) {
            crate::net::delete_namespace(&ns).await;
            report.removed_networks += 1;
        }
    }
    for link in crate::net::our_links(&cfg.pool).await {
        if !kept_links.contains(&link) {
            crate::net::delete_link(&link).await;
        }
    }

    // Snapshots: per-container ones without a container, and interrupted unpacks.
    let kept_ids: HashSet<String> = keep.keys().map(Uuid::to_string).collect();
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
            let ours = Uuid::parse_str(&info.name).is_ok() && !kept_ids.contains(&info.name);
            if ours || info.name.starts_with("extract-") {
                stale.push(info.name);
            }
        }
    }
    for key in stale {
        if node.rt.ctd.remove_snapshot(&key).await.is_ok() {
            report.removed_snapshots += 1;
        }
    }

    // The rules: adopted containers keep their svcprovider permission.
    let members: Vec<(String, std::net::Ipv4Addr)> = keep
        .iter()
        .map(|(cid, a)| (crate::net::names(&cfg.instance, *cid).1, a.subnet.host))
        .collect();
    node.firewall.install(&members).await?;

    // svcproviders a crashed bismuthd left, then files of containers
    // ZooKeeper no longer wants (wanted ones keep their log).
    if let Ok(entries) = std::fs::read_dir(cfg.run_dir.join("containers")) {
        for e in entries.flatten() {
            if let Ok(cid) = Uuid::parse_str(&e.file_name().to_string_lossy()) {
                crate::svc::stop_orphan(&crate::files::Files::new(
                    &cfg.state_dir,
                    &cfg.run_dir,
                    cid,
                ));
            }
        }
    }
    for dir in [
        cfg.state_dir.join("containers"),
        cfg.run_dir.join("containers"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let wanted_here = Uuid::parse_str(&name).is_ok_and(|c| wanted.contains(&c));
            if !wanted_here {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    report.adopted = keep.len();
    let adopted: Vec<Uuid> = keep.keys().copied().collect();
    node.set_adoptable(keep);
    // Start (or adopt) what ZooKeeper wants now, and serve only once every
    // adopted container is back in the table, so none answers 404 meanwhile.
    node.sync(wanted);
    for cid in adopted {
        if let Some(h) = node.get(cid) {
            let mut state = h.state.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                state.wait_for(|s| *s != bismuth_model::ContainerState::Invalid),
            )
            .await;
        }
    }
    info!(
        adopted = report.adopted,
        removed_containers = report.removed_containers,
        removed_networks = report.removed_networks,
        removed_snapshots = report.removed_snapshots,
        "reconciliation done"
    );
    Ok(report)
}

/// The value of `name` in a container's process environment.
fn spec_env(c: &bismuth_containerd::api::Container, name: &str) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&c.spec.as_ref()?.value).ok()?;
    let prefix = format!("{name}=");
    spec["process"]["env"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|e| e.strip_prefix(&prefix).map(str::to_owned))
}
