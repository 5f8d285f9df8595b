//! A function's backends as stored in `/function/{id}/backends`: a packed
//! array of 20-byte entries, 4 bytes of the node's IPv4 address followed by
//! the 16 bytes of the container's UUID.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Size of one packed backend entry.
pub const BACKEND_LEN: usize = 4 + 16;

/// One container serving a function, and the node it runs on.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    /// The node (bismuthd host) the container runs on.
    pub ip: Ipv4Addr,
    /// The container's id.
    pub container_id: Uuid,
}

/// The backends znode's length is not a multiple of [`BACKEND_LEN`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("packed backend list is {len} bytes, not a multiple of {BACKEND_LEN}")]
pub struct BackendDecodeError {
    /// The length found.
    pub len: usize,
}

/// Packs backends in order.
pub fn pack_backends(backends: &[Backend]) -> Vec<u8> {
    let mut out = Vec::with_capacity(backends.len() * BACKEND_LEN);
    for b in backends {
        out.extend_from_slice(&b.ip.octets());
        out.extend_from_slice(b.container_id.as_bytes());
    }
    out
}

/// Unpacks a backends znode; empty data is an empty list.
pub fn unpack_backends(data: &[u8]) -> Result<Vec<Backend>, BackendDecodeError> {
    if data.len() % BACKEND_LEN != 0 {
        return Err(BackendDecodeError { len: data.len() });
    }
    Ok(data
        .chunks_exact(BACKEND_LEN)
        .map(|chunk| {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&chunk[..4]);
            let mut id = [0u8; 16];
            id.copy_from_slice(&chunk[4..]);
            Backend {
                ip: Ipv4Addr::from(ip),
                container_id: Uuid::from_bytes(id),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_layout() {
        let id = Uuid::from_bytes([7; 16]);
        let packed = pack_backends(&[Backend {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            container_id: id,
        }]);
        assert_eq!(&packed[..4], &[10, 0, 0, 1]);
        assert_eq!(&packed[4..], &[7; 16]);
    }

    #[test]
    fn bad_length_is_an_error() {
        assert_eq!(
            unpack_backends(&[0; 21]),
            Err(BackendDecodeError { len: 21 })
        );
        assert_eq!(unpack_backends(&[]), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn packing_round_trips(entries in proptest::collection::vec((any::<u32>(), any::<u128>()), 0..50)) {
            let backends: Vec<Backend> = entries
                .into_iter()
                .map(|(ip, id)| Backend { ip: Ipv4Addr::from(ip), container_id: Uuid::from_u128(id) })
                .collect();
            let packed = pack_backends(&backends);
            prop_assert_eq!(packed.len(), backends.len() * BACKEND_LEN);
            prop_assert_eq!(unpack_backends(&packed).unwrap(), backends);
        }
    }
}
