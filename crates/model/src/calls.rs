//! Call records (DESIGN.md, "Observability"): what happened to one
//! invocation, kept by the node that served it and gathered by the api's
//! `GET /function/{id}/calls`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One invocation.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The W3C trace id of the request (32 hex digits).
    pub id: String,
    pub container_id: Uuid,
    /// The node that served it.
    pub node: std::net::Ipv4Addr,
    /// When it arrived at the node, RFC 3339 with milliseconds (UTC).
    pub start: String,
    /// Time until the function's response headers, in milliseconds.
    pub duration_ms: f64,
    /// The HTTP status answered.
    pub status: u16,
    /// Whether it was the container's first request (it waited for a start).
    pub cold: bool,
}

/// `GET /function/{id}/calls`: newest first.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calls {
    pub calls: Vec<CallRecord>,
}
