//! The nodes as the scheduler and `GET /node` see them: state, liveness,
//! announced capacity, and what their containers already use.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bismuth_model::{
    paths, ContainerRecord, FunctionDefinition, FunctionId, NodeCapacity, NodeState,
};
use bismuth_zk::{Zk, ZkError};
use serde::Serialize;

use bismuth_model::placement::Candidate;

/// One node, read from ZooKeeper.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
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

/// Reads every node with its load. Uses multi-reads, so the number of
/// round trips does not grow with the number of containers.
pub async fn read_nodes(zk: &Zk) -> Result<Vec<NodeView>, ZkError> {
    zk.ensure_bootstrapped().await?;
    let ips: Vec<Ipv4Addr> = zk
        .children(paths::NODES)
        .await?
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let node_paths: Vec<String> = ips
        .iter()
        .flat_map(|ip| [paths::node(*ip), paths::node_alive(*ip)])
        .collect();
    let node_data = zk.get_many(&node_paths).await?;
    let container_lists = zk
        .children_many(
            &ips.iter()
                .map(|ip| paths::node_containers(*ip))
                .collect::<Vec<_>>(),
        )
        .await?;

    // Every container's record, then every distinct function's definition.
    let mut container_paths = Vec::new();
    for (ip, list) in ips.iter().zip(&container_lists) {
        for c in list {
            if let Ok(cid) = c.parse() {
                container_paths.push((*ip, paths::container(*ip, cid)));
            }
        }
    }
    let records = zk
        .get_many(
            &container_paths
                .iter()
                .map(|(_, p)| p.clone())
                .collect::<Vec<_>>(),
        )
        .await?;
    let mut owners: HashMap<Ipv4Addr, Vec<FunctionId>> = HashMap::new();
    for ((ip, _), r) in container_paths.iter().zip(&records) {
        if let Some(rec) = r
            .as_ref()
            .and_then(|r| ContainerRecord::decode(&r.value).ok())
        {
            owners.entry(*ip).or_default().push(rec.function_id);
        }
    }
    let mut function_ids: Vec<FunctionId> = owners.values().flatten().copied().collect();
    function_ids.sort();
    function_ids.dedup();
    let defs_raw = zk
        .get_many(
            &function_ids
                .iter()
                .map(|f| paths::function(*f))
                .collect::<Vec<_>>(),
        )
        .await?;
    let defs: HashMap<FunctionId, FunctionDefinition> = function_ids
        .iter()
        .zip(defs_raw)
        .filter_map(|(id, raw)| Some((*id, serde_json::from_slice(&raw?.value).ok()?)))
        .collect();

    let mut out = Vec::with_capacity(ips.len());
    for (i, ip) in ips.iter().enumerate() {
        let Some(raw) = &node_data[2 * i] else {
            continue;
        };
        let alive = &node_data[2 * i + 1];
        let mut used = NodeCapacity::default();
        let mut functions: HashMap<FunctionId, usize> = HashMap::new();
        for f in owners.get(ip).into_iter().flatten() {
            *functions.entry(*f).or_default() += 1;
            if let Some(def) = defs.get(f) {
                used.cpu += def.cpu;
                used.memory += def.memory;
            }
        }
        out.push(NodeView {
            ip: *ip,
            state: if NodeState::decode(&raw.value) == Ok(NodeState::Enabled) {
                "enabled"
            } else {
                "drained"
            },
            alive: alive.is_some(),
            capacity: alive
                .as_ref()
                .and_then(|a| serde_json::from_slice::<NodeCapacity>(&a.value).ok()),
            used,
            containers: container_lists[i].len(),
            functions,
            version: raw.version,
        });
    }
    out.sort_by_key(|n| n.ip);
    Ok(out)
}

/// The nodes that may take new instances of `function` (with `isolation`),
/// with their free room.
pub fn candidates(
    nodes: &[NodeView],
    function: FunctionId,
    isolation: bismuth_model::Isolation,
) -> Vec<Candidate> {
    nodes
        .iter()
        .filter(|n| n.state == "enabled" && n.alive)
        .filter_map(|n| {
            let cap = n.capacity.filter(|c| c.runs(isolation))?;
            Some(Candidate {
                ip: n.ip,
                free_cpu: cap.cpu - n.used.cpu,
                free_memory: cap.memory.saturating_sub(n.used.memory),
                instances: n.functions.get(&function).copied().unwrap_or(0),
            })
        })
        .collect()
}
