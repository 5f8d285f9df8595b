//! The node's call records: every invocation through `/invoke`, kept per
//! function, the newest [`PER_FUNCTION`] of each, served newest first by
//! `GET /calls/{function_id}?limit=N` for the api to gather. A record is
//! kept compact (no strings) and formatted only when read.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use bismuth_model::{CallRecord, FunctionId};
use uuid::Uuid;

/// Records kept per function on one node.
pub const PER_FUNCTION: usize = 1000;

/// One invocation as kept.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The request's W3C trace id (32 lower-case hex digits).
    pub trace_id: [u8; 32],
    pub container_id: Uuid,
    /// When it arrived.
    pub start: SystemTime,
    /// Time until the function's response headers, in milliseconds.
    pub duration_ms: f64,
    pub status: u16,
    pub cold: bool,
}

impl Call {
    /// The trace id of `traceparent` (`00-{trace id}-{span id}-{flags}`);
    /// zeros when it has none.
    pub fn trace_id_of(traceparent: &str) -> [u8; 32] {
        let id = bismuth_daemon::trace::trace_id(traceparent).as_bytes();
        let mut out = [b'0'; 32];
        if id.len() == 32 {
            out.copy_from_slice(id);
        }
        out
    }

    fn record(&self, node: Ipv4Addr) -> CallRecord {
        CallRecord {
            id: String::from_utf8_lossy(&self.trace_id).into_owned(),
            container_id: self.container_id,
            node,
            start: humantime::format_rfc3339_millis(self.start).to_string(),
            duration_ms: self.duration_ms,
            status: self.status,
            cold: self.cold,
        }
    }
}

/// Every function's newest records on this node.
#[derive(Debug, Default)]
pub struct CallLog {
    by_function: Mutex<HashMap<FunctionId, VecDeque<Call>>>,
}

impl CallLog {
    /// Keeps `call`, dropping the function's oldest record when full.
    pub fn record(&self, function: FunctionId, call: Call) {
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

    /// The newest `limit` records of `function`, newest first, as served
    /// by `node`.
    pub fn recent(&self, function: FunctionId, limit: usize, node: Ipv4Addr) -> Vec<CallRecord> {
        let kept: Vec<Call> = {
            let map = self
                .by_function
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.get(&function)
                .map(|c| c.iter().rev().take(limit).copied().collect())
                .unwrap_or_default()
        };
        kept.iter().map(|c| c.record(node)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u16) -> Call {
        Call {
            trace_id: Call::trace_id_of(&format!("00-{n:032x}-00f067aa0ba902b7-01")),
            container_id: Uuid::nil(),
            start: SystemTime::UNIX_EPOCH,
            duration_ms: 1.0,
            status: n,
            cold: false,
        }
    }

    #[test]
    fn newest_first_and_bounded_per_function() {
        let log = CallLog::default();
        let (f, g) = (Uuid::new_v4(), Uuid::new_v4());
        for n in 0..(PER_FUNCTION as u16 + 10) {
            log.record(f, call(n));
        }
        log.record(g, call(7));
        let node = Ipv4Addr::LOCALHOST;
        let recent = log.recent(f, 3, node);
        let last = PER_FUNCTION as u16 + 9;
        assert_eq!(
            recent.iter().map(|c| c.status).collect::<Vec<_>>(),
            vec![last, last - 1, last - 2]
        );
        assert_eq!(recent[0].id, format!("{last:032x}"));
        assert_eq!(recent[0].start, "1970-01-01T00:00:00.000Z");
        assert_eq!(recent[0].node, node);
        assert_eq!(log.recent(f, usize::MAX, node).len(), PER_FUNCTION);
        assert_eq!(log.recent(g, 10, node).len(), 1);
        assert!(log.recent(Uuid::new_v4(), 10, node).is_empty());
    }
}
