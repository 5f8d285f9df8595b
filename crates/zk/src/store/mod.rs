//! Typed operations on Bismuth's data model in ZooKeeper. Every change that
//! touches several znodes is one [`Txn`](crate::Txn) with version checks, so a
//! failure or a concurrent writer never leaves a half-written tree.
//!
//! - [`functions`]: create, read, list, delete function definitions and their routes.
//! - [`nodes`]: provision, drain and deprovision nodes; list what they run.
//! - [`backends`]: add and remove a function's containers.

pub mod backends;
mod error;
pub mod functions;
pub mod nodes;

pub use error::StoreError;

use crate::{Versioned, Zk, ZkError};

/// Reads and decodes a znode, mapping decode failures to [`ZkError::Corrupt`].
pub(crate) async fn get_decoded<T, E: std::fmt::Display>(
    zk: &Zk,
    path: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<Option<Versioned<T>>, ZkError> {
    let Some(raw) = zk.get_opt(path).await? else {
        return Ok(None);
    };
    let value = decode(&raw.value).map_err(|e| ZkError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some(Versioned {
        value,
        version: raw.version,
    }))
}
