//! Errors of the typed store operations: what the operator got wrong, or the
//! ZooKeeper failure underneath.

use std::net::Ipv4Addr;

use bismuth_model::InvalidDefinition;
use uuid::Uuid;

use crate::ZkError;

/// A store operation that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such function.
    #[error("function {0} does not exist")]
    FunctionNotFound(Uuid),
    /// No such node.
    #[error("node {0} is not provisioned")]
    NodeNotFound(Ipv4Addr),
    /// The node is provisioned already.
    #[error("node {0} is already provisioned")]
    NodeExists(Ipv4Addr),
    /// The node still runs containers.
    #[error("node {ip} still has {containers} container(s); remove them first or use --force")]
    NodeBusy {
        /// The node.
        ip: Ipv4Addr,
        /// How many containers it has.
        containers: usize,
    },
    /// The function has no such backend.
    #[error("function {function} has no backend with container id {container}")]
    BackendNotFound {
        /// The function.
        function: Uuid,
        /// The container asked for.
        container: Uuid,
    },
    /// A route hostname belongs to another function.
    #[error("route {hostname} already belongs to function {owner}")]
    RouteTaken {
        /// The hostname.
        hostname: String,
        /// The function it routes to.
        owner: Uuid,
    },
    /// The definition is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidDefinition),
    /// ZooKeeper failed.
    #[error(transparent)]
    Zk(#[from] ZkError),
}
