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
