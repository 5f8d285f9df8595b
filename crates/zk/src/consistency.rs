//! Finds dangling references in an environment's tree and repairs them.
//!
//! [`check`] reads the whole tree and returns [`Finding`]s; [`fix`] repairs
//! each with its own small, version-checked write, so it never clobbers a
//! concurrent change (a finding that no longer holds is skipped). Data that
//! cannot be decoded is reported but never deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use bismuth_model::{
    hostname, pack_backends, paths, unpack_backends, Backend, ContainerRecord, ContainerState,
    FunctionDefinition, FunctionId,
};
use serde::Serialize;
use uuid::Uuid;

use crate::store::functions::decode_function_id;
use crate::store::StoreError;
use crate::{Txn, Zk, ZkError};

/// One inconsistency in the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A backend entry points at a node that is not provisioned.
    BackendOnUnknownNode {
        function: FunctionId,
        backend: Backend,
    },
    /// A backend entry points at a container znode that does not exist.
    BackendWithoutContainer {
        function: FunctionId,
        backend: Backend,
    },
    /// A container znode belongs to a function that does not exist.
    ContainerOfMissingFunction {
        ip: Ipv4Addr,
        container: Uuid,
        function: FunctionId,
    },
    /// A container znode has no status child.
    ContainerWithoutStatus { ip: Ipv4Addr, container: Uuid },
    /// A route points at a function that does not exist.
    RouteToMissingFunction {
        hostname: String,
        function: FunctionId,
        version: i32,
    },
    /// A function lists a route hostname whose route znode is missing.
    RouteMissing {
        function: FunctionId,
        hostname: String,
    },
    /// A function has no backends znode.
    BackendsMissing { function: FunctionId },
    /// A function lists more backends than it wants, with no rollout under
    /// way (the control-plane controller removes extras: is one running?).
    MoreBackendsThanWanted {
        function: FunctionId,
        backends: usize,
        wanted: u32,
    },
    /// A listed container has been Starting (or not picked up) for longer
    /// than [`STUCK_AFTER`]: its image, its command or its node is wrong.
    StuckStarting {
        function: FunctionId,
        backend: Backend,
        state: String,
        minutes: u64,
    },
    /// A znode's data cannot be decoded (reported, never deleted).
    Unreadable { path: String, reason: String },
}

/// How long a container may stay Starting (or Invalid) before it is reported.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

impl Finding {
    /// Whether [`fix`] repairs this kind of finding.
    pub fn fixable(&self) -> bool {
        !matches!(
            self,
            Finding::Unreadable { .. }
                | Finding::MoreBackendsThanWanted { .. }
                | Finding::StuckStarting { .. }
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::BackendOnUnknownNode { function, backend } => write!(
                f,
                "function {function} lists backend {} on node {}, which is not provisioned",
                backend.container_id, backend.ip
            ),
            Finding::BackendWithoutContainer { function, backend } => write!(
                f,
                "function {function} lists backend {} on node {}, but that container znode is missing",
                backend.container_id, backend.ip
            ),
            Finding::ContainerOfMissingFunction { ip, container, function } => write!(
                f,
                "container {container} on node {ip} belongs to function {function}, which does not exist"
            ),
            Finding::ContainerWithoutStatus { ip, container } => {
                write!(f, "container {container} on node {ip} has no status znode")
            }
            Finding::RouteToMissingFunction { hostname, function, .. } => {
                write!(f, "route {hostname} points at function {function}, which does not exist")
            }
            Finding::RouteMissing { function, hostname } => {
                write!(f, "function {function} lists route {hostname}, but /route/{hostname} is missing")
            }
            Finding::BackendsMissing { function } => {
                write!(f, "function {function} has no backends znode")
            }
            Finding::MoreBackendsThanWanted { function, backends, wanted } => write!(
                f,
                "function {function} has {backends} backends but wants {wanted} and no rollout is under way; \
                 the controller removes extras (is an api process leading? GET /controller)"
            ),
            Finding::StuckStarting { function, backend, state, minutes } => write!(
                f,
                "container {} of function {function} on node {} has been {state} for {minutes} min; \
                 its logs say why (GET /function/{function}/logs)",
                backend.container_id, backend.ip
            ),
            Finding::Unreadable { path, reason } => write!(f, "{path}: {reason}"),
        }
    }
}

/// Reads the environment and lists every inconsistency found.
pub async fn check(zk: &Zk) -> Result<Vec<Finding>, StoreError> {
    check_with(zk, STUCK_AFTER).await
}

/// [`check`], reporting containers Starting for longer than `stuck_after`.
pub async fn check_with(
    zk: &Zk,
    stuck_after: std::time::Duration,
) -> Result<Vec<Finding>, StoreError> {
    zk.ensure_bootstrapped().await?;
    let mut findings = Vec::new();

    // Functions, their definitions and backend lists.
    let mut functions: BTreeMap<FunctionId, Option<FunctionDefinition>> = BTreeMap::new();
    let mut backends: BTreeMap<FunctionId, Vec<Backend>> = BTreeMap::new();
    for child in zk.children(paths::FUNCTIONS).await? {
        let Ok(id) = child.parse::<FunctionId>() else {
            findings.push(Finding::Unreadable {
                path: format!("{}/{child}", paths::FUNCTIONS),
                reason: "name is not a function id".into(),
            });
            continue;
        };
        let Some(raw) = zk.get_opt(&paths::function(id)).await? else {
            continue;
        };
        let def = match serde_json::from_slice::<FunctionDefinition>(&raw.value) {
            Ok(def) => Some(def),
            Err(e) => {
                findings.push(Finding::Unreadable {
                    path: paths::function(id),
                    reason: e.to_string(),
                });
                None
            }
        };
        functions.insert(id, def);
        match zk.get_opt(&paths::function_backends(id)).await? {
            None => findings.push(Finding::BackendsMissing { function: id }),
            Some(raw) => match unpack_backends(&raw.value) {
                Ok(list) => {
                    backends.insert(id, list);
                }
                Err(e) => findings.push(Finding::Unreadable {
                    path: paths::function_backends(id),
                    reason: e.to_string(),
                }),
            },
        }
    }

    // Nodes and their containers.
    let mut nodes = BTreeSet::new();
    let mut containers = BTreeSet::new();
    for child in zk.children(paths::NODES).await? {
        let Ok(ip) = child.parse::<Ipv4Addr>() else {
            findings.push(Finding::Unreadable {
                path: format!("{}/{child}", paths::NODES),
                reason: "name is not an IPv4 address".into(),
            });
            continue;
        };
        nodes.insert(ip);
        for c in zk.children_opt(&paths::node_containers(ip)).await? {
            let path = format!("{}/{c}", paths::node_containers(ip));
            let Ok(cid) = c.parse::<Uuid>() else {
                findings.push(Finding::Unreadable {
                    path,
                    reason: "name is not a container id".into(),
                });
                continue;
            };
            containers.insert((ip, cid));
            let Some(raw) = zk.get_opt(&path).await? else {
                continue;
            };
            match ContainerRecord::decode(&raw.value) {
                Ok(r) if !functions.contains_key(&r.function_id) => {
                    findings.push(Finding::ContainerOfMissingFunction {
                        ip,
                        container: cid,
                        function: r.function_id,
                    });
                }
                Ok(_) => {
                    if !zk.exists(&paths::container_status(ip, cid)).await? {
                        findings.push(Finding::ContainerWithoutStatus { ip, container: cid });
                    }
                }
                Err(e) => findings.push(Finding::Unreadable {
                    path,
                    reason: e.to_string(),
                }),
            }
        }
    }

    for (function, list) in &backends {
        if let Some(Some(def)) = functions.get(function) {
            let rolling = zk
                .get_opt(&paths::function_rollout(*function))
                .await?
                .is_some_and(|r| {
                    serde_json::from_slice::<serde_json::Value>(&r.value)
                        .is_ok_and(|v| v["state"] == "running")
                });
            if list.len() > def.max_instances as usize && !rolling {
                findings.push(Finding::MoreBackendsThanWanted {
                    function: *function,
                    backends: list.len(),
                    wanted: def.max_instances,
                });
            }
        }
        for b in list {
            if !nodes.contains(&b.ip) {
                findings.push(Finding::BackendOnUnknownNode {
                    function: *function,
                    backend: *b,
                });
            } else if !containers.contains(&(b.ip, b.container_id)) {
                findings.push(Finding::BackendWithoutContainer {
                    function: *function,
                    backend: *b,
                });
            } else if let Some((data, modified)) = zk
                .get_modified(&paths::container_status(b.ip, b.container_id))
                .await?
            {
                let state = bismuth_model::ContainerState::decode(&data);
                let waiting = matches!(
                    state,
                    Some(
                        bismuth_model::ContainerState::Starting
                            | bismuth_model::ContainerState::Invalid
                    )
                );
                let age_ms = now_ms().saturating_sub(modified.max(0) as u64);
                if waiting && age_ms >= stuck_after.as_millis() as u64 {
                    findings.push(Finding::StuckStarting {
                        function: *function,
                        backend: *b,
                        state: format!(
                            "{:?}",
                            state.unwrap_or(bismuth_model::ContainerState::Invalid)
                        ),
                        minutes: age_ms / 60_000,
                    });
                }
            }
        }
    }

    // Routes, both directions.
    let mut routed = BTreeMap::new();
    for host in zk.children(paths::ROUTES).await? {
        let path = paths::route(&host);
        let Some(raw) = zk.get_opt(&path).await? else {
            continue;
        };
        match decode_function_id(&raw.value) {
            Ok(function) if !functions.contains_key(&function) => {
                findings.push(Finding::RouteToMissingFunction {
                    hostname: host.clone(),
                    function,
                    version: raw.version,
                });
            }
            Ok(function) => {
                routed.insert(host.clone(), function);
            }
            Err(reason) => findings.push(Finding::Unreadable { path, reason }),
        }
    }
    for (id, def) in &functions {
        for host in def.iter().flat_map(|d| d.hostnames()) {
            if !routed.contains_key(&host) {
                findings.push(Finding::RouteMissing {
                    function: *id,
                    hostname: host,
                });
            }
        }
    }
    Ok(findings)
}

/// What happened to one finding in [`fix`].
#[derive(Debug)]
pub enum FixOutcome {
    /// Repaired.
    Fixed,
    /// Not repaired: not fixable, or the tree changed so it no longer applies.
    Skipped(String),
}

/// Repairs each fixable finding with its own version-checked write.
pub async fn fix(zk: &Zk, findings: &[Finding]) -> Result<Vec<FixOutcome>, StoreError> {
    let mut out = Vec::with_capacity(findings.len());
    for finding in findings {
        let outcome = match fix_one(zk, finding).await {
            Ok(outcome) => outcome,
            Err(
                ZkError::BadVersion { .. } | ZkError::NoNode { .. } | ZkError::NodeExists { .. },
            ) => FixOutcome::Skipped("the tree changed meanwhile; run the check again".into()),
            Err(e) => return Err(e.into()),
        };
        out.push(outcome);
    }
    Ok(out)
}

async fn fix_one(zk: &Zk, finding: &Finding) -> Result<FixOutcome, ZkError> {
    match finding {
        Finding::BackendOnUnknownNode { function, backend }
        | Finding::BackendWithoutContainer { function, backend } => {
            let removed = zk
                .update(&paths::function_backends(*function), |data| {
                    let Some(data) = data else {
                        return Ok::<_, ZkError>(None);
                    };
                    let list = unpack_backends(data).unwrap_or_default();
                    if !list.contains(backend) {
                        return Ok(None);
                    }
                    let keep: Vec<Backend> = list.into_iter().filter(|b| b != backend).collect();
                    Ok(Some(pack_backends(&keep)))
                })
                .await?;
            Ok(if removed.is_some() {
                FixOutcome::Fixed
            } else {
                FixOutcome::Skipped("the backend is gone already".into())
            })
        }
        Finding::ContainerOfMissingFunction { ip, container, .. } => {
            let mut txn = Txn::new();
            crate::store::functions::add_container_removal(
                zk,
                &mut txn,
                Backend {
                    ip: *ip,
                    container_id: *container,
                },
            )
            .await?;
            zk.commit(&txn).await?;
            Ok(FixOutcome::Fixed)
        }
        Finding::ContainerWithoutStatus { ip, container } => {
            zk.create(
                &paths::container_status(*ip, *container),
                &[ContainerState::Invalid.to_byte()],
            )
            .await?;
            Ok(FixOutcome::Fixed)
        }
        Finding::RouteToMissingFunction {
            hostname, version, ..
        } => {
            zk.delete(&paths::route(hostname), Some(*version)).await?;
            Ok(FixOutcome::Fixed)
        }
        Finding::RouteMissing { function, hostname } => {
            zk.create(
                &paths::route(&hostname::normalize(hostname)),
                function.as_bytes(),
            )
            .await?;
            Ok(FixOutcome::Fixed)
        }
        Finding::BackendsMissing { function } => {
            zk.create(&paths::function_backends(*function), &[]).await?;
            Ok(FixOutcome::Fixed)
        }
        Finding::Unreadable { .. } => Ok(FixOutcome::Skipped(
            "undecodable data is left for an operator to inspect".into(),
        )),
        Finding::MoreBackendsThanWanted { .. } => Ok(FixOutcome::Skipped(
            "the control-plane controller decides which instances go".into(),
        )),
        Finding::StuckStarting { .. } => Ok(FixOutcome::Skipped(
            "its definition or its node needs a person: see its logs".into(),
        )),
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
