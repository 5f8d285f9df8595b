//! Rendezvous (highest-random-weight) hashing of client addresses onto
//! backends: each client ranks every backend by a hash of the pair and uses
//! the best. Adding a backend moves only the clients that now rank it first
//! (about 1/n of them); removing one moves only its own clients. The rest
//! of the ranking is the failover order.

use std::net::IpAddr;

use bismuth_model::Backend;

/// SplitMix64's finalizer: a fast, well-distributed 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A backend's fixed hash, computed once when the routing table is built.
pub fn backend_hash(b: &Backend) -> u64 {
    let id = b.container_id.as_u128();
    mix(mix(mix(u64::from(u32::from(b.ip))) ^ (id >> 64) as u64) ^ id as u64)
}

/// A client address's hash, computed once per request.
pub fn client_hash(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4)) ^ 0x4_0000_0000),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix(mix((bits >> 64) as u64) ^ bits as u64)
        }
    }
}

/// Indices of `backend_hashes` from the client's first choice to its last.
pub fn rank(client: u64, backend_hashes: impl Iterator<Item = u64>) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = backend_hashes
        .enumerate()
        .map(|(i, h)| (mix(client ^ h), i))
        .collect();
    // Highest score first; ties (practically impossible) broken by index.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use uuid::Uuid;

    fn backends(n: usize, seed: u128) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                ip: Ipv4Addr::new(10, 0, 0, i as u8),
                container_id: Uuid::from_u128(seed.wrapping_mul(31).wrapping_add(i as u128)),
            })
            .collect()
    }

    fn first(client: u64, list: &[Backend]) -> Backend {
        list[rank(client, list.iter().map(backend_hash))[0]]
    }

    fn clients(n: u32) -> Vec<u64> {
        (0..n)
            .map(|i| client_hash(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .collect()
    }

    #[test]
    fn spreads_clients_evenly() {
        let list = backends(4, 1);
        let mut counts = [0usize; 4];
        for c in clients(20_000) {
            let b = first(c, &list);
            counts[list.iter().position(|x| *x == b).unwrap()] += 1;
        }
        for c in counts {
            assert!((4_000..6_000).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn ranking_is_a_permutation() {
        let list = backends(7, 3);
        let mut r = rank(42, list.iter().map(backend_hash));
        r.sort_unstable();
        assert_eq!(r, (0..7).collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Adding a backend moves about 1/(n+1) of the clients, all to the new one.
        #[test]
        fn adding_a_backend_moves_about_one_nth(n in 2usize..12, seed in any::<u128>()) {
            let before = backends(n, seed);
            let mut after = before.clone();
            let added = Backend { ip: Ipv4Addr::new(10, 1, 1, 1), container_id: Uuid::from_u128(!seed) };
            after.push(added);
            let cs = clients(5_000);
            let mut moved = 0;
            for c in &cs {
                let (old, new) = (first(*c, &before), first(*c, &after));
                if old != new {
                    prop_assert_eq!(new, added, "a moved client must move to the new backend");
                    moved += 1;
                }
            }
            let expected = cs.len() as f64 / (n + 1) as f64;
            prop_assert!((moved as f64) < expected * 1.4 && (moved as f64) > expected * 0.6,
                "moved {} of {}, expected about {}", moved, cs.len(), expected);
        }

        /// Removing a backend moves only the clients it served.
        #[test]
        fn removing_a_backend_moves_only_its_clients(n in 2usize..12, seed in any::<u128>(), gone in 0usize..12) {
            let before = backends(n, seed);
            let gone = gone % n;
            let mut after = before.clone();
            let removed = after.remove(gone);
            for c in clients(2_000) {
                let old = first(c, &before);
                if old != removed {
                    prop_assert_eq!(first(c, &after), old);
                }
            }
        }
    }
}
