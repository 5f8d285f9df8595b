//! The routing table: an immutable snapshot of hostnames → functions →
//! Running backends. The sync task builds a new one on every change and
//! swaps it in whole; requests only read the current snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use bismuth_model::{Backend, FunctionId};

use crate::ring;

/// A Running backend with its precomputed hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where to send requests.
    pub backend: Backend,
    /// [`ring::backend_hash`] of it.
    pub hash: u64,
}

/// Where a request goes, as far as the table knows.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    routes: HashMap<String, FunctionId>,
    functions: HashMap<FunctionId, Arc<[Target]>>,
}

impl RoutingTable {
    /// Builds a table from routes and each function's Running backends.
    pub fn new(
        routes: HashMap<String, FunctionId>,
        running: impl IntoIterator<Item = (FunctionId, Vec<Backend>)>,
    ) -> Self {
        let functions = running
            .into_iter()
            .map(|(id, backends)| {
                let targets: Arc<[Target]> = backends
                    .into_iter()
                    .map(|backend| Target {
                        backend,
                        hash: ring::backend_hash(&backend),
                    })
                    .collect();
                (id, targets)
            })
            .collect();
        RoutingTable { routes, functions }
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
        let t = RoutingTable::new([("app.example.com".to_owned(), f)].into(), []);
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
