//! A container ZooKeeper no longer wants (or `--clean-up`): a Running one
//! keeps serving for `--unroute-delay-ms` first; then everything named by
//! its id goes, each step tolerating "already gone": the task
//! (SIGTERM, SIGKILL after the grace period), the container record and
//! snapshot, the rules element, the veth and namespace, the svcprovider,
//! the files, and last its /30.

use std::time::Duration;

use bismuth_controller::Action;
use bismuth_model::ContainerState;
use tracing::info;
use uuid::Uuid;

use super::Error;
use crate::net::{self, Net};
use crate::node::Node;
use crate::runtime::LABEL_SLOT;

/// Waits (up to `limit`) until no request is in flight on the container:
/// those that reached it before the frontends stopped sending finish.
async fn drain_requests(h: &crate::node::Handle, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let in_flight = h.load.in_flight();
    if in_flight == 0 {
        return;
    }
    info!(container = %h.cid, in_flight, "waiting for requests in flight before stopping");
    while h.load.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn remove(node: &Node, cid: Uuid) -> Result<Action, Error> {
    let cfg = &node.cfg;
    let id = cid.to_string();
    let handle = node.get(cid);
    let mut guard = match &handle {
        Some(h) => Some(h.actual.lock().await),
        None => None,
    };
    if let Some(h) = &handle {
        // Frontends learn it is unwanted from the same ZooKeeper change that
        // brought us here: let them stop sending to it while it still
        // answers, then stop serving it before anything is taken away.
        if h.state() == ContainerState::Running {
            if !cfg.unroute_delay.is_zero() {
                tokio::time::sleep(cfg.unroute_delay).await;
            }
            drain_requests(h, cfg.drain_requests).await;
        }
        h.state.send_replace(ContainerState::Invalid);
    }
    // Its network: known, or from the container's label (a leftover).
    let mut net_of = guard.as_ref().and_then(|a| a.net.clone());
    let container = node
        .rt
        .container(&id)
        .await
        .map_err(|source| Error::Containerd {
            cid,
            what: "reading the container",
            source,
        })?;
    if net_of.is_none() {
        net_of = container
            .as_ref()
            .and_then(|c| c.labels.get(LABEL_SLOT)?.parse().ok())
            .and_then(|slot| cfg.pool.subnet(slot))
            .map(|s| Net::new(&cfg.instance, cid, s));
    }
    let grace = if container.is_some() {
        cfg.stop_grace
    } else {
        Duration::ZERO
    };
    // What it used since the last scrape counts before it goes.
    if let Some((function, _)) = guard.as_ref().and_then(|a| a.function.clone()) {
        node.metrics.account(cid, function);
    }
    node.metrics.forget(cid);
    let started = std::time::Instant::now();
    node.rt
        .remove(&id, grace)
        .await
        .map_err(|source| Error::Containerd {
            cid,
            what: "removing the container",
            source,
        })?;
    if let Some(n) = &net_of {
        node.firewall.forget(&n.host_if, n.host_ip()).await;
    }
    let (ns, link) = net::names(&cfg.instance, cid);
    if std::path::Path::new("/sys/class/net").join(&link).exists() {
        net::delete_link(&link).await;
    }
    if std::path::Path::new("/run/netns").join(&ns).exists() {
        net::delete_namespace(&ns).await;
    }
    let files = crate::files::Files::new(&cfg.state_dir, &cfg.run_dir, cid);
    node.svc.stop(&files);
    files.remove();
    cfg.pool.release(cid);
    if let Some(a) = guard.as_mut() {
        **a = Default::default();
    }
    node.forget(cid);
    if container.is_some() || handle.is_some() {
        info!(container = %cid, took_ms = started.elapsed().as_millis() as u64, "removed");
    }
    Ok(Action::done())
}
