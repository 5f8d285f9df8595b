//! Errors of the ZooKeeper layer; each names the path or servers involved.

use zookeeper_client as zkc;

/// A failed ZooKeeper operation.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ZkError {
    /// No session could be established.
    #[error("cannot connect to ZooKeeper at {servers}: {reason}")]
    Connect {
        /// The connect string.
        servers: String,
        /// Why.
        reason: String,
    },
    /// The environment's root znode is missing.
    #[error("environment {env:?} is not bootstrapped in ZooKeeper (no /{env}); run `bismuthctl bootstrap`")]
    NotBootstrapped {
        /// The environment name.
        env: String,
    },
    /// The znode does not exist.
    #[error("znode {path} does not exist")]
    NoNode {
        /// Path within the environment.
        path: String,
    },
    /// The znode exists already.
    #[error("znode {path} already exists")]
    NodeExists {
        /// Path within the environment.
        path: String,
    },
    /// Someone else changed the znode since it was read.
    #[error("znode {path} was changed concurrently (version check failed)")]
    BadVersion {
        /// Path within the environment.
        path: String,
    },
    /// The znode still has children.
    #[error("znode {path} still has children")]
    NotEmpty {
        /// Path within the environment.
        path: String,
    },
    /// The connection or session was lost during the call; it may be retried.
    #[error("lost the ZooKeeper connection during {op} {path}: {source}")]
    ConnectionLost {
        /// The operation.
        op: &'static str,
        /// Path within the environment.
        path: String,
        /// The client's error.
        source: zkc::Error,
    },
    /// Any other failure.
    #[error("ZooKeeper {op} {path} failed: {source}")]
    Op {
        /// The operation.
        op: &'static str,
        /// Path within the environment.
        path: String,
        /// The client's error.
        source: zkc::Error,
    },
    /// A znode's data is not what the data model says it should be.
    #[error("znode {path} holds invalid data: {reason}")]
    Corrupt {
        /// Path within the environment.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A read-modify-write kept losing races.
    #[error("gave up updating {path} after {attempts} concurrent modifications")]
    Contended {
        /// Path within the environment.
        path: String,
        /// How many times it was tried.
        attempts: u32,
    },
}

impl ZkError {
    /// Wraps a client error for `op` on `path` into the matching variant.
    pub fn from_client(op: &'static str, path: &str, source: zkc::Error) -> Self {
        let path = path.to_owned();
        match source {
            zkc::Error::NoNode => ZkError::NoNode { path },
            zkc::Error::NodeExists => ZkError::NodeExists { path },
            zkc::Error::BadVersion => ZkError::BadVersion { path },
            zkc::Error::NotEmpty => ZkError::NotEmpty { path },
            zkc::Error::ConnectionLoss
            | zkc::Error::SessionExpired
            | zkc::Error::ClientClosed
            | zkc::Error::Timeout => ZkError::ConnectionLost { op, path, source },
            source => ZkError::Op { op, path, source },
        }
    }

    /// Whether the failure is about the connection rather than the data, so the
    /// same call may succeed after reconnecting.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ZkError::Connect { .. } | ZkError::ConnectionLost { .. }
        )
    }
}
