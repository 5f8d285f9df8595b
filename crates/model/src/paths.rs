//! Every znode path of the data model in DESIGN.md, relative to the
//! environment's chroot `/{env}`. Build paths only through these functions,
//! and read them (watch events) only through [`parse`].

use std::net::Ipv4Addr;

use uuid::Uuid;

/// Parent of all function definitions.
pub const FUNCTIONS: &str = "/function";
/// Parent of all nodes (bismuthd hosts).
pub const NODES: &str = "/node";
/// Parent of all routes.
pub const ROUTES: &str = "/route";

/// Parent of the frontends (bismuthfe processes) that registered where
/// the controller can ask them for load.
pub const FRONTENDS: &str = "/frontend";

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

/// `/function/{id}/rollout`: the redeploy in progress (or the last one),
/// JSON, carried out by the control-plane controller.
pub fn function_rollout(id: Uuid) -> String {
    format!("{FUNCTIONS}/{id}/rollout")
}

/// `/function/{id}/scale`: the autoscaler's decision, JSON
/// [`crate::ScaleRecord`]; absent for a function that does not autoscale
/// (or was never scaled).
pub fn function_scale(id: Uuid) -> String {
    format!("{FUNCTIONS}/{id}/scale")
}

/// `/function/{id}/wake`: created (empty) by a frontend holding requests
/// for a function with no Running instance; the controller scales it from
/// zero and deletes it.
pub fn function_wake(id: Uuid) -> String {
    format!("{FUNCTIONS}/{id}/wake")
}

/// `/frontend/{id}`: ephemeral, held by one bismuthfe's session; JSON
/// [`crate::FrontendRecord`] (where its load report is served).
pub fn frontend(id: Uuid) -> String {
    format!("{FRONTENDS}/{id}")
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

/// `/node/{ip}/evacuate`: present while the node is drained with
/// evacuation (its instances move to other nodes).
pub fn node_evacuate(ip: Ipv4Addr) -> String {
    format!("{NODES}/{ip}/evacuate")
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

/// `/node/{ip}/container/{cid}/report`: what the node's bismuthd tells the
/// control plane beyond the state: failures in a row and the last reason,
/// JSON [`crate::ContainerReport`].
pub fn container_report(ip: Ipv4Addr, cid: Uuid) -> String {
    format!("{NODES}/{ip}/container/{cid}/report")
}

/// `/route/{hostname}`: the 16-byte id of the function the hostname routes to.
/// `hostname` must already be normalized (see [`crate::hostname::normalize`]).
pub fn route(hostname: &str) -> String {
    format!("{ROUTES}/{hostname}")
}

/// A znode of the data model, as [`parse`] reads it from a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Znode<'a> {
    Function(Uuid),
    FunctionBackends(Uuid),
    FunctionRollout(Uuid),
    FunctionScale(Uuid),
    FunctionWake(Uuid),
    Frontend(Uuid),
    Node(Ipv4Addr),
    NodeAlive(Ipv4Addr),
    NodeEvacuate(Ipv4Addr),
    NodeContainers(Ipv4Addr),
    Container(Ipv4Addr, Uuid),
    ContainerStatus(Ipv4Addr, Uuid),
    ContainerReport(Ipv4Addr, Uuid),
    Route(&'a str),
}

/// The znode `path` names, `None` for anything outside the data model
/// (including ids and addresses that do not parse).
pub fn parse(path: &str) -> Option<Znode<'_>> {
    let rest = path.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let first = parts.next()?;
    let second = parts.next();
    let tail: Vec<&str> = parts.collect();
    Some(match (first, second, tail.as_slice()) {
        ("function", Some(id), []) => Znode::Function(id.parse().ok()?),
        ("function", Some(id), ["backends"]) => Znode::FunctionBackends(id.parse().ok()?),
        ("function", Some(id), ["rollout"]) => Znode::FunctionRollout(id.parse().ok()?),
        ("function", Some(id), ["scale"]) => Znode::FunctionScale(id.parse().ok()?),
        ("function", Some(id), ["wake"]) => Znode::FunctionWake(id.parse().ok()?),
        ("frontend", Some(id), []) => Znode::Frontend(id.parse().ok()?),
        ("node", Some(ip), []) => Znode::Node(ip.parse().ok()?),
        ("node", Some(ip), ["alive"]) => Znode::NodeAlive(ip.parse().ok()?),
        ("node", Some(ip), ["evacuate"]) => Znode::NodeEvacuate(ip.parse().ok()?),
        ("node", Some(ip), ["container"]) => Znode::NodeContainers(ip.parse().ok()?),
        ("node", Some(ip), ["container", cid]) => {
            Znode::Container(ip.parse().ok()?, cid.parse().ok()?)
        }
        ("node", Some(ip), ["container", cid, "status"]) => {
            Znode::ContainerStatus(ip.parse().ok()?, cid.parse().ok()?)
        }
        ("node", Some(ip), ["container", cid, "report"]) => {
            Znode::ContainerReport(ip.parse().ok()?, cid.parse().ok()?)
        }
        ("route", Some(host), []) if !host.is_empty() => Znode::Route(host),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_back_every_path_built_here() {
        let id = Uuid::new_v4();
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let cases = [
            (function(id), Znode::Function(id)),
            (function_backends(id), Znode::FunctionBackends(id)),
            (function_rollout(id), Znode::FunctionRollout(id)),
            (function_scale(id), Znode::FunctionScale(id)),
            (function_wake(id), Znode::FunctionWake(id)),
            (frontend(id), Znode::Frontend(id)),
            (node_evacuate(ip), Znode::NodeEvacuate(ip)),
            (container_report(ip, id), Znode::ContainerReport(ip, id)),
            (node(ip), Znode::Node(ip)),
            (node_alive(ip), Znode::NodeAlive(ip)),
            (node_containers(ip), Znode::NodeContainers(ip)),
            (container(ip, id), Znode::Container(ip, id)),
            (container_status(ip, id), Znode::ContainerStatus(ip, id)),
            (route("a.example"), Znode::Route("a.example")),
        ];
        for (path, want) in &cases {
            assert_eq!(parse(path), Some(*want), "{path}");
        }
        for junk in [
            "",
            "/",
            "/function",
            "/function/not-a-uuid",
            "/node/10.1.2.3/container/x",
            "/node/300.1.2.3",
            "/route/",
            "/function/00000000-0000-0000-0000-000000000000/backends/extra",
            "function/00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(parse(junk), None, "{junk}");
        }
    }

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
