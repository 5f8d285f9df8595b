//! A container's znodes on its node: the record in
//! `/node/{ip}/container/{cid}` and the one-byte state in `…/status`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A container's lifecycle state, one byte in its status znode.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ContainerState {
    /// Written with the container znode; no bismuthd has picked it up yet.
    Invalid = 0,
    /// bismuthd is creating it, or its server port does not accept yet.
    Starting = 1,
    /// Serving requests.
    Running = 2,
    /// Frozen (not scheduled for requests).
    Paused = 3,
    /// Its process exited or it could not be created.
    Failed = 4,
}

impl ContainerState {
    /// Decodes the status znode's byte; `None` for an unknown value.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Invalid,
            1 => Self::Starting,
            2 => Self::Running,
            3 => Self::Paused,
            4 => Self::Failed,
            _ => return None,
        })
    }

    /// Decodes a whole status znode (exactly one byte).
    pub fn decode(data: &[u8]) -> Option<Self> {
        match data {
            [b] => Self::from_byte(*b),
            _ => None,
        }
    }

    /// The byte stored in ZooKeeper.
    pub fn to_byte(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What `/node/{ip}/container/{cid}` holds: the 16-byte function id. Bytes
/// after the first 16 are reserved for metadata and ignored when reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    /// The function this container serves.
    pub function_id: Uuid,
}

/// A container znode shorter than a function id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("container record is {len} bytes, expected at least 16")]
pub struct RecordDecodeError {
    /// The length found.
    pub len: usize,
}

impl ContainerRecord {
    /// The znode's data.
    pub fn encode(&self) -> Vec<u8> {
        self.function_id.as_bytes().to_vec()
    }

    /// Reads a container znode's data.
    pub fn decode(data: &[u8]) -> Result<Self, RecordDecodeError> {
        let id: [u8; 16] = data
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordDecodeError { len: data.len() })?;
        Ok(Self {
            function_id: Uuid::from_bytes(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_bytes() {
        for b in 0..=4u8 {
            assert_eq!(ContainerState::from_byte(b).unwrap().to_byte(), b);
        }
        assert_eq!(ContainerState::from_byte(5), None);
        assert_eq!(ContainerState::decode(&[2]), Some(ContainerState::Running));
        assert_eq!(ContainerState::decode(&[2, 2]), None);
        assert_eq!(ContainerState::Running.to_string(), "Running");
        assert_eq!(
            serde_json::to_string(&ContainerState::Failed).unwrap(),
            "\"Failed\""
        );
    }

    #[test]
    fn record_round_trip_and_extra_bytes() {
        let rec = ContainerRecord {
            function_id: Uuid::new_v4(),
        };
        assert_eq!(ContainerRecord::decode(&rec.encode()), Ok(rec));
        let mut with_meta = rec.encode();
        with_meta.extend_from_slice(b"{}");
        assert_eq!(ContainerRecord::decode(&with_meta), Ok(rec));
        assert_eq!(
            ContainerRecord::decode(&[1, 2]),
            Err(RecordDecodeError { len: 2 })
        );
    }
}

/// What a node's bismuthd reports about a container beyond its state, in
/// `/node/{ip}/container/{cid}/report`: the control plane moves one that
/// keeps failing, and `GET /function/{id}` shows why it failed.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerReport {
    /// Failures in a row (reset once it runs).
    pub failures: u32,
    /// Why it last failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
