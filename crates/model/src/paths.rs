//! Every znode path of the data model in DESIGN.md, relative to the
//! environment's chroot `/{env}`. Build paths only through these functions.

use std::net::Ipv4Addr;

use uuid::Uuid;

/// Parent of all function definitions.
pub const FUNCTIONS: &str = "/function";
/// Parent of all nodes (bismuthd hosts).
pub const NODES: &str = "/node";
/// Parent of all routes.
pub const ROUTES: &str = "/route";

/// The top-level znodes `bismuthctl bootstrap` creates.
pub const ROOTS: [&str; 3] = [FUNCTIONS, NODES, ROUTES];

/// `/function/{id}`: the JSON definition.
pub fn function(id: Uuid) -> String {
    format!("{FUNCTIONS}/{id}")
}

/// `/function/{id}/backends`: the packed backend list.
pub fn function_backends(id: Uuid) -> String {
    format!("{FUNCTIONS}/{id}/backends")
}

/// `/node/{ip}`: one byte, schedulable or drained.
pub fn node(ip: Ipv4Addr) -> String {
    format!("{NODES}/{ip}")
}

/// `/node/{ip}/alive`: ephemeral, held by the node's bismuthd session; its
/// data is the node's [`crate::NodeCapacity`] as JSON.
pub fn node_alive(ip: Ipv4Addr) -> String {
    format!("{NODES}/{ip}/alive")
}

/// `/node/{ip}/container`: parent of the node's containers.
pub fn node_containers(ip: Ipv4Addr) -> String {
    format!("{NODES}/{ip}/container")
}

/// `/node/{ip}/container/{cid}`: the container's function id.
pub fn container(ip: Ipv4Addr, cid: Uuid) -> String {
    format!("{NODES}/{ip}/container/{cid}")
}

/// `/node/{ip}/container/{cid}/status`: one byte of [`crate::ContainerState`].
pub fn container_status(ip: Ipv4Addr, cid: Uuid) -> String {
    format!("{NODES}/{ip}/container/{cid}/status")
}

/// `/route/{hostname}`: the 16-byte id of the function the hostname routes to.
/// `hostname` must already be normalized (see [`crate::hostname::normalize`]).
pub fn route(hostname: &str) -> String {
    format!("{ROUTES}/{hostname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_design() {
        let id = Uuid::nil();
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(
            function(id),
            "/function/00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(function_backends(id), format!("/function/{id}/backends"));
        assert_eq!(node(ip), "/node/10.1.2.3");
        assert_eq!(node_containers(ip), "/node/10.1.2.3/container");
        assert_eq!(node_alive(ip), "/node/10.1.2.3/alive");
        assert_eq!(container(ip, id), format!("/node/10.1.2.3/container/{id}"));
        assert_eq!(
            container_status(ip, id),
            format!("/node/10.1.2.3/container/{id}/status")
        );
        assert_eq!(route("a.example"), "/route/a.example");
    }
}
