//! Creating and redeploying functions: placement plus one ZooKeeper
//! transaction per step, each with version checks and retried on conflict.
//!
//! A placement also re-sets every chosen node's `/node/{ip}` znode with a
//! version check, so two concurrent placements on one node (or a drain
//! racing a placement) cannot both commit on a stale view of its load.
//!
//! Redeploy: (1) new containers are added beside the old ones (the frontend
//! routes only to Running ones); (2) once one new container is Running, the
//! old ones leave the backend list and their znodes are removed in one
//! transaction; (3) if none is Running in time, the new containers and any
//! definition change are rolled back and the old ones keep serving.

use std::collections::HashSet;
use std::time::Duration;

use bismuth_model::{paths, Backend, ContainerState, FunctionDefinition, FunctionId, FunctionView};
use bismuth_zk::store::{backends, functions};
use bismuth_zk::{Txn, Versioned, Zk, ZkError};
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::{candidates, read_nodes};
use crate::error::ApiError;
use crate::schedule::place;

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
    let ips = place(candidates(&nodes, function), def.cpu, def.memory, count)
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

/// Creates a function with `max_instances` containers placed on nodes.
pub async fn create(zk: &Zk, def: &FunctionDefinition) -> Result<FunctionId, ApiError> {
    def.validate()?;
    zk.ensure_bootstrapped().await?;
    let id = Uuid::new_v4();
    for attempt in 0..ATTEMPTS {
        let mut txn = Txn::new();
        let placed = plan_instances(zk, &mut txn, id, def, def.max_instances as usize).await?;
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
async fn route_changes(
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
pub async fn redeploy(
    zk: &Zk,
    id: FunctionId,
    new_def: Option<FunctionDefinition>,
    timeout: Duration,
) -> Result<FunctionView, ApiError> {
    if let Some(def) = &new_def {
        def.validate()?;
    }
    // Step 1: new containers beside the old ones (and the new definition).
    let (old_def, old, added) = add_new_instances(zk, id, new_def.as_ref()).await?;

    // Step 2: wait for one of them to be Running. A concurrent redeploy of
    // the same function may replace ours first (it counts our containers as
    // old); then ours is superseded by a newer deploy and there is nothing
    // left for us to do.
    let deadline = tokio::time::Instant::now() + timeout;
    let running = loop {
        let listed = functions::get_backends(zk, id).await?.value;
        if !added.iter().any(|b| listed.contains(b)) {
            info!(function = %id, "redeploy superseded by a concurrent one");
            return Ok(functions::describe_function(zk, id).await?);
        }
        let mut failed = 0;
        let mut up = false;
        for b in &added {
            match backends::container_state(zk, b.ip, b.container_id).await? {
                Some(ContainerState::Running) => up = true,
                Some(ContainerState::Failed) => failed += 1,
                _ => {}
            }
        }
        if up {
            break true;
        }
        if failed == added.len() || tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    if running {
        // Step 3: the old containers leave.
        remove_backends(zk, id, &old).await?;
        info!(function = %id, new = added.len(), removed = old.len(), "redeployed");
        return Ok(functions::describe_function(zk, id).await?);
    }
    // Roll back: drop the new containers, restore the definition.
    warn!(function = %id, "no new instance became Running; rolling back");
    remove_backends(zk, id, &added).await?;
    if let (Some(new), Some(old_def)) = (&new_def, old_def) {
        restore_definition(zk, id, new, &old_def).await?;
    }
    Err(ApiError::Timeout(format!(
        "no new instance of function {id} became Running within {timeout:?}; the redeploy was rolled back and the previous instances keep serving"
    )))
}

/// Step 1 of a redeploy; returns the definition replaced (if any), the old backends and the new ones.
async fn add_new_instances(
    zk: &Zk,
    id: FunctionId,
    new_def: Option<&FunctionDefinition>,
) -> Result<(Option<FunctionDefinition>, Vec<Backend>, Vec<Backend>), ApiError> {
    for attempt in 0..ATTEMPTS {
        let current: Versioned<FunctionDefinition> = functions::get_function(zk, id).await?;
        let list = functions::get_backends(zk, id).await?;
        let def = new_def.unwrap_or(&current.value);
        let mut txn = Txn::new();
        if let Some(new) = new_def {
            txn.set(paths::function(id), new.to_json(), Some(current.version));
            route_changes(zk, &mut txn, id, &current.value, new).await?;
        }
        let added = plan_instances(zk, &mut txn, id, def, def.max_instances as usize).await?;
        let mut all = list.value.clone();
        all.extend_from_slice(&added);
        txn.set(
            paths::function_backends(id),
            bismuth_model::pack_backends(&all),
            Some(list.version),
        );
        match zk.commit(&txn).await {
            Ok(()) => return Ok((new_def.map(|_| current.value), list.value, added)),
            Err(ZkError::NodeExists { path }) if path.starts_with(paths::ROUTES) => {
                return Err(route_taken(zk, &path).await);
            }
            Err(e) if retryable(&e) => bismuth_zk::backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(contended())
}

/// Removes `remove` from the function's backends and deletes their znodes.
async fn remove_backends(zk: &Zk, id: FunctionId, remove: &[Backend]) -> Result<(), ApiError> {
    for attempt in 0..ATTEMPTS {
        let list = functions::get_backends(zk, id).await?;
        let keep: Vec<Backend> = list
            .value
            .iter()
            .filter(|b| !remove.contains(b))
            .copied()
            .collect();
        let mut txn = Txn::new();
        txn.set(
            paths::function_backends(id),
            bismuth_model::pack_backends(&keep),
            Some(list.version),
        );
        for b in remove {
            functions::add_container_removal(zk, &mut txn, *b).await?;
        }
        match zk.commit(&txn).await {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => bismuth_zk::backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(contended())
}

/// Puts the old definition (and its routes) back, unless someone changed it since.
async fn restore_definition(
    zk: &Zk,
    id: FunctionId,
    ours: &FunctionDefinition,
    old: &FunctionDefinition,
) -> Result<(), ApiError> {
    let current = functions::get_function(zk, id).await?;
    if &current.value != ours {
        warn!(function = %id, "definition changed during the redeploy; not restoring the old one");
        return Ok(());
    }
    let mut txn = Txn::new();
    txn.set(paths::function(id), old.to_json(), Some(current.version));
    route_changes(zk, &mut txn, id, ours, old).await?;
    match zk.commit(&txn).await {
        Ok(()) => Ok(()),
        Err(e) if retryable(&e) || matches!(e, ZkError::NodeExists { .. }) => {
            warn!(function = %id, error = %e, "could not restore the old definition");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// For `GET /node`: the nodes' views.
pub async fn nodes(zk: &Zk) -> Result<Vec<crate::cluster::NodeView>, ApiError> {
    Ok(read_nodes(zk).await?)
}
