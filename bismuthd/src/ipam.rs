//! The pool of container networks: a /30 per container (host side .1,
//! container .2) carved from one range. Slots are held *by container id*:
//! asking again for the same container gives the same slot, so a start that
//! fails and is retried never takes a second one. A range is never handed to
//! two live containers; freed ranges are reused last (round robin), so a
//! stale ARP or conntrack entry of a removed container rarely meets its
//! successor.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

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
    used: BTreeMap<u32, Uuid>,
    by_container: HashMap<Uuid, u32>,
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

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The /30 of container `cid`: the one it holds, else a free one;
    /// `None` when all are in use.
    pub fn allocate(&self, cid: Uuid) -> Option<Subnet> {
        let mut s = self.state();
        if let Some(&slot) = s.by_container.get(&cid) {
            return self.subnet(slot);
        }
        for i in 0..self.slots {
            let slot = (s.next + i) % self.slots;
            if let std::collections::btree_map::Entry::Vacant(e) = s.used.entry(slot) {
                e.insert(cid);
                s.by_container.insert(cid, slot);
                s.next = (slot + 1) % self.slots;
                return self.subnet(slot);
            }
        }
        None
    }

    /// Gives `cid` the slot `slot` (an adopted container's, from its
    /// label); false if another container holds it or it is out of range.
    pub fn reserve(&self, cid: Uuid, slot: u32) -> bool {
        if slot >= self.slots {
            return false;
        }
        let mut s = self.state();
        match s.used.get(&slot) {
            Some(holder) => *holder == cid,
            None => {
                if let Some(old) = s.by_container.insert(cid, slot) {
                    s.used.remove(&old);
                }
                s.used.insert(slot, cid);
                true
            }
        }
    }

    /// Returns `cid`'s slot to the pool (nothing if it holds none).
    pub fn release(&self, cid: Uuid) {
        let mut s = self.state();
        if let Some(slot) = s.by_container.remove(&cid) {
            s.used.remove(&slot);
        }
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.state().used.len()
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
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let got: Vec<u32> = ids[..4]
            .iter()
            .map(|c| p.allocate(*c).unwrap().slot)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(p.allocate(ids[4]).is_none());
        p.release(ids[1]);
        assert_eq!(p.allocate(ids[4]).unwrap().slot, 1);
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn the_same_container_keeps_its_slot_however_often_it_asks() {
        let p = Pool::parse("10.0.0.0/24").unwrap();
        let c = Uuid::new_v4();
        let first = p.allocate(c).unwrap();
        for _ in 0..50 {
            assert_eq!(p.allocate(c).unwrap(), first);
        }
        assert_eq!(p.in_use(), 1);
        p.release(c);
        p.release(c);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn reserved_slots_are_skipped_and_freed_ones_reused_last() {
        let p = Pool::parse("10.0.0.0/28").unwrap();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(p.reserve(a, 0));
        assert!(p.reserve(a, 0), "the holder may reserve again");
        assert!(!p.reserve(b, 0), "another container may not");
        assert!(!p.reserve(b, 99));
        assert_eq!(p.allocate(b).unwrap().slot, 1);
        p.release(b);
        // The cursor moved on: 2 comes before the just-freed 1.
        assert_eq!(p.allocate(c).unwrap().slot, 2);
    }
}
