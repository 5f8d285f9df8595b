//! Creating and redeploying functions: placement plus one ZooKeeper
//! transaction per step, each with version checks and retried on conflict.
//!
//! A placement also re-sets every chosen node's `/node/{ip}` znode with a
//! version check, so two concurrent placements on one node (or a drain
//! racing a placement) cannot both commit on a stale view of its load.
//!
//! Redeploy writes desired state only (the definition and a rollout
//! record); the controller carries it out (see `controller::rollout`).

use std::collections::HashSet;
use std::time::Duration;

use bismuth_model::{paths, Backend, FunctionDefinition, FunctionId, FunctionView};
use bismuth_zk::store::functions;
use bismuth_zk::{Txn, Versioned, Zk, ZkError};
use tracing::info;
use uuid::Uuid;

use crate::cluster::{candidates, read_nodes};
use crate::controller::rollout::{self, Rollout, RolloutState};
use crate::error::ApiError;
use bismuth_model::placement::place;

const ATTEMPTS: u32 = 20;

/// Chooses nodes for `count` instances and adds their creation to `txn`.
async fn plan_instances(
    zk: &Zk,
    txn: &mut Txn,
    function: FunctionId,
    def: &FunctionDefinition,
    count: usize,
) -> Result<Vec<Backend>, ApiError> {
    let nodes = read_nodes(zk).await?;
    beyond_the_fleet(&nodes, def, def.max_instances as usize)?;
    let ips = place(
        candidates(&nodes, function, def.isolation()),
        def.cpu,
        def.memory,
        count,
    )
    .map_err(ApiError::NoRoom)?;
    let mut bumped = HashSet::new();
    let mut added = Vec::with_capacity(ips.len());
    for ip in ips {
        let node = nodes
            .iter()
            .find(|n| n.ip == ip)
            .ok_or_else(|| ApiError::Internal("placed on an unknown node".into()))?;
        if bumped.insert(ip) {
            let state = if node.state == "enabled" {
                [1u8]
            } else {
                [0u8]
            };
            txn.set(paths::node(ip), state.to_vec(), Some(node.version));
        }
        let container_id = Uuid::new_v4();
        functions::add_container_creation(txn, Backend { ip, container_id }, function);
        added.push(Backend { ip, container_id });
    }
    Ok(added)
}

/// A 400 naming the field when no node, or the whole fleet even empty, could
/// ever hold what is asked (a full fleet is a 503 instead: room may come).
fn beyond_the_fleet(
    nodes: &[crate::cluster::NodeView],
    def: &FunctionDefinition,
    count: usize,
) -> Result<(), ApiError> {
    let offered: Vec<bismuth_model::NodeCapacity> = nodes
        .iter()
        .filter(|n| n.alive && n.state == "enabled")
        .filter_map(|n| n.capacity)
        .collect();
    if offered.is_empty() {
        return Ok(());
    }
    let field = |field: &str, message: String| {
        ApiError::Invalid(bismuth_model::InvalidDefinition(vec![
            bismuth_model::FieldError {
                field: field.to_owned(),
                message,
            },
        ]))
    };
    let offered: Vec<bismuth_model::NodeCapacity> = offered
        .into_iter()
        .filter(|c| c.runs(def.isolation()))
        .collect();
    if offered.is_empty() {
        return Err(field(
            "isolation",
            "\"sandbox\" needs a node with gVisor (runsc), and no alive node has it \
             (apt-get install runsc on a node, then restart its bismuthd)"
                .into(),
        ));
    }
    let max_memory = offered.iter().map(|c| c.memory).max().unwrap_or(0);
    if def.memory > max_memory {
        return Err(field(
            "memory",
            format!(
                "{} bytes is more than any node offers (the most is {max_memory})",
                def.memory
            ),
        ));
    }
    let max_cpu = offered.iter().map(|c| c.cpu).fold(0.0, f64::max);
    if def.cpu > max_cpu + 1e-9 {
        return Err(field(
            "cpu",
            format!(
                "{} cores is more than any node offers (the most is {max_cpu})",
                def.cpu
            ),
        ));
    }
    // How many fit on an empty fleet, node by node.
    let fit: usize = offered
        .iter()
        .map(|c| {
            let by_cpu = ((c.cpu + 1e-9) / def.cpu).floor() as usize;
            let by_memory = (c.memory / def.memory.max(1)) as usize;
            by_cpu.min(by_memory)
        })
        .sum();
    if count > fit {
        return Err(field(
            "max_instances",
            format!(
                "{count} instances of {} cores and {} bytes do not fit even on an empty fleet \
                 (its {} alive nodes hold at most {fit})",
                def.cpu,
                def.memory,
                offered.len()
            ),
        ));
    }
    Ok(())
}

/// The 409 for a route znode that already existed.
async fn route_taken(zk: &Zk, path: &str) -> ApiError {
    let hostname = path[paths::ROUTES.len() + 1..].to_owned();
    match functions::route_owner(zk, &hostname).await {
        Ok(owner) => ApiError::RouteTaken {
            hostname,
            owner: owner.unwrap_or_default(),
        },
        Err(e) => e.into(),
    }
}

/// The 503 after [`ATTEMPTS`] lost version races in a row.
fn contended() -> ApiError {
    ApiError::Unavailable("too many concurrent changes; try again".into())
}

fn retryable(e: &ZkError) -> bool {
    matches!(
        e,
        ZkError::BadVersion { .. } | ZkError::NoNode { .. } | ZkError::NotEmpty { .. }
    )
}

/// Creates a function with its initial instances placed on nodes
/// (`max_instances`; one, or `min_instances`, for a function that autoscales).
pub async fn create(zk: &Zk, def: &FunctionDefinition) -> Result<FunctionId, ApiError> {
    def.validate()?;
    zk.ensure_bootstrapped().await?;
    // A taken route is the answer whatever else is wrong (no room, say), so
    // that a client creating the same function again learns which it is;
    // the transaction below still catches a route taken meanwhile.
    for hostname in def.hostnames() {
        if let Some(owner) = functions::route_owner(zk, &hostname).await? {
            return Err(ApiError::RouteTaken { hostname, owner });
        }
    }
    let id = Uuid::new_v4();
    for attempt in 0..ATTEMPTS {
        let mut txn = Txn::new();
        let placed =
            plan_instances(zk, &mut txn, id, def, def.initial_instances() as usize).await?;
        txn.create(paths::function(id), def.to_json()).create(
            paths::function_backends(id),
            bismuth_model::pack_backends(&placed),
        );
        for host in def.hostnames() {
            txn.create(paths::route(&host), id.as_bytes().to_vec());
        }
        match zk.commit(&txn).await {
            Ok(()) => {
                info!(function = %id, instances = placed.len(), "created function");
                return Ok(id);
            }
            Err(ZkError::NodeExists { path }) if path.starts_with(paths::ROUTES) => {
                return Err(route_taken(zk, &path).await);
            }
            Err(e) if retryable(&e) => bismuth_zk::backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(contended())
}

/// Adds the route changes from `from` to `to` for function `id` to `txn`.
pub(crate) async fn route_changes(
    zk: &Zk,
    txn: &mut Txn,
    id: FunctionId,
    from: &FunctionDefinition,
    to: &FunctionDefinition,
) -> Result<(), ApiError> {
    let old: HashSet<String> = from.hostnames().collect();
    let new: HashSet<String> = to.hostnames().collect();
    for host in old.difference(&new) {
        if let Some(raw) = zk.get_opt(&paths::route(host)).await? {
            if raw.value == id.as_bytes() {
                txn.delete(paths::route(host), Some(raw.version));
            }
        }
    }
    for host in new.difference(&old) {
        txn.create(paths::route(host), id.as_bytes().to_vec());
    }
    Ok(())
}

/// Replaces a function's containers (and, with `new_def`, its definition)
/// without downtime; returns the function as GET shows it afterwards.
///
/// Only desired state is written here: the new definition (and its routes)
/// and a rollout record, in one transaction. The controller (whichever api
/// process leads) carries the rollout out; this request waits for its
/// outcome, then for the old containers to leave their nodes.
pub async fn redeploy(
    state: &crate::state::AppState,
    id: FunctionId,
    new_def: Option<FunctionDefinition>,
    timeout: Duration,
) -> Result<FunctionView, ApiError> {
    let zk = state.zk()?;
    if let Some(def) = &new_def {
        def.validate()?;
    }
    let rollout = start_rollout(zk, id, new_def.as_ref(), timeout).await?;
    info!(function = %id, rollout = %rollout.id, old = rollout.old.len(), "rollout requested");

    // The controller has until the deadline, and a little longer to write
    // the outcome; without a controller (no leader) this ends in a 503.
    let give_up = tokio::time::Instant::now() + timeout + Duration::from_secs(10);
    let outcome = loop {
        let Some(raw) = zk.get_opt(&paths::function_rollout(id)).await? else {
            functions::get_function(zk, id).await?;
            return Err(ApiError::Internal("the rollout record disappeared".into()));
        };
        let r: Rollout = serde_json::from_slice(&raw.value)
            .map_err(|e| ApiError::Internal(format!("bad rollout record: {e}")))?;
        if r.id != rollout.id {
            info!(function = %id, "rollout superseded by a newer one");
            return Ok(functions::describe_function(zk, id).await?);
        }
        if r.state != RolloutState::Running {
            break r;
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(ApiError::Unavailable(format!(
                "the rollout of function {id} was not carried out: is an api process leading the controller? (GET /controller)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match outcome.state {
        RolloutState::Done => {
            wait_removed(state, &rollout.old).await;
            info!(function = %id, replaced = rollout.old.len(), "redeployed");
            Ok(functions::describe_function(zk, id).await?)
        }
        _ => Err(ApiError::Timeout(format!(
            "the new instances of function {id} did not all become Running within {timeout:?} ({}); the redeploy was rolled back and the previous instances keep serving",
            outcome.message.as_deref().unwrap_or("no reason recorded")
        ))),
    }
}

/// Writes the new definition (if any) with its routes, and the rollout
/// record naming the current instances as the ones to replace.
async fn start_rollout(
    zk: &Zk,
    id: FunctionId,
    new_def: Option<&FunctionDefinition>,
    timeout: Duration,
) -> Result<Rollout, ApiError> {
    for attempt in 0..ATTEMPTS {
        let current: Versioned<FunctionDefinition> = functions::get_function(zk, id).await?;
        let list = functions::get_backends(zk, id).await?;
        let existing = zk.get_opt(&paths::function_rollout(id)).await?;
        let rollout = Rollout {
            id: Uuid::new_v4(),
            old: list.value.clone(),
            previous: new_def.map(|_| current.value.clone()),
            deadline_ms: rollout::now_ms() + timeout.as_millis() as u64,
            state: RolloutState::Running,
            message: None,
        };
        let mut txn = Txn::new();
        if let Some(new) = new_def {
            txn.set(paths::function(id), new.to_json(), Some(current.version));
            route_changes(zk, &mut txn, id, &current.value, new).await?;
        }
        // The backends are what the rollout replaces: unchanged since read.
        txn.check(paths::function_backends(id), list.version);
        match &existing {
            Some(e) => txn.set(
                paths::function_rollout(id),
                rollout.encode(),
                Some(e.version),
            ),
            None => txn.create(paths::function_rollout(id), rollout.encode()),
        };
        match zk.commit(&txn).await {
            Ok(()) => return Ok(rollout),
            Err(ZkError::NodeExists { path }) if path.starts_with(paths::ROUTES) => {
                return Err(route_taken(zk, &path).await);
            }
            Err(e) if retryable(&e) || matches!(e, ZkError::NodeExists { .. }) => {
                bismuth_zk::backoff(attempt).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(contended())
}

/// Waits (a bounded time) until the nodes of `old` no longer run them: each
/// node's bismuthd answers 404 for the container, or cannot be reached.
async fn wait_removed(state: &crate::state::AppState, old: &[Backend]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for b in old {
        while tokio::time::Instant::now() < deadline {
            if !state.node_has_container(*b).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// For `GET /node`: the nodes' views.
pub async fn nodes(zk: &Zk) -> Result<Vec<crate::cluster::NodeView>, ApiError> {
    Ok(read_nodes(zk).await?)
}
