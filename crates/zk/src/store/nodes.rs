//! Nodes (bismuthd hosts): provisioning, draining, deprovisioning, listing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bismuth_model::{paths, Backend, ContainerRecord, ContainerState, FunctionId, NodeState};
use serde::Serialize;
use uuid::Uuid;

use super::backends::container_state;
use super::functions::{add_container_removal, get_backends, set_backends};
use super::{get_decoded, StoreError};
use crate::{Txn, Zk, ZkError};

/// A node and what it runs.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    /// The node's address.
    pub ip: Ipv4Addr,
    /// Whether it takes new containers.
    pub enabled: bool,
    /// Its containers.
    pub containers: Vec<ContainerInfo>,
}

/// One container on a node.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerInfo {
    /// The container id.
    pub id: Uuid,
    /// Its function (`None` if the record is unreadable).
    pub function: Option<FunctionId>,
    /// Its state (`None` if the status znode is missing).
    pub state: Option<ContainerState>,
}

/// Registers a node as schedulable: `/node/{ip}` = 1 and `/node/{ip}/container`.
pub async fn provision(zk: &Zk, ip: Ipv4Addr) -> Result<(), StoreError> {
    zk.ensure_bootstrapped().await?;
    let mut txn = Txn::new();
    txn.create(paths::node(ip), NodeState::Enabled.encode())
        .create(paths::node_containers(ip), Vec::new());
    match zk.commit(&txn).await {
        Err(ZkError::NodeExists { .. }) => Err(StoreError::NodeExists(ip)),
        other => Ok(other?),
    }
}

/// Sets whether a node takes new containers (drain / undrain).
pub async fn set_state(zk: &Zk, ip: Ipv4Addr, state: NodeState) -> Result<(), StoreError> {
    match zk.set(&paths::node(ip), &state.encode(), None).await {
        Err(ZkError::NoNode { .. }) => Err(StoreError::NodeNotFound(ip)),
        other => Ok(other.map(|_| ())?),
    }
}

/// Drains a node (it takes no new containers); with `evacuate`, also asks
/// the controller to move its instances away (`/node/{ip}/evacuate`),
/// replacements first. One transaction.
pub async fn drain(zk: &Zk, ip: Ipv4Addr, evacuate: bool) -> Result<(), StoreError> {
    let mut txn = Txn::new();
    txn.set(paths::node(ip), NodeState::Disabled.encode(), None);
    if evacuate && !zk.exists(&paths::node_evacuate(ip)).await? {
        txn.create(paths::node_evacuate(ip), Vec::new());
    }
    match zk.commit(&txn).await {
        Err(ZkError::NoNode { .. }) => Err(StoreError::NodeNotFound(ip)),
        Err(ZkError::NodeExists { .. }) => Ok(()),
        other => Ok(other?),
    }
}

/// Makes a drained node schedulable again and ends an evacuation.
pub async fn undrain(zk: &Zk, ip: Ipv4Addr) -> Result<(), StoreError> {
    let mut txn = Txn::new();
    txn.set(paths::node(ip), NodeState::Enabled.encode(), None);
    if zk.exists(&paths::node_evacuate(ip)).await? {
        txn.delete(paths::node_evacuate(ip), None);
    }
    match zk.commit(&txn).await {
        Err(ZkError::NoNode { path }) if path == paths::node(ip) => {
            Err(StoreError::NodeNotFound(ip))
        }
        other => Ok(other?),
    }
}

/// Whether the other alive, schedulable nodes have room for every
/// instance on `ip`; `Some(why not)` when they do not.
pub async fn evacuation_shortfall(zk: &Zk, ip: Ipv4Addr) -> Result<Option<String>, StoreError> {
    use bismuth_model::placement::{place, Candidate};
    use bismuth_model::{FunctionDefinition, NodeCapacity};
    use std::collections::HashMap;

    let nodes = list_nodes(zk).await?;
    if !nodes.iter().any(|n| n.ip == ip) {
        return Err(StoreError::NodeNotFound(ip));
    }
    let mut defs: HashMap<FunctionId, FunctionDefinition> = HashMap::new();
    for f in nodes
        .iter()
        .flat_map(|n| &n.containers)
        .filter_map(|c| c.function)
    {
        if let std::collections::hash_map::Entry::Vacant(e) = defs.entry(f) {
            if let Ok(d) = super::functions::get_function(zk, f).await {
                e.insert(d.value);
            }
        }
    }
    let mut candidates = Vec::new();
    for n in nodes.iter().filter(|n| n.ip != ip && n.enabled) {
        if zk.exists(&paths::node_evacuate(n.ip)).await? {
            continue;
        }
        let Some(alive) = zk.get_opt(&paths::node_alive(n.ip)).await? else {
            continue;
        };
        let Ok(cap) = serde_json::from_slice::<NodeCapacity>(&alive.value) else {
            continue;
        };
        let (mut cpu, mut memory) = (0.0, 0u64);
        for d in n.containers.iter().filter_map(|c| defs.get(&c.function?)) {
            cpu += d.cpu;
            memory += d.memory;
        }
        candidates.push(Candidate {
            ip: n.ip,
            free_cpu: cap.cpu - cpu,
            free_memory: cap.memory.saturating_sub(memory),
            instances: 0,
        });
    }
    let leaving = nodes
        .iter()
        .find(|n| n.ip == ip)
        .map(|n| n.containers.clone())
        .unwrap_or_default();
    // Place the leaving instances one by one on what is left.
    for (k, c) in leaving.iter().enumerate() {
        let Some(def) = c.function.and_then(|f| defs.get(&f)) else {
            continue;
        };
        match place(candidates.clone(), def.cpu, def.memory, 1) {
            Ok(chosen) => {
                if let Some(n) = candidates.iter_mut().find(|n| n.ip == chosen[0]) {
                    n.free_cpu -= def.cpu;
                    n.free_memory -= def.memory;
                }
            }
            Err(_) => {
                return Ok(Some(format!(
                    "no other alive, enabled node has room for instance {} of {} on {ip} (it needs {} cpu and {} bytes of memory)",
                    k + 1,
                    leaving.len(),
                    def.cpu,
                    def.memory
                )))
            }
        }
    }
    Ok(None)
}

/// Reads a node's state.
pub async fn get_state(zk: &Zk, ip: Ipv4Addr) -> Result<NodeState, StoreError> {
    get_decoded(zk, &paths::node(ip), NodeState::decode)
        .await?
        .map(|v| v.value)
        .ok_or(StoreError::NodeNotFound(ip))
}

/// Removes a node. With containers on it this fails unless `force`, which
/// also removes them from their functions' backends, all in one transaction.
/// Returns the number of containers removed.
pub async fn deprovision(zk: &Zk, ip: Ipv4Addr, force: bool) -> Result<usize, StoreError> {
    for attempt in 0..10 {
        if !zk.exists(&paths::node(ip)).await? {
            return Err(StoreError::NodeNotFound(ip));
        }
        let containers = zk.children_opt(&paths::node_containers(ip)).await?;
        if !containers.is_empty() && !force {
            return Err(StoreError::NodeBusy {
                ip,
                containers: containers.len(),
            });
        }
        let mut txn = Txn::new();
        // Take the node's containers out of every function that lists them.
        let mut by_function: BTreeMap<FunctionId, Vec<Uuid>> = BTreeMap::new();
        for c in &containers {
            let Ok(cid) = c.parse::<Uuid>() else { continue };
            let record = get_decoded(zk, &paths::container(ip, cid), ContainerRecord::decode).await;
            if let Ok(Some(r)) = record {
                by_function
                    .entry(r.value.function_id)
                    .or_default()
                    .push(cid);
            }
        }
        for (function, cids) in &by_function {
            match get_backends(zk, *function).await {
                Ok(b) => {
                    let keep: Vec<Backend> = b
                        .value
                        .iter()
                        .filter(|x| !(x.ip == ip && cids.contains(&x.container_id)))
                        .copied()
                        .collect();
                    if keep.len() != b.value.len() {
                        set_backends(&mut txn, *function, &keep, b.version);
                    }
                }
                Err(StoreError::FunctionNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for c in &containers {
            match c.parse::<Uuid>() {
                Ok(cid) => {
                    add_container_removal(
                        zk,
                        &mut txn,
                        Backend {
                            ip,
                            container_id: cid,
                        },
                    )
                    .await?
                }
                Err(_) => {
                    txn.delete(format!("{}/{c}", paths::node_containers(ip)), None);
                }
            }
        }
        for child in zk.children_opt(&paths::node(ip)).await? {
            if child != "container" {
                txn.delete(format!("{}/{child}", paths::node(ip)), None);
            }
        }
        txn.delete(paths::node_containers(ip), None)
            .delete(paths::node(ip), None);
        match zk.commit(&txn).await {
            Ok(()) => return Ok(containers.len()),
            Err(ZkError::BadVersion { .. } | ZkError::NoNode { .. } | ZkError::NotEmpty { .. }) => {
                crate::session::backoff(attempt).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ZkError::Contended {
        path: paths::node(ip),
        attempts: 10,
    }
    .into())
}

/// Lists every node with its containers, sorted by address.
pub async fn list_nodes(zk: &Zk) -> Result<Vec<NodeInfo>, StoreError> {
    zk.ensure_bootstrapped().await?;
    let mut ips: Vec<Ipv4Addr> = zk
        .children(paths::NODES)
        .await?
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    ips.sort();
    let mut out = Vec::with_capacity(ips.len());
    for ip in ips {
        let enabled = match get_state(zk, ip).await {
            Ok(state) => state == NodeState::Enabled,
            Err(StoreError::NodeNotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        out.push(NodeInfo {
            ip,
            enabled,
            containers: list_containers(zk, ip).await?,
        });
    }
    Ok(out)
}

/// Lists a node's containers with their functions and states.
pub async fn list_containers(zk: &Zk, ip: Ipv4Addr) -> Result<Vec<ContainerInfo>, StoreError> {
    let mut out = Vec::new();
    for c in zk.children_opt(&paths::node_containers(ip)).await? {
        let Ok(id) = c.parse::<Uuid>() else { continue };
        let function = get_decoded(zk, &paths::container(ip, id), ContainerRecord::decode)
            .await
            .ok()
            .flatten()
            .map(|r| r.value.function_id);
        let state = container_state(zk, ip, id).await.ok().flatten();
        out.push(ContainerInfo {
            id,
            function,
            state,
        });
    }
    Ok(out)
}
