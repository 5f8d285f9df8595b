//! The pool of container networks: a /30 per container (host side .1,
//! container .2) carved from one range. A range is never handed to two live
//! containers; freed ranges are reused last (round robin), so a stale ARP or
//! conntrack entry of a removed container rarely meets its successor.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

/// One container's /30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// Index of the /30 in the pool.
    pub slot: u32,
    /// The host side of the veth (the svcprovider's address).
    pub host: Ipv4Addr,
    /// The container side (eth0).
    pub container: Ipv4Addr,
}

#[derive(Debug, Default)]
struct State {
    used: BTreeSet<u32>,
    next: u32,
}

/// The allocator; clones share state.
#[derive(Clone, Debug)]
pub struct Pool {
    base: u32,
    slots: u32,
    state: Arc<Mutex<State>>,
}

impl Pool {
    /// Parses `a.b.c.d/len` (len at most 30).
    pub fn parse(cidr: &str) -> Result<Pool, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or("expected ADDRESS/PREFIX, like 10.177.0.0/16")?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or("the prefix length must be 8 to 30")?;
        let mask = u32::MAX << (32 - len);
        let base = u32::from(addr);
        if base & !mask != 0 {
            return Err(format!("{addr} has host bits set for /{len}"));
        }
        Ok(Pool {
            base,
            slots: 1 << (30 - len),
            state: Arc::default(),
        })
    }

    /// The range as `a.b.c.d/len`.
    pub fn cidr(&self) -> String {
        let len = 30 - self.slots.trailing_zeros();
        format!("{}/{len}", Ipv4Addr::from(self.base))
    }

    /// How many /30s the pool holds.
    pub fn capacity(&self) -> u32 {
        self.slots
    }

    /// The addresses of slot `slot`.
    pub fn subnet(&self, slot: u32) -> Option<Subnet> {
        (slot < self.slots).then(|| {
            let net = self.base + slot * 4;
            Subnet {
                slot,
                host: Ipv4Addr::from(net + 1),
                container: Ipv4Addr::from(net + 2),
            }
        })
    }

    /// Takes a free /30, `None` when all are in use.
    pub fn allocate(&self) -> Option<Subnet> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for i in 0..self.slots {
            let slot = (s.next + i) % self.slots;
            if s.used.insert(slot) {
                s.next = (slot + 1) % self.slots;
                return self.subnet(slot);
            }
        }
        None
    }

    /// Marks `slot` as in use (an adopted container's); false if it already was.
    pub fn reserve(&self, slot: u32) -> bool {
        slot < self.slots
            && self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .used
                .insert(slot)
    }

    /// Returns `slot` to the pool.
    pub fn release(&self, slot: u32) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .used
            .remove(&slot);
    }

    /// Whether `addr` lies in the pool's range.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        a >= self.base && a - self.base < self.slots * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lays_out_slots() {
        let p = Pool::parse("10.177.0.0/16").unwrap();
        assert_eq!(p.capacity(), 16384);
        assert_eq!(p.cidr(), "10.177.0.0/16");
        let s = p.subnet(1).unwrap();
        assert_eq!(s.host, Ipv4Addr::new(10, 177, 0, 5));
        assert_eq!(s.container, Ipv4Addr::new(10, 177, 0, 6));
        assert!(p.subnet(16384).is_none());
        assert!(p.contains(Ipv4Addr::new(10, 177, 255, 255)));
        assert!(!p.contains(Ipv4Addr::new(10, 178, 0, 0)));
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(Pool::parse("10.177.0.1/16").is_err());
        assert!(Pool::parse("10.177.0.0/31").is_err());
        assert!(Pool::parse("10.177.0.0").is_err());
        assert!(Pool::parse("nope/16").is_err());
    }

    #[test]
    fn never_hands_out_a_slot_twice() {
        let p = Pool::parse("10.0.0.0/28").unwrap(); // 4 slots
        let got: Vec<u32> = (0..4).map(|_| p.allocate().unwrap().slot).collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(p.allocate().is_none());
        p.release(1);
        assert_eq!(p.allocate().unwrap().slot, 1);
        assert!(p.allocate().is_none());
    }

    #[test]
    fn reserved_slots_are_skipped_and_freed_ones_reused_last() {
        let p = Pool::parse("10.0.0.0/28").unwrap();
        assert!(p.reserve(0));
        assert!(!p.reserve(0));
        assert!(!p.reserve(99));
        let a = p.allocate().unwrap().slot;
        assert_eq!(a, 1);
        p.release(a);
        // The cursor moved on: 2 comes before the just-freed 1.
        assert_eq!(p.allocate().unwrap().slot, 2);
    }
}
