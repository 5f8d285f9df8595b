//! What can go wrong talking to containerd or a registry, worded for the
//! operator reading a container's log.

use std::path::PathBuf;

/// An error from containerd, an image archive or a registry.
#[derive(Debug, thiserror::Error)]
pub enum CtdError {
    #[error("cannot connect to containerd at {socket}: {reason}")]
    Connect { socket: PathBuf, reason: String },
    #[error("containerd {op} failed: {}: {}", .status.code(), .status.message())]
    Rpc {
        op: &'static str,
        status: tonic::Status,
    },
    #[error("image {0} is not in containerd")]
    ImageNotFound(String),
    #[error("image {image}: {reason}")]
    BadImage { image: String, reason: String },
    #[error("pulling {image}: {reason}")]
    Pull { image: String, reason: String },
    #[error("image archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl CtdError {
    /// The gRPC code, when containerd answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CtdError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// containerd said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// containerd said the object exists already.
    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(tonic::Code::AlreadyExists)
    }

    /// containerd could not be reached (it may be restarting).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CtdError::Connect { .. }) || self.code() == Some(tonic::Code::Unavailable)
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CtdError::Io {
            context: context.into(),
            source,
        }
    }
}
