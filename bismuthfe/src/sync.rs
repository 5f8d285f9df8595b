//! Keeps the [`RoutingTable`] current from ZooKeeper.
//!
//! Three subtree watches (`/route`, `/function`, `/node`) feed one task that
//! owns a [`Model`] of routes, backend lists and container states. A batch
//! of events is applied by re-reading just the znodes they name; a
//! `Resync` (start, reconnect, new session) re-reads everything. After each
//! batch a fresh snapshot is swapped in. ZooKeeper being down only delays
//! updates: requests keep using the last snapshot.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bismuth_controller::Backoff;
use bismuth_model::paths::{self, Znode};
use bismuth_model::{
    unpack_backends, Backend, ContainerState, FunctionDefinition, FunctionId, DEFAULT_CONCURRENCY,
};
use bismuth_zk::store::functions::decode_function_id;
use bismuth_zk::{TreeWatch, WatchEvent, Zk, ZkError};
use std::sync::atomic::AtomicU64;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::load::FrontendLoad;
use crate::ring;
use crate::table::{RoutingTable, Target};

/// What the sync task knows of the tree.
#[derive(Debug, Default)]
struct Model {
    routes: HashMap<String, FunctionId>,
    backends: HashMap<FunctionId, Vec<Backend>>,
    states: HashMap<(Ipv4Addr, Uuid), ContainerState>,
    /// Nodes whose bismuthd holds no session (no `alive` znode): their
    /// backends get no requests, whatever their last status says.
    dead: HashSet<Ipv4Addr>,
    /// Each function's `concurrency` (from its definition).
    concurrency: HashMap<FunctionId, u32>,
    /// This frontend's requests on each backend, carried from one table to
    /// the next.
    counts: HashMap<Uuid, Arc<AtomicU64>>,
}

impl Model {
    fn snapshot(&mut self) -> RoutingTable {
        let listed: HashSet<Uuid> = self
            .backends
            .values()
            .flatten()
            .map(|b| b.container_id)
            .collect();
        self.counts.retain(|cid, _| listed.contains(cid));
        let mut running = Vec::with_capacity(self.backends.len());
        for (id, list) in &self.backends {
            let up = list
                .iter()
                .filter(|b| {
                    self.states.get(&(b.ip, b.container_id)) == Some(&ContainerState::Running)
                        && !self.dead.contains(&b.ip)
                })
                .map(|b| Target {
                    backend: *b,
                    hash: ring::backend_hash(b),
                    in_flight: Arc::clone(self.counts.entry(b.container_id).or_default()),
                })
                .collect();
            let concurrency = self
                .concurrency
                .get(id)
                .copied()
                .unwrap_or(DEFAULT_CONCURRENCY);
            running.push((*id, up, concurrency));
        }
        RoutingTable::new(self.routes.clone(), running)
    }

    /// Re-reads everything with batched multi-reads: a handful of round trips
    /// however many routes, functions and backends there are.
    async fn reload(&mut self, zk: &Zk) -> Result<(), ZkError> {
        let mut fresh = Model::default();
        let hosts = zk.children_opt(paths::ROUTES).await?;
        let route_data = zk
            .get_many(&hosts.iter().map(|h| paths::route(h)).collect::<Vec<_>>())
            .await?;
        for (host, raw) in hosts.into_iter().zip(route_data) {
            match raw.map(|r| decode_function_id(&r.value)) {
                Some(Ok(id)) => {
                    fresh.routes.insert(host, id);
                }
                Some(Err(reason)) => warn!(route = host, %reason, "ignoring unreadable route"),
                None => {}
            }
        }
        let ids: Vec<FunctionId> = zk
            .children_opt(paths::FUNCTIONS)
            .await?
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let lists = zk
            .get_many(
                &ids.iter()
                    .map(|id| paths::function_backends(*id))
                    .collect::<Vec<_>>(),
            )
            .await?;
        let defs = zk
            .get_many(
                &ids.iter()
                    .map(|id| paths::function(*id))
                    .collect::<Vec<_>>(),
            )
            .await?;
        for (id, raw) in ids.iter().zip(defs) {
            if let Some(c) = raw.as_ref().and_then(|r| concurrency_of(&r.value)) {
                fresh.concurrency.insert(*id, c);
            }
        }
        for (id, raw) in ids.into_iter().zip(lists) {
            let Some(raw) = raw else { continue };
            let list = unpack_backends(&raw.value).unwrap_or_else(|e| {
                warn!(function = %id, error = %e, "ignoring unreadable backend list");
                Vec::new()
            });
            fresh.backends.insert(id, list);
        }
        let all: Vec<Backend> = fresh.backends.values().flatten().copied().collect();
        let states = zk
            .get_many(
                &all.iter()
                    .map(|b| paths::container_status(b.ip, b.container_id))
                    .collect::<Vec<_>>(),
            )
            .await?;
        for (b, raw) in all.into_iter().zip(states) {
            if let Some(state) = raw.and_then(|r| ContainerState::decode(&r.value)) {
                fresh.states.insert((b.ip, b.container_id), state);
            }
        }
        let nodes: Vec<Ipv4Addr> = zk
            .children_opt(paths::NODES)
            .await?
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let alive = zk
            .get_many(
                &nodes
                    .iter()
                    .map(|ip| paths::node_alive(*ip))
                    .collect::<Vec<_>>(),
            )
            .await?;
        for (ip, a) in nodes.into_iter().zip(alive) {
            if a.is_none() {
                fresh.dead.insert(ip);
            }
        }
        fresh.counts = std::mem::take(&mut self.counts);
        *self = fresh;
        Ok(())
    }

    async fn refresh_alive(&mut self, zk: &Zk, ip: Ipv4Addr) -> Result<(), ZkError> {
        if zk.exists(&paths::node_alive(ip)).await? {
            self.dead.remove(&ip);
        } else {
            self.dead.insert(ip);
        }
        Ok(())
    }

    async fn refresh_route(&mut self, zk: &Zk, host: &str) -> Result<(), ZkError> {
        match zk.get_opt(&paths::route(host)).await? {
            Some(raw) => match decode_function_id(&raw.value) {
                Ok(id) => {
                    self.routes.insert(host.to_owned(), id);
                }
                Err(reason) => {
                    warn!(route = host, %reason, "ignoring unreadable route");
                    self.routes.remove(host);
                }
            },
            None => {
                self.routes.remove(host);
            }
        }
        Ok(())
    }

    async fn refresh_function(&mut self, zk: &Zk, id: FunctionId) -> Result<(), ZkError> {
        match zk
            .get_opt(&paths::function(id))
            .await?
            .and_then(|r| concurrency_of(&r.value))
        {
            Some(c) => self.concurrency.insert(id, c),
            None => self.concurrency.remove(&id),
        };
        let list = match zk.get_opt(&paths::function_backends(id)).await? {
            Some(raw) => unpack_backends(&raw.value).unwrap_or_else(|e| {
                warn!(function = %id, error = %e, "ignoring unreadable backend list");
                Vec::new()
            }),
            None => {
                if let Some(old) = self.backends.remove(&id) {
                    for b in old {
                        self.states.remove(&(b.ip, b.container_id));
                    }
                }
                return Ok(());
            }
        };
        for b in &list {
            if !self.states.contains_key(&(b.ip, b.container_id)) {
                self.refresh_state(zk, b.ip, b.container_id).await?;
            }
        }
        if let Some(old) = self.backends.insert(id, list) {
            let current = &self.backends[&id];
            for b in old.iter().filter(|b| !current.contains(b)) {
                self.states.remove(&(b.ip, b.container_id));
            }
        }
        Ok(())
    }

    async fn refresh_state(&mut self, zk: &Zk, ip: Ipv4Addr, cid: Uuid) -> Result<(), ZkError> {
        let raw = zk.get_opt(&paths::container_status(ip, cid)).await?;
        match raw.and_then(|r| ContainerState::decode(&r.value)) {
            Some(state) => self.states.insert((ip, cid), state),
            None => self.states.remove(&(ip, cid)),
        };
        Ok(())
    }

    /// Re-reads what one event names.
    async fn apply(&mut self, zk: &Zk, path: &str) -> Result<(), ZkError> {
        match paths::parse(path) {
            Some(Znode::Route(host)) => self.refresh_route(zk, host).await,
            Some(Znode::NodeAlive(ip) | Znode::Node(ip)) => self.refresh_alive(zk, ip).await,
            Some(Znode::Function(id) | Znode::FunctionBackends(id)) => {
                self.refresh_function(zk, id).await
            }
            Some(Znode::Container(ip, cid) | Znode::ContainerStatus(ip, cid))
                if self.is_backend(ip, cid) =>
            {
                self.refresh_state(zk, ip, cid).await
            }
            _ => Ok(()),
        }
    }

    fn is_backend(&self, ip: Ipv4Addr, cid: Uuid) -> bool {
        self.states.contains_key(&(ip, cid))
            || self
                .backends
                .values()
                .flatten()
                .any(|b| b.ip == ip && b.container_id == cid)
    }
}

/// The `concurrency` of a stored definition (`None` if unreadable).
fn concurrency_of(raw: &[u8]) -> Option<u32> {
    serde_json::from_slice::<FunctionDefinition>(raw)
        .ok()
        .map(|d| d.concurrency())
}

/// Runs until `shutdown`, publishing snapshots into `table`. `ready` turns
/// true after the first complete load (and is sent again after every
/// update, so held requests learn of new backends).
pub async fn run(
    zk: Zk,
    table: Arc<ArcSwap<RoutingTable>>,
    ready: watch::Sender<bool>,
    load: Arc<FrontendLoad>,
    shutdown: CancellationToken,
) {
    let mut watches = [
        zk.watch_tree(paths::ROUTES),
        zk.watch_tree(paths::FUNCTIONS),
        zk.watch_tree(paths::NODES),
    ];
    let mut model = Model::default();
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(3)).retry();
    let mut need_reload = true;
    let mut pending: Vec<String> = Vec::new();
    loop {
        // Unless a failed refresh is being retried, wait for an event; then
        // take everything already queued as one batch.
        let mut batch = Vec::new();
        if !need_reload && pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = next_event(&mut watches) => batch.push(ev),
            }
        }
        batch.extend(drain(&mut watches));
        for ev in batch {
            match ev {
                WatchEvent::Resync => need_reload = true,
                other => pending.extend(other.path().map(str::to_owned)),
            }
        }
        let result = if need_reload {
            model.reload(&zk).await
        } else {
            apply_all(&mut model, &zk, &pending).await
        };
        match result {
            Ok(()) => {
                retry.reset();
                if need_reload {
                    let (routes, functions) = model.snapshot().size();
                    info!(routes, functions, "routing table loaded");
                }
                need_reload = false;
                pending.clear();
                table.store(Arc::new(model.snapshot()));
                ready.send_replace(true);
                load.retain(|id| model.backends.contains_key(id));
            }
            Err(e) => {
                // Keep serving the last snapshot; re-read everything when ZooKeeper is back.
                need_reload = true;
                let delay = retry.next_delay();
                warn!(error = %e, retry_in = ?delay, "cannot refresh routing table");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn apply_all(model: &mut Model, zk: &Zk, paths: &[String]) -> Result<(), ZkError> {
    for path in paths {
        debug!(path, "applying change");
        model.apply(zk, path).await?;
    }
    Ok(())
}

async fn next_event(watches: &mut [TreeWatch; 3]) -> WatchEvent {
    let [a, b, c] = watches;
    let ev = tokio::select! {
        ev = a.next() => ev,
        ev = b.next() => ev,
        ev = c.next() => ev,
    };
    // A watch task only ends if the runtime is shutting down.
    ev.unwrap_or(WatchEvent::Resync)
}

fn drain(watches: &mut [TreeWatch; 3]) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    for w in watches.iter_mut() {
        while let Some(ev) = w.try_next() {
            out.push(ev);
        }
    }
    out
}
