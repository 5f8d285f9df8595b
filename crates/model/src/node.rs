//! A node's schedulability, the one byte in `/node/{ip}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a node offers to functions, announced by its bismuthd in `/node/{ip}/alive`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCapacity {
    /// Cores available to functions.
    pub cpu: f64,
    /// Bytes of memory available to functions.
    pub memory: u64,
    /// Whether it can run `"isolation": "sandbox"` (gVisor is installed).
    /// Absent from older bismuthds' announcements: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
}

impl NodeCapacity {
    /// Whether a function with `isolation` may be placed here.
    pub fn runs(&self, isolation: crate::Isolation) -> bool {
        isolation != crate::Isolation::Sandbox || self.sandbox
    }
}

/// Whether the api may place new containers on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Drained: keeps what it runs, gets nothing new (byte 0).
    Disabled,
    /// Schedulable (byte 1).
    Enabled,
}

/// A node znode whose data is not a single 0 or 1 byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node state must be one byte 0 or 1, found {data:?}")]
pub struct NodeStateDecodeError {
    /// The data found.
    pub data: Vec<u8>,
}

impl NodeState {
    /// The znode's data.
    pub fn encode(self) -> Vec<u8> {
        vec![match self {
            NodeState::Disabled => 0,
            NodeState::Enabled => 1,
        }]
    }

    /// Reads the znode's data.
    pub fn decode(data: &[u8]) -> Result<Self, NodeStateDecodeError> {
        match data {
            [0] => Ok(NodeState::Disabled),
            [1] => Ok(NodeState::Enabled),
            _ => Err(NodeStateDecodeError {
                data: data.to_vec(),
            }),
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Disabled => "drained",
            NodeState::Enabled => "enabled",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [NodeState::Enabled, NodeState::Disabled] {
            assert_eq!(NodeState::decode(&s.encode()), Ok(s));
        }
        assert!(NodeState::decode(&[2]).is_err());
        assert!(NodeState::decode(&[]).is_err());
    }
}
