//! bismuthd: the per-host daemon. It watches `/node/{ip}/container` in
//! ZooKeeper and runs each container listed there through containerd, in its
//! own network namespace, reporting Starting/Running/Failed back; it proxies
//! invocations into Running containers on port 8001 and serves their logs.
//!
//! Every decision is made by one reconcile loop (`reconcile`, on
//! `bismuth-controller`): triggers (the ZooKeeper watch, containerd's exit
//! events, svcprovider exits, a periodic resync) only enqueue container ids.
//! Start-up: take the namespace lock, connect to containerd and ZooKeeper,
//! read what ZooKeeper wants, enqueue every container id found anywhere
//! (adopting running containers and their svcproviders as they are,
//! removing leftovers), then serve. SIGTERM stops serving but leaves
//! containers and svcproviders running, so the next bismuthd adopts them.

mod alive;
mod calls;
pub mod config;
mod cutoff;
mod events;
mod exec;
mod files;
pub mod firewall;
pub mod http;
pub mod ipam;
mod lock;
mod logs;
pub mod logwriter;
mod metrics;
pub mod net;
mod node;
mod proxy;
mod raw;
mod reconcile;
mod respond;
mod rootfs;
mod runtime;
mod sandbox;
pub mod seccomp;
pub mod spec;
mod status;
mod svc;
pub mod userns;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bismuth_containerd::{Containerd, Puller};
use bismuth_controller::Backoff;
use bismuth_model::{paths, ContainerState};
use bismuth_zk::{WatchEvent, Zk};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

pub use config::{Args, Config};
pub use node::Node;
pub use reconcile::Key;

/// How long start-up waits for adopted containers before serving anyway.
const ADOPTION_WAIT: Duration = Duration::from_secs(5);

/// What start-up or `--clean-up` found and removed.
#[derive(Debug, Default)]
pub struct Report {
    pub adopted: usize,
    pub removed_containers: usize,
    pub removed_snapshots: usize,
}

/// Runs the daemon until `shutdown`.
pub async fn run(
    listener: TcpListener,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lock = lock::acquire(&cfg.containerd, &cfg.namespace)?;
    tracing::debug!(path = %lock.path.display(), "namespace lock taken");
    create_dirs(&cfg)?;
    let ctd = connect_containerd(&cfg, &shutdown).await?;
    let zk = Zk::connect_retrying(cfg.zk.clone(), &shutdown)
        .await
        .context("cannot connect to ZooKeeper")?;
    let puller = Puller::new(cfg.registry.clone())?;
    let node = Node::new(cfg.clone(), zk.clone(), runtime::Runtime { ctd }, puller);

    // What ZooKeeper wants, once, before anything is judged unwanted.
    let base = paths::node_containers(cfg.node_ip);
    let wanted = read_wanted(&node, &base)
        .await
        .context("cannot read this node's containers from ZooKeeper")?;
    node.set_desired(wanted);
    let removed_snapshots = reconcile::sweep_snapshots(&node)
        .await
        .context("cannot list containerd's snapshots")?;
    if !node.firewall.intact().await {
        node.firewall.install(&[]).await?;
    }
    let found = reconcile::discover(&node)
        .await
        .context("cannot list containerd's containers")?;
    let adopting: Vec<Uuid> = running_and_wanted(&node).await;

    let tasks = CancellationToken::new();
    let controller = {
        let node = Arc::clone(&node);
        let ctl = node.ctl.clone();
        let cfg = bismuth_controller::Config {
            concurrency: cfg.reconcile_concurrency,
            error_backoff: Backoff::new(Duration::from_millis(200), cfg.restart_backoff_max),
        };
        let stop = tasks.clone();
        tokio::spawn(async move {
            ctl.run(
                cfg,
                move |key| reconcile::reconcile(Arc::clone(&node), key),
                stop,
            )
            .await;
        })
    };
    node.ctl.enqueue(Key::Host);
    node.ctl
        .enqueue_all(found.iter().map(|cid| Key::Container(*cid)));
    tokio::spawn(events::watch_exits(Arc::clone(&node), tasks.clone()));
    tokio::spawn(watch_wanted(Arc::clone(&node), base.clone(), tasks.clone()));
    tokio::spawn(cutoff::watch(Arc::clone(&node), base, tasks.clone()));
    tokio::spawn(resync(Arc::clone(&node), tasks.clone()));
    tokio::spawn(alive::hold(
        zk.clone(),
        cfg.node_ip,
        cfg.capacity,
        tasks.clone(),
    ));

    // Serve once every adopted container is back, so none answers 404 meanwhile.
    let adopted = wait_adopted(&node, &adopting).await;
    info!(
        adopted,
        found = found.len(),
        removed_snapshots,
        "start-up reconciliation under way"
    );

    info!(listen = %listener.local_addr()?, node = %cfg.node_ip, namespace = %cfg.namespace, "bismuthd serving");
    // Requests are served on threads of their own (a current-thread
    // runtime each, with its own pool of connections to containers), away
    // from the reconcile loops and watches on this runtime.
    let make = |_| {
        let server = http::Server::new(Arc::clone(&node));
        // hyper, for the connections the fast path hands over; made on the
        // serving thread by its first connection (its timer ticks there).
        let mut hyper = None;
        move |stream, peer, shutdown| {
            let hyper = hyper
                .get_or_insert_with(bismuth_daemon::http::Hyper::new)
                .clone();
            raw::serve(server.clone(), hyper, stream, peer, shutdown)
        }
    };
    bismuth_daemon::http::serve_threads_conns(
        listener,
        cfg.serve_threads,
        "bismuthd-http",
        make,
        shutdown.clone(),
        cfg.shutdown_grace,
    )
    .await?;
    tasks.cancel();
    let _ = controller.await;
    if let Some(t) = &node.tracer {
        t.shutdown().await;
    }
    if node.all().is_empty() {
        node.firewall.remove().await;
    }
    // Containers and svcproviders keep running (and their rules stay): the
    // next bismuthd adopts them.
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
pub async fn clean_up(cfg: Config) -> anyhow::Result<Report> {
    let _lock = lock::acquire(&cfg.containerd, &cfg.namespace)?;
    create_dirs(&cfg)?;
    let never = CancellationToken::new();
    let ctd = connect_containerd(&cfg, &never).await?;
    let zk = Zk::connect(cfg.zk.clone())
        .await
        .context("cannot connect to ZooKeeper")?;
    let puller = Puller::new(cfg.registry.clone())?;
    let cfg = Config {
        otlp_endpoint: None,
        unroute_delay: Duration::ZERO,
        drain_requests: Duration::ZERO,
        ..cfg
    };
    let node = Node::new(cfg, zk, runtime::Runtime { ctd }, puller);
    node.set_desired(HashSet::new());
    let mut report = Report {
        removed_containers: node.rt.list_containers().await?.len(),
        ..Report::default()
    };
    for cid in reconcile::discover(&node).await? {
        reconcile::remove(&node, cid)
            .await
            .with_context(|| format!("cannot remove container {cid}"))?;
    }
    for link in net::our_links(&node.cfg.pool).await {
        net::delete_link(&link).await;
    }
    report.removed_snapshots = reconcile::sweep_snapshots(&node).await?;
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

fn create_dirs(cfg: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(cfg.state_dir.join("containers"))
        .with_context(|| format!("cannot create {}", cfg.state_dir.display()))?;
    std::fs::create_dir_all(cfg.run_dir.join("containers"))
        .with_context(|| format!("cannot create {}", cfg.run_dir.display()))
}

async fn connect_containerd(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Containerd> {
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).retry();
    loop {
        match Containerd::connect(&cfg.containerd, &cfg.namespace).await {
            Ok(c) => return Ok(c),
            Err(e) if retry.attempts() < 30 => {
                if retry.attempts() == 0 {
                    warn!(error = %e, "containerd is not reachable yet; retrying");
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for containerd"),
            _ = retry.wait() => {}
        }
    }
}

/// The children of `/node/{ip}/container` that are container ids.
async fn read_wanted(node: &Node, base: &str) -> Result<HashSet<Uuid>, bismuth_zk::ZkError> {
    Ok(node
        .zk
        .children_opt(base)
        .await?
        .iter()
        .filter_map(|c| Uuid::parse_str(c).ok())
        .collect())
}

/// Containers whose task runs and that ZooKeeper still wants: adopted.
async fn running_and_wanted(node: &Node) -> Vec<Uuid> {
    let mut out = Vec::new();
    for cid in node.desired() {
        if let Ok(Some(runtime::TaskState::Running { .. })) =
            node.rt.task_state(&cid.to_string()).await
        {
            out.push(cid);
        }
    }
    out
}

/// Waits (bounded) until every one of `adopting` is Running again.
async fn wait_adopted(node: &Node, adopting: &[Uuid]) -> usize {
    let wait = async {
        for cid in adopting {
            loop {
                let state = node.get(*cid).map(|h| h.state());
                if matches!(
                    state,
                    Some(ContainerState::Running | ContainerState::Failed)
                ) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let _ = tokio::time::timeout(ADOPTION_WAIT, wait).await;
    adopting
        .iter()
        .filter(|c| {
            node.get(**c)
                .is_some_and(|h| h.state() == ContainerState::Running)
        })
        .count()
}

/// Every `--resync-ms`: every container id found, and the host, enqueued.
async fn resync(node: Arc<Node>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(node.cfg.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match reconcile::discover(&node).await {
            Ok(ids) => node
                .ctl
                .enqueue_all(ids.into_iter().map(Key::Container).chain([Key::Host])),
            Err(e) => warn!(error = %e, "resync cannot list containerd's containers"),
        }
    }
}

/// The ZooKeeper trigger: keeps [`node::Desired`] and enqueues what changed.
async fn watch_wanted(node: Arc<Node>, base: String, shutdown: CancellationToken) {
    let mut watch = node.zk.watch_tree(&base);
    let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).retry();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = watch.next() => e,
        };
        match event {
            Some(WatchEvent::Resync) => loop {
                match read_wanted(&node, &base).await {
                    Ok(wanted) => {
                        retry.reset();
                        let changed = node.set_desired(wanted);
                        node.ctl
                            .enqueue_all(changed.into_iter().map(Key::Container));
                        node.resend_statuses();
                        break;
                    }
                    Err(e) => {
                        // Never act on an unreadable tree: keep what runs.
                        let delay = retry.next_delay();
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot list this node's containers");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            },
            Some(WatchEvent::Created(p)) => {
                if let Some(cid) = our_container(&node, &p) {
                    node.set_wanted(cid, true);
                    node.ctl.enqueue(Key::Container(cid));
                }
            }
            Some(WatchEvent::Deleted(p)) => {
                if let Some(cid) = our_container(&node, &p) {
                    node.set_wanted(cid, false);
                    node.ctl.enqueue(Key::Container(cid));
                }
            }
            Some(WatchEvent::Changed(_)) => {}
            None => return,
        }
    }
}

/// `/node/{this node}/container/{cid}` → the cid; anything else → None.
fn our_container(node: &Node, path: &str) -> Option<Uuid> {
    match paths::parse(path)? {
        paths::Znode::Container(ip, cid) if ip == node.cfg.node_ip => Some(cid),
        _ => None,
    }
}
