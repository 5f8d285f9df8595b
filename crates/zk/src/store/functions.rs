//! Function definitions, their backends znode and their routes.

use bismuth_model::{
    hostname, pack_backends, paths, unpack_backends, Backend, BackendStatus, ContainerState,
    FunctionDefinition, FunctionId, FunctionView, Instances, ScaleRecord,
};
use uuid::Uuid;

use super::{get_decoded, StoreError};
use crate::{Txn, Versioned, Zk, ZkError};

/// Validates `def` and writes it with an empty backend list and its routes in
/// one transaction. Fails without writing anything if a route is taken.
pub async fn create_function(zk: &Zk, def: &FunctionDefinition) -> Result<FunctionId, StoreError> {
    def.validate()?;
    zk.ensure_bootstrapped().await?;
    let id = Uuid::new_v4();
    let mut txn = Txn::new();
    txn.create(paths::function(id), def.to_json())
        .create(paths::function_backends(id), Vec::new());
    for host in def.hostnames() {
        txn.create(paths::route(&host), id.as_bytes().to_vec());
    }
    match zk.commit(&txn).await {
        Ok(()) => Ok(id),
        Err(ZkError::NodeExists { path }) if path.starts_with(paths::ROUTES) => {
            let hostname = path[paths::ROUTES.len() + 1..].to_owned();
            let owner = route_owner(zk, &hostname).await?.unwrap_or_default();
            Err(StoreError::RouteTaken { hostname, owner })
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a function's definition.
pub async fn get_function(
    zk: &Zk,
    id: FunctionId,
) -> Result<Versioned<FunctionDefinition>, StoreError> {
    get_decoded(zk, &paths::function(id), |d| {
        serde_json::from_slice::<FunctionDefinition>(d)
    })
    .await?
    .ok_or(StoreError::FunctionNotFound(id))
}

/// Reads a function's backend list.
pub async fn get_backends(zk: &Zk, id: FunctionId) -> Result<Versioned<Vec<Backend>>, StoreError> {
    get_decoded(zk, &paths::function_backends(id), unpack_backends)
        .await?
        .ok_or(StoreError::FunctionNotFound(id))
}

/// Lists all function ids, sorted.
pub async fn list_function_ids(zk: &Zk) -> Result<Vec<FunctionId>, StoreError> {
    zk.ensure_bootstrapped().await?;
    Ok(zk
        .children(paths::FUNCTIONS)
        .await?
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect())
}

/// Lists all functions with their definitions and backends. A function
/// deleted while listing is skipped.
pub async fn list_functions(
    zk: &Zk,
) -> Result<Vec<(FunctionId, FunctionDefinition, Vec<Backend>)>, StoreError> {
    let mut out = Vec::new();
    for id in list_function_ids(zk).await? {
        match (get_function(zk, id).await, get_backends(zk, id).await) {
            (Ok(def), Ok(backends)) => out.push((id, def.value, backends.value)),
            (Err(StoreError::FunctionNotFound(_)), _)
            | (_, Err(StoreError::FunctionNotFound(_))) => {}
            (Err(e), _) | (_, Err(e)) => return Err(e),
        }
    }
    Ok(out)
}

/// The function a hostname routes to, if any.
pub async fn route_owner(zk: &Zk, hostname: &str) -> Result<Option<FunctionId>, ZkError> {
    let path = paths::route(&hostname::normalize(hostname));
    Ok(get_decoded(zk, &path, decode_function_id)
        .await?
        .map(|v| v.value))
}

/// Decodes the 16-byte function id a route znode holds.
pub fn decode_function_id(data: &[u8]) -> Result<FunctionId, String> {
    Uuid::from_slice(data)
        .map_err(|_| format!("expected a 16-byte function id, found {} bytes", data.len()))
}

/// Deletes a function, its backends znode, its routes and its containers'
/// znodes in one transaction (retried if the function changes meanwhile).
pub async fn delete_function(zk: &Zk, id: FunctionId) -> Result<(), StoreError> {
    for attempt in 0..10 {
        let def = get_function(zk, id).await?;
        let backends = get_backends(zk, id).await?;
        let mut txn = Txn::new();
        for b in &backends.value {
            add_container_removal(zk, &mut txn, *b).await?;
        }
        for host in def.value.hostnames() {
            if let Some(route) = get_decoded(zk, &paths::route(&host), decode_function_id).await? {
                if route.value == id {
                    txn.delete(paths::route(&host), Some(route.version));
                }
            }
        }
        // The rollout record, the scale decision, a frontend's wake-up:
        // every child but the backends (deleted last, with its version).
        for child in zk.children_opt(&paths::function(id)).await? {
            if child != "backends" {
                txn.delete(format!("{}/{child}", paths::function(id)), None);
            }
        }
        txn.delete(paths::function_backends(id), Some(backends.version))
            .delete(paths::function(id), Some(def.version));
        match zk.commit(&txn).await {
            Ok(()) => return Ok(()),
            Err(ZkError::BadVersion { .. } | ZkError::NoNode { .. } | ZkError::NotEmpty { .. }) => {
                crate::session::backoff(attempt).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ZkError::Contended {
        path: paths::function(id),
        attempts: 10,
    }
    .into())
}

/// Adds the creation of a container's znode (its function id) and its status
/// (Invalid: no bismuthd has picked it up yet) to `txn`.
pub fn add_container_creation(txn: &mut Txn, b: Backend, function: FunctionId) {
    txn.create(
        paths::container(b.ip, b.container_id),
        bismuth_model::ContainerRecord {
            function_id: function,
        }
        .encode(),
    )
    .create(
        paths::container_status(b.ip, b.container_id),
        vec![ContainerState::Invalid.to_byte()],
    );
}

/// Adds the deletes of a container's status and container znodes (those that exist) to `txn`.
pub async fn add_container_removal(zk: &Zk, txn: &mut Txn, b: Backend) -> Result<(), ZkError> {
    let status = paths::container_status(b.ip, b.container_id);
    if zk.exists(&status).await? {
        txn.delete(status, None);
    }
    let container = paths::container(b.ip, b.container_id);
    // Any other children (metadata a daemon added) go too.
    for child in zk.children_opt(&container).await? {
        if child != "status" {
            txn.delete(format!("{container}/{child}"), None);
        }
    }
    if zk.exists(&container).await? {
        txn.delete(container, None);
    }
    Ok(())
}

/// Writes a backend list back with a version check.
pub(crate) fn set_backends(txn: &mut Txn, id: FunctionId, backends: &[Backend], version: i32) {
    txn.set(
        paths::function_backends(id),
        pack_backends(backends),
        Some(version),
    );
}

/// The autoscaler's last decision for a function, if any (an unreadable
/// record counts as none: the definition's initial count applies).
pub async fn get_scale(zk: &Zk, id: FunctionId) -> Result<Option<ScaleRecord>, ZkError> {
    Ok(zk
        .get_opt(&paths::function_scale(id))
        .await?
        .and_then(|r| serde_json::from_slice(&r.value).ok()))
}

/// Many functions as the api's GET shows each, in `ids` order, read with
/// batched multi-reads: three rounds (definitions, backends and scale
/// decisions; statuses; the reports of Failed backends) however many there
/// are. Functions that do not exist (deleted meanwhile) are left out.
pub async fn describe_many(
    zk: &Zk,
    ids: &[FunctionId],
) -> Result<Vec<(FunctionId, FunctionView)>, StoreError> {
    let corrupt =
        |path: String, reason: String| StoreError::from(ZkError::Corrupt { path, reason });
    let data = zk
        .get_many(
            &ids.iter()
                .flat_map(|id| {
                    [
                        paths::function(*id),
                        paths::function_backends(*id),
                        paths::function_scale(*id),
                    ]
                })
                .collect::<Vec<_>>(),
        )
        .await?;
    let mut found = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let (Some(def), Some(list)) = (&data[3 * i], &data[3 * i + 1]) else {
            continue;
        };
        let def: FunctionDefinition = serde_json::from_slice(&def.value)
            .map_err(|e| corrupt(paths::function(*id), e.to_string()))?;
        let list = unpack_backends(&list.value)
            .map_err(|e| corrupt(paths::function_backends(*id), e.to_string()))?;
        let scale: Option<ScaleRecord> = data[3 * i + 2]
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok());
        found.push((*id, def, list, scale));
    }
    let all: Vec<Backend> = found
        .iter()
        .flat_map(|(_, _, list, _)| list.iter().copied())
        .collect();
    let states: Vec<ContainerState> = zk
        .get_many(
            &all.iter()
                .map(|b| paths::container_status(b.ip, b.container_id))
                .collect::<Vec<_>>(),
        )
        .await?
        .into_iter()
        .map(|s| {
            s.and_then(|s| ContainerState::decode(&s.value))
                .unwrap_or(ContainerState::Invalid)
        })
        .collect();
    let failed: Vec<usize> = (0..all.len())
        .filter(|i| states[*i] == ContainerState::Failed)
        .collect();
    let reports = zk
        .get_many(
            &failed
                .iter()
                .map(|i| paths::container_report(all[*i].ip, all[*i].container_id))
                .collect::<Vec<_>>(),
        )
        .await?;
    let mut reasons: Vec<Option<String>> = vec![None; all.len()];
    for (i, r) in failed.iter().zip(reports) {
        reasons[*i] = r
            .and_then(|r| serde_json::from_slice::<bismuth_model::ContainerReport>(&r.value).ok())
            .and_then(|r| r.reason);
    }
    let mut at = 0;
    let mut out = Vec::with_capacity(found.len());
    for (id, definition, list, scale) in found {
        let backends: Vec<BackendStatus> = list
            .into_iter()
            .map(|backend| {
                let b = BackendStatus {
                    backend,
                    status: states[at],
                    reason: reasons[at].take(),
                };
                at += 1;
                b
            })
            .collect();
        let running = backends
            .iter()
            .filter(|b| b.status == ContainerState::Running)
            .count() as u32;
        let instances = Some(Instances {
            min: definition.min(),
            max: definition.max_instances,
            desired: definition.desired(scale),
            running,
        });
        out.push((
            id,
            FunctionView {
                definition,
                backends,
                instances,
            },
        ));
    }
    Ok(out)
}

/// A function with its backends' current states (the api's GET shape).
pub async fn describe_function(zk: &Zk, id: FunctionId) -> Result<FunctionView, StoreError> {
    let definition = get_function(zk, id).await?.value;
    let backends = get_backends(zk, id).await?.value;
    let mut out = Vec::with_capacity(backends.len());
    for backend in backends {
        let status = super::backends::container_state(zk, backend.ip, backend.container_id)
            .await?
            .unwrap_or(ContainerState::Invalid);
        let reason = if status == ContainerState::Failed {
            zk.get_opt(&paths::container_report(backend.ip, backend.container_id))
                .await?
                .and_then(|r| {
                    serde_json::from_slice::<bismuth_model::ContainerReport>(&r.value).ok()
                })
                .and_then(|r| r.reason)
        } else {
            None
        };
        out.push(BackendStatus {
            backend,
            status,
            reason,
        });
    }
    let scale = get_scale(zk, id).await?;
    let running = out
        .iter()
        .filter(|b| b.status == ContainerState::Running)
        .count() as u32;
    Ok(FunctionView {
        instances: Some(Instances {
            min: definition.min(),
            max: definition.max_instances,
            desired: definition.desired(scale),
            running,
        }),
        definition,
        backends: out,
    })
}
