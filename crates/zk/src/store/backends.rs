//! A function's containers: adding one to a node, removing one, reading its status.

use std::net::Ipv4Addr;

use bismuth_model::{paths, Backend, ContainerState, FunctionId};
use uuid::Uuid;

use super::functions::{add_container_creation, add_container_removal, get_backends, set_backends};
use super::{get_decoded, StoreError};
use crate::{Txn, Zk, ZkError};

/// Creates a container of `function` on node `ip`: its container znode, its
/// status (Invalid until bismuthd picks it up) and its entry in the function's
/// backends, in one transaction. Returns the new container id.
pub async fn add_backend(zk: &Zk, function: FunctionId, ip: Ipv4Addr) -> Result<Uuid, StoreError> {
    if !zk.exists(&paths::node(ip)).await? {
        return Err(StoreError::NodeNotFound(ip));
    }
    for attempt in 0..10 {
        let backends = get_backends(zk, function).await?;
        let container_id = Uuid::new_v4();
        let mut list = backends.value.clone();
        list.push(Backend { ip, container_id });
        let mut txn = Txn::new();
        add_container_creation(&mut txn, Backend { ip, container_id }, function);
        set_backends(&mut txn, function, &list, backends.version);
        match zk.commit(&txn).await {
            Ok(()) => return Ok(container_id),
            Err(ZkError::BadVersion { .. }) => crate::session::backoff(attempt).await,
            Err(ZkError::NoNode { path }) if path.starts_with(paths::NODES) => {
                return Err(StoreError::NodeNotFound(ip))
            }
            Err(ZkError::NoNode { .. }) => return Err(StoreError::FunctionNotFound(function)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ZkError::Contended {
        path: paths::function_backends(function),
        attempts: 10,
    }
    .into())
}

/// Removes a container from `function`'s backends and deletes its znodes, in
/// one transaction. Returns the backend that was removed.
pub async fn remove_backend(
    zk: &Zk,
    function: FunctionId,
    container: Uuid,
) -> Result<Backend, StoreError> {
    for attempt in 0..10 {
        let backends = get_backends(zk, function).await?;
        let Some(backend) = backends
            .value
            .iter()
            .find(|b| b.container_id == container)
            .copied()
        else {
            return Err(StoreError::BackendNotFound {
                function,
                container,
            });
        };
        let list: Vec<Backend> = backends
            .value
            .iter()
            .filter(|b| b.container_id != container)
            .copied()
            .collect();
        let mut txn = Txn::new();
        set_backends(&mut txn, function, &list, backends.version);
        add_container_removal(zk, &mut txn, backend).await?;
        match zk.commit(&txn).await {
            Ok(()) => return Ok(backend),
            Err(ZkError::BadVersion { .. } | ZkError::NoNode { .. }) => {
                crate::session::backoff(attempt).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ZkError::Contended {
        path: paths::function_backends(function),
        attempts: 10,
    }
    .into())
}

/// A container's state, `None` if its status znode is missing.
pub async fn container_state(
    zk: &Zk,
    ip: Ipv4Addr,
    container: Uuid,
) -> Result<Option<ContainerState>, ZkError> {
    let path = paths::container_status(ip, container);
    let decoded = get_decoded(zk, &path, |d| {
        ContainerState::decode(d).ok_or_else(|| format!("unknown state bytes {d:?}"))
    })
    .await?;
    Ok(decoded.map(|v| v.value))
}
