//! The routing table: an immutable snapshot of hostnames → functions →
//! Running backends. The sync task builds a new one on every change and
//! swaps it in whole; requests only read the current snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bismuth_model::{Backend, FunctionId, DEFAULT_CONCURRENCY};

use crate::ring;

/// A Running backend with its precomputed hash and this frontend's count of
/// requests on it (shared by every table that lists the backend).
#[derive(Clone, Debug)]
pub struct Target {
    /// Where to send requests.
    pub backend: Backend,
    /// [`ring::backend_hash`] of it.
    pub hash: u64,
    /// Requests this frontend has on it now.
    pub in_flight: Arc<AtomicU64>,
}

impl Target {
    /// A target with its own count (tests; the sync task shares counts).
    pub fn new(backend: Backend) -> Target {
        Target {
            backend,
            hash: ring::backend_hash(&backend),
            in_flight: Arc::default(),
        }
    }

    /// Requests this frontend has on it now.
    pub fn load(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Counts a request on it until the guard drops.
    pub fn begin(&self) -> TargetGuard {
        self.in_flight.fetch_add(1, Relaxed);
        TargetGuard(Arc::clone(&self.in_flight))
    }
}

/// A request on a [`Target`].
#[derive(Debug)]
pub struct TargetGuard(Arc<AtomicU64>);

impl Drop for TargetGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A function as requests need it: its Running backends, and how many
/// requests one of them serves at once.
#[derive(Clone, Debug)]
pub struct Entry {
    pub targets: Arc<[Target]>,
    pub concurrency: u64,
}

/// Where a request goes, as far as the table knows.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    routes: HashMap<String, FunctionId>,
    functions: HashMap<FunctionId, Entry>,
}

impl RoutingTable {
    /// Builds a table from routes and each function's Running backends
    /// (with their shared counts) and concurrency.
    pub fn new(
        routes: HashMap<String, FunctionId>,
        running: impl IntoIterator<Item = (FunctionId, Vec<Target>, u32)>,
    ) -> Self {
        let functions = running
            .into_iter()
            .map(|(id, targets, concurrency)| {
                (
                    id,
                    Entry {
                        targets: targets.into(),
                        concurrency: u64::from(concurrency.max(1)),
                    },
                )
            })
            .collect();
        RoutingTable { routes, functions }
    }

    /// A table of functions with the default concurrency (tests, benchmarks).
    pub fn with_backends(
        routes: HashMap<String, FunctionId>,
        running: impl IntoIterator<Item = (FunctionId, Vec<Backend>)>,
    ) -> Self {
        RoutingTable::new(
            routes,
            running.into_iter().map(|(id, b)| {
                (
                    id,
                    b.into_iter().map(Target::new).collect(),
                    DEFAULT_CONCURRENCY,
                )
            }),
        )
    }

    /// The function a `Host` header routes to (port and case ignored).
    pub fn route(&self, host: &str) -> Option<FunctionId> {
        let name = host_name(host);
        // Avoid allocating for the common, already-lowercase case.
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.routes.get(&name.to_ascii_lowercase()).copied()
        } else {
            self.routes.get(name).copied()
        }
    }

    /// A function's Running backends; `None` if the function is unknown.
    pub fn targets(&self, function: FunctionId) -> Option<&Arc<[Target]>> {
        self.functions.get(&function).map(|e| &e.targets)
    }

    /// A function's entry; `None` if the function is unknown.
    pub fn entry(&self, function: FunctionId) -> Option<&Entry> {
        self.functions.get(&function)
    }

    /// Number of routes and functions (for logs).
    pub fn size(&self) -> (usize, usize) {
        (self.routes.len(), self.functions.len())
    }
}

/// Strips the port and one trailing dot from a `Host` value.
fn host_name(host: &str) -> &str {
    let name = if host.starts_with('[') {
        // IPv6 literal: never a route, keep as is.
        host
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn host_lookup_ignores_port_case_and_trailing_dot() {
        let f = Uuid::new_v4();
        let t = RoutingTable::with_backends([("app.example.com".to_owned(), f)].into(), []);
        for h in [
            "app.example.com",
            "APP.Example.com:8000",
            "app.example.com.",
            "app.example.com.:80",
        ] {
            assert_eq!(t.route(h), Some(f), "{h}");
        }
        assert_eq!(t.route("other.example.com"), None);
        assert!(t.targets(f).is_none());
    }
}
