//! What this frontend tells the autoscaler (`GET /load`): per function, the
//! requests in flight (held ones included) with their integral over time,
//! and how many are held waiting for a cold start. Held requests are
//! bounded in number and in the bytes of their heads (their bodies are not
//! read while held: they wait in the client's socket).
//!
//! Recording is lock-free: one lookup in a [`CowMap`] of meters and a few
//! atomics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bismuth_metrics::load::{uptime_s, LoadMeter, OwnedLoadGuard};
use bismuth_model::{FunctionId, FunctionLoad, LoadReport};

use crate::cow::CowMap;

/// One function's load here.
#[derive(Debug, Default)]
struct Meter {
    load: Arc<LoadMeter>,
    held: AtomicU64,
}

/// Every function's load at this frontend, and the hold bounds.
#[derive(Debug)]
pub struct FrontendLoad {
    meters: CowMap<Meter>,
    max_held: u64,
    max_held_bytes: u64,
    held: AtomicU64,
    held_bytes: AtomicU64,
}

/// A request of a function, in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    _load: OwnedLoadGuard,
}

/// A held request (counted against the bounds) until dropped.
#[derive(Debug)]
pub struct Held<'a> {
    load: &'a FrontendLoad,
    meter: Arc<Meter>,
    bytes: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.meter.held.fetch_sub(1, Relaxed);
        self.load.held.fetch_sub(1, Relaxed);
        self.load.held_bytes.fetch_sub(self.bytes, Relaxed);
    }
}

impl FrontendLoad {
    /// Holding at most `max_held` requests, and `max_held_bytes` of their heads.
    pub fn new(max_held: u64, max_held_bytes: u64) -> FrontendLoad {
        FrontendLoad {
            meters: CowMap::default(),
            max_held,
            max_held_bytes,
            held: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
        }
    }

    fn meter(&self, function: FunctionId) -> Arc<Meter> {
        self.meters.get_or_insert_with(function, Meter::default)
    }

    /// A request for `function` begins.
    pub fn begin(&self, function: FunctionId) -> InFlight {
        InFlight {
            _load: OwnedLoadGuard::begin(Arc::clone(&self.meter(function).load)),
        }
    }

    /// Holds a request whose head is `bytes` long, if the bounds allow.
    pub fn hold(&self, function: FunctionId, bytes: u64) -> Option<Held<'_>> {
        if self.held.fetch_add(1, Relaxed) >= self.max_held {
            self.held.fetch_sub(1, Relaxed);
            return None;
        }
        if self.held_bytes.fetch_add(bytes, Relaxed) + bytes > self.max_held_bytes {
            self.held_bytes.fetch_sub(bytes, Relaxed);
            self.held.fetch_sub(1, Relaxed);
            return None;
        }
        let meter = self.meter(function);
        meter.held.fetch_add(1, Relaxed);
        Some(Held {
            load: self,
            meter,
            bytes,
        })
    }

    /// The report `GET /load` answers.
    pub fn report(&self) -> LoadReport {
        let functions = self
            .meters
            .load()
            .iter()
            .map(|(id, m)| {
                let s = m.load.sample();
                FunctionLoad {
                    function: *id,
                    in_flight: s.in_flight,
                    held: m.held.load(Relaxed),
                    busy_s: s.busy.as_secs_f64(),
                    requests: s.requests,
                }
            })
            .collect();
        LoadReport {
            uptime_s: uptime_s(),
            functions,
            instances: Vec::new(),
        }
    }

    /// Forgets functions that no longer exist (the sync task calls this).
    pub fn retain(&self, exists: impl Fn(&FunctionId) -> bool) {
        self.meters
            .retain(|id, m| exists(id) || m.load.in_flight() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn holds_are_bounded_in_count_and_bytes() {
        let load = FrontendLoad::new(2, 1000);
        let f = Uuid::new_v4();
        let a = load.hold(f, 100).unwrap();
        let _b = load.hold(f, 100).unwrap();
        assert!(load.hold(f, 100).is_none(), "a third is one too many");
        drop(a);
        assert!(load.hold(f, 2000).is_none(), "too many bytes");
        let _c = load.hold(f, 800).unwrap();
        let report = load.report();
        assert_eq!(report.functions[0].held, 2);
    }

    #[test]
    fn in_flight_is_reported_per_function() {
        let load = FrontendLoad::new(10, 1 << 20);
        let (f, g) = (Uuid::new_v4(), Uuid::new_v4());
        let _one = load.begin(f);
        let _two = load.begin(f);
        drop(load.begin(g));
        let mut r = load.report().functions;
        r.sort_by_key(|l| std::cmp::Reverse(l.in_flight));
        assert_eq!((r[0].function, r[0].in_flight, r[0].requests), (f, 2, 2));
        assert_eq!((r[1].function, r[1].in_flight, r[1].requests), (g, 0, 1));
        load.retain(|id| *id == f);
        assert_eq!(load.report().functions.len(), 1);
    }
}
