//! Placement: which nodes get a function's new instances. Pure logic over a
//! snapshot of the nodes' free room; the api (creates and its controller)
//! and `bismuthctl drain --evacuate` (is there room elsewhere?) use it.

use std::net::Ipv4Addr;

/// A node that could take instances, with what it has left.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The node.
    pub ip: Ipv4Addr,
    /// Cores not yet promised to containers.
    pub free_cpu: f64,
    /// Bytes not yet promised to containers.
    pub free_memory: u64,
    /// Instances of the function being placed already on this node.
    pub instances: usize,
}

/// Places `count` instances needing `cpu` cores and `memory` bytes each.
/// Each goes to the node with the fewest instances of this function (spread),
/// then the most free memory, then the lowest address. Fails, saying why,
/// when some instance fits nowhere.
pub fn place(
    mut candidates: Vec<Candidate>,
    cpu: f64,
    memory: u64,
    count: usize,
) -> Result<Vec<Ipv4Addr>, String> {
    const EPSILON: f64 = 1e-9;
    let mut chosen = Vec::with_capacity(count);
    for placed in 0..count {
        let best = candidates
            .iter_mut()
            .filter(|c| c.free_cpu + EPSILON >= cpu && c.free_memory >= memory)
            .min_by(|a, b| {
                a.instances
                    .cmp(&b.instances)
                    .then(b.free_memory.cmp(&a.free_memory))
                    .then(a.ip.cmp(&b.ip))
            });
        let Some(node) = best else {
            return Err(if candidates.is_empty() {
                "no node is enabled and alive to run the function".to_owned()
            } else {
                format!(
                    "no node has room for instance {} of {count} (needs {cpu} cpu and {memory} bytes of memory)",
                    placed + 1
                )
            });
        };
        node.free_cpu -= cpu;
        node.free_memory -= memory;
        node.instances += 1;
        chosen.push(node.ip);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(last: u8, cpu: f64, gib: u64, instances: usize) -> Candidate {
        Candidate {
            ip: Ipv4Addr::new(10, 0, 0, last),
            free_cpu: cpu,
            free_memory: gib << 30,
            instances,
        }
    }

    #[test]
    fn spreads_then_prefers_free_memory() {
        let nodes = vec![node(1, 4.0, 8, 0), node(2, 4.0, 16, 0), node(3, 4.0, 4, 0)];
        let ips = place(nodes, 1.0, 1 << 30, 3).unwrap();
        assert_eq!(
            ips.iter().map(|ip| ip.octets()[3]).collect::<Vec<_>>(),
            [2, 1, 3]
        );
    }

    #[test]
    fn existing_instances_count_for_spreading() {
        let nodes = vec![node(1, 4.0, 16, 1), node(2, 4.0, 8, 0)];
        assert_eq!(place(nodes, 1.0, 1 << 30, 1).unwrap()[0].octets()[3], 2);
    }

    #[test]
    fn says_why_nothing_fits() {
        assert_eq!(
            place(vec![], 1.0, 1, 1).unwrap_err(),
            "no node is enabled and alive to run the function"
        );
        let e = place(vec![node(1, 0.5, 8, 0)], 1.0, 1, 1).unwrap_err();
        assert!(e.contains("no node has room for instance 1 of 1"), "{e}");
        let e = place(vec![node(1, 1.0, 8, 0)], 1.0, 1, 2).unwrap_err();
        assert!(e.contains("instance 2 of 2"), "{e}");
    }

    proptest! {
        /// Nothing is ever overcommitted, and everything is placed when the totals allow.
        #[test]
        fn never_overcommits(caps in proptest::collection::vec((1u32..8, 1u64..8), 1..6), count in 1usize..10) {
            let nodes: Vec<Candidate> = caps.iter().enumerate()
                .map(|(i, (c, g))| node(i as u8, f64::from(*c), *g, 0)).collect();
            if let Ok(ips) = place(nodes.clone(), 1.0, 1 << 30, count) {
                prop_assert_eq!(ips.len(), count);
                for n in &nodes {
                    let used = ips.iter().filter(|ip| **ip == n.ip).count();
                    prop_assert!(used as f64 <= n.free_cpu && (used as u64) << 30 <= n.free_memory);
                }
            }
        }
    }
}
