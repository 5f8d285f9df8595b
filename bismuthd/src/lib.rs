//! bismuthd: the per-host daemon. It watches `/node/{ip}/container` in
//! ZooKeeper and runs each container listed there through containerd, in its
//! own network namespace, reporting Starting/Running/Failed back; it proxies
//! invocations into Running containers on port 8001 and serves their logs.
//!
//! Start-up: take the namespace lock, connect to containerd and ZooKeeper,
//! reconcile (adopt running containers, remove leftovers), then follow
//! ZooKeeper. SIGTERM stops serving but leaves containers running, so the
//! next bismuthd adopts them without a restart.

mod alive;
pub mod config;
mod container;
mod events;
mod exec;
mod files;
pub mod firewall;
pub mod http;
pub mod ipam;
mod lock;
mod logs;
pub mod net;
mod node;
mod proxy;
mod reconcile;
mod runtime;
pub mod spec;
mod status;
mod svc;

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use bismuth_containerd::{Containerd, Puller};
use bismuth_model::{paths, ContainerState};
use bismuth_zk::{WatchEvent, Zk};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

pub use config::{Args, Config};
pub use node::Node;

/// Runs the daemon until `shutdown`.
pub async fn run(
    listener: TcpListener,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lock = lock::acquire(&cfg.containerd, &cfg.namespace)?;
    tracing::debug!(path = %lock.path.display(), "namespace lock taken");
    std::fs::create_dir_all(cfg.state_dir.join("containers"))
        .with_context(|| format!("cannot create {}", cfg.state_dir.display()))?;
    std::fs::create_dir_all(cfg.run_dir.join("containers"))
        .with_context(|| format!("cannot create {}", cfg.run_dir.display()))?;

    let ctd = connect_containerd(&cfg, &shutdown).await?;
    let zk = Zk::connect_retrying(cfg.zk.clone(), &shutdown)
        .await
        .context("cannot connect to ZooKeeper")?;
    let puller = Puller::new(cfg.registry.clone())?;
    let node = Node::new(cfg.clone(), zk.clone(), runtime::Runtime { ctd }, puller);

    reconcile::startup(&node)
        .await
        .context("start-up reconciliation failed")?;

    let tasks = CancellationToken::new();
    tokio::spawn(events::watch_exits(Arc::clone(&node), tasks.clone()));
    tokio::spawn(watch_wanted(Arc::clone(&node), tasks.clone()));
    tokio::spawn(alive::hold(
        zk.clone(),
        cfg.node_ip,
        cfg.capacity,
        tasks.clone(),
    ));

    info!(listen = %listener.local_addr()?, node = %cfg.node_ip, namespace = %cfg.namespace, "bismuthd serving");
    let server = http::Server::new(Arc::clone(&node));
    bismuth_daemon::http::serve(
        listener,
        move |req, peer| server.clone().handle(req, peer),
        shutdown.clone(),
        cfg.shutdown_grace,
    )
    .await;
    tasks.cancel();
    if node.all().is_empty() {
        node.firewall.remove().await;
    }
    // Containers keep running (and their rules stay): the next bismuthd adopts them.
    info!(
        containers = node.all().len(),
        "bismuthd stopped; containers left running for the next start"
    );
    Ok(())
}

/// `bismuthd --clean-up`: removes every container of this daemon's
/// namespace with its network, svcprovider, snapshot and files, and its
/// rules table, then returns. For decommissioning a host or ending a local
/// cluster; ZooKeeper is not changed (its containers are started again by
/// the next bismuthd) but for the status of each container it wants here,
/// set to Invalid ("no bismuthd has it") so nothing routes to a container
/// that is gone. Refuses while a bismuthd runs on the namespace.
pub async fn clean_up(cfg: Config) -> anyhow::Result<reconcile::Report> {
    let _lock = lock::acquire(&cfg.containerd, &cfg.namespace)?;
    let never = CancellationToken::new();
    let ctd = connect_containerd(&cfg, &never).await?;
    let zk = Zk::connect(cfg.zk.clone())
        .await
        .context("cannot connect to ZooKeeper")?;
    let puller = Puller::new(cfg.registry.clone())?;
    let node = Node::new(cfg, zk, runtime::Runtime { ctd }, puller);
    let report = reconcile::converge(&node, &HashSet::new()).await?;
    node.firewall.remove().await;
    let ip = node.cfg.node_ip;
    for c in node.zk.children_opt(&paths::node_containers(ip)).await? {
        if let Ok(cid) = Uuid::parse_str(&c) {
            let status = paths::container_status(ip, cid);
            match node
                .zk
                .set(&status, &[ContainerState::Invalid.to_byte()], None)
                .await
            {
                Ok(_) | Err(bismuth_zk::ZkError::NoNode { .. }) => {}
                Err(e) => return Err(e).context("cannot reset a container's status"),
            }
        }
    }
    Ok(report)
}

async fn connect_containerd(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Containerd> {
    let mut attempt = 0u32;
    loop {
        match Containerd::connect(&cfg.containerd, &cfg.namespace).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 50 => {
                if attempt == 0 {
                    warn!(error = %e, "containerd is not reachable yet; retrying");
                }
            }
            Err(e) => return Err(e.into()),
        }
        attempt += 1;
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for containerd"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
}

/// Applies `/node/{ip}/container`'s children to the running set.
async fn watch_wanted(node: Arc<Node>, shutdown: CancellationToken) {
    let base = paths::node_containers(node.cfg.node_ip);
    let mut watch = node.zk.watch_tree(&base);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = watch.next() => e,
        };
        match event {
            Some(WatchEvent::Resync) => loop {
                match node.zk.children_opt(&base).await {
                    Ok(children) => {
                        let wanted: HashSet<Uuid> = children
                            .iter()
                            .filter_map(|c| Uuid::parse_str(c).ok())
                            .collect();
                        node.sync(&wanted);
                        node.resend_statuses();
                        break;
                    }
                    Err(e) => {
                        // Never act on an unreadable tree: keep what runs.
                        warn!(error = %e, "cannot list this node's containers; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        }
                    }
                }
            },
            Some(WatchEvent::Created(p)) => {
                if let Some(cid) = direct_child(&base, &p) {
                    node.want(cid);
                }
            }
            Some(WatchEvent::Deleted(p)) => {
                if let Some(cid) = direct_child(&base, &p) {
                    node.unwant(cid);
                }
            }
            Some(WatchEvent::Changed(_)) => {}
            None => return,
        }
    }
}

/// `{base}/{uuid}` → the uuid; deeper paths → None.
fn direct_child(base: &str, path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    if rest.contains('/') {
        return None;
    }
    Uuid::parse_str(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::direct_child;

    #[test]
    fn only_direct_children_are_containers() {
        let id = uuid::Uuid::new_v4();
        let base = "/node/10.0.0.1/container";
        assert_eq!(direct_child(base, &format!("{base}/{id}")), Some(id));
        assert_eq!(direct_child(base, &format!("{base}/{id}/status")), None);
        assert_eq!(direct_child(base, &format!("{base}/junk")), None);
        assert_eq!(direct_child(base, "/node/10.0.0.2/container"), None);
    }
}
