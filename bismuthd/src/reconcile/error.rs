//! What a reconcile can fail on, each naming the container it was about.

use std::path::PathBuf;

use bismuth_containerd::CtdError;
use bismuth_zk::ZkError;
use uuid::Uuid;

use crate::firewall::FirewallError;
use crate::net::NetError;
use crate::svc::SvcError;

/// A reconcile's error; the controller retries the key with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this node's containers have not been read from ZooKeeper yet")]
    NotSynced,
    #[error("cannot read {path} for container {cid}: {source}")]
    Zk {
        cid: Uuid,
        path: String,
        #[source]
        source: ZkError,
    },
    #[error("container {cid}: {what} in containerd failed: {source}")]
    Containerd {
        cid: Uuid,
        what: &'static str,
        #[source]
        source: CtdError,
    },
    #[error("no free /30 left in {range} for container {cid}")]
    NoAddress { cid: Uuid, range: String },
    #[error("network of container {cid}: {source}")]
    Net {
        cid: Uuid,
        #[source]
        source: NetError,
    },
    #[error("rules for container {cid:?}: {source}")]
    Firewall {
        cid: Option<Uuid>,
        #[source]
        source: FirewallError,
    },
    #[error("svcprovider of container {cid}: {source}")]
    Svc {
        cid: Uuid,
        #[source]
        source: SvcError,
    },
    #[error("files of container {cid} ({path}): {source}")]
    Files {
        cid: Uuid,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {cid}: {reason}")]
    Start { cid: Uuid, reason: String },
}

impl Error {
    /// The reason shown in the container's log and `GET /function/{id}`.
    pub fn reason(&self) -> String {
        match self {
            Error::Start { reason, .. } => reason.clone(),
            Error::Net { source, .. } => source.to_string(),
            Error::Svc { source, .. } => source.to_string(),
            Error::Containerd { what, source, .. } => format!("{what}: {source}"),
            other => other.to_string(),
        }
    }
}
