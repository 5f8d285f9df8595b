//! The node's call records: every invocation through `/invoke`, kept per
//! function, the newest [`PER_FUNCTION`] of each, served newest first by
//! `GET /calls/{function_id}?limit=N` for the api to gather.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bismuth_model::{CallRecord, FunctionId};

/// Records kept per function on one node.
pub const PER_FUNCTION: usize = 1000;

/// The records, by function.
#[derive(Debug, Default)]
pub struct CallLog {
    by_function: Mutex<HashMap<FunctionId, VecDeque<CallRecord>>>,
}

impl CallLog {
    /// Keeps `call`, dropping the function's oldest beyond the bound.
    pub fn record(&self, function: FunctionId, call: CallRecord) {
        let mut map = self
            .by_function
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let calls = map.entry(function).or_default();
        if calls.len() == PER_FUNCTION {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// The newest `limit` records of `function`, newest first.
    pub fn recent(&self, function: FunctionId, limit: usize) -> Vec<CallRecord> {
        let map = self
            .by_function
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&function)
            .map(|c| c.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u16) -> CallRecord {
        CallRecord {
            id: format!("{n:032x}"),
            container_id: uuid::Uuid::nil(),
            node: std::net::Ipv4Addr::LOCALHOST,
            start: String::new(),
            duration_ms: 1.0,
            status: n,
            cold: false,
        }
    }

    #[test]
    fn newest_first_and_bounded_per_function() {
        let log = CallLog::default();
        let (f, g) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for n in 0..(PER_FUNCTION as u16 + 10) {
            log.record(f, call(n));
        }
        log.record(g, call(7));
        let recent = log.recent(f, 3);
        let last = PER_FUNCTION as u16 + 9;
        assert_eq!(
            recent.iter().map(|c| c.status).collect::<Vec<_>>(),
            vec![last, last - 1, last - 2]
        );
        assert_eq!(log.recent(f, usize::MAX).len(), PER_FUNCTION);
        assert_eq!(log.recent(g, 10).len(), 1);
        assert!(log.recent(uuid::Uuid::new_v4(), 10).is_empty());
    }
}
