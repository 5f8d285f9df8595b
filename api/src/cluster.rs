//! The nodes as the scheduler and `GET /node` see them: state, liveness,
//! announced capacity, and what their containers already use.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bismuth_model::{
    paths, ContainerRecord, FunctionDefinition, FunctionId, NodeCapacity, NodeState,
};
use bismuth_zk::{Zk, ZkError};
use serde::Serialize;

use crate::schedule::Candidate;

/// One node, read from ZooKeeper.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// The node's address.
    pub ip: Ipv4Addr,
    /// `enabled` or `drained`.
    pub state: &'static str,
    /// Whether its bismuthd holds a live session.
    pub alive: bool,
    /// What it announced, if alive.
    pub capacity: Option<NodeCapacity>,
    /// What its containers were given.
    pub used: NodeCapacity,
    /// Number of containers.
    pub containers: usize,
    /// Containers per function.
    #[serde(skip)]
    pub functions: HashMap<FunctionId, usize>,
    /// Data version of `/node/{ip}`, checked when placing onto it.
    #[serde(skip)]
    pub version: i32,
}

/// Reads every node with its load. Definitions are read once per function.
pub async fn read_nodes(zk: &Zk) -> Result<Vec<NodeView>, ZkError> {
    zk.ensure_bootstrapped().await?;
    let mut defs: HashMap<FunctionId, Option<FunctionDefinition>> = HashMap::new();
    let mut out = Vec::new();
    for child in zk.children(paths::NODES).await? {
        let Ok(ip) = child.parse::<Ipv4Addr>() else {
            continue;
        };
        let Some(raw) = zk.get_opt(&paths::node(ip)).await? else {
            continue;
        };
        let enabled = NodeState::decode(&raw.value) == Ok(NodeState::Enabled);
        let alive = zk.get_opt(&paths::node_alive(ip)).await?;
        let capacity = alive
            .as_ref()
            .and_then(|a| serde_json::from_slice::<NodeCapacity>(&a.value).ok());
        let mut used = NodeCapacity {
            cpu: 0.0,
            memory: 0,
        };
        let mut functions: HashMap<FunctionId, usize> = HashMap::new();
        let containers = zk.children_opt(&paths::node_containers(ip)).await?;
        for c in &containers {
            let Ok(cid) = c.parse() else { continue };
            let Some(rec) = zk.get_opt(&paths::container(ip, cid)).await? else {
                continue;
            };
            let Ok(rec) = ContainerRecord::decode(&rec.value) else {
                continue;
            };
            *functions.entry(rec.function_id).or_default() += 1;
            if let std::collections::hash_map::Entry::Vacant(slot) = defs.entry(rec.function_id) {
                let def = zk
                    .get_opt(&paths::function(rec.function_id))
                    .await?
                    .and_then(|d| serde_json::from_slice(&d.value).ok());
                slot.insert(def);
            }
            if let Some(Some(def)) = defs.get(&rec.function_id) {
                used.cpu += def.cpu;
                used.memory += def.memory;
            }
        }
        out.push(NodeView {
            ip,
            state: if enabled { "enabled" } else { "drained" },
            alive: alive.is_some(),
            capacity,
            used,
            containers: containers.len(),
            functions,
            version: raw.version,
        });
    }
    out.sort_by_key(|n| n.ip);
    Ok(out)
}

/// The nodes that may take new instances of `function`, with their free room.
pub fn candidates(nodes: &[NodeView], function: FunctionId) -> Vec<Candidate> {
    nodes
        .iter()
        .filter(|n| n.state == "enabled" && n.alive)
        .filter_map(|n| {
            let cap = n.capacity?;
            Some(Candidate {
                ip: n.ip,
                free_cpu: cap.cpu - n.used.cpu,
                free_memory: cap.memory.saturating_sub(n.used.memory),
                instances: n.functions.get(&function).copied().unwrap_or(0),
            })
        })
        .collect()
}
