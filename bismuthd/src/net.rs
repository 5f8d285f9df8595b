//! A container's network: its own namespace (`/run/netns/bz-{instance}-{cid}`,
//! the instance naming this bismuthd's containerd socket and namespace) and a
//! veth pair, the host side (`bz…`) in link group 0xb15 with the /30's .1,
//! the container side as `eth0` with .2 and a default route via the host.
//! Set up with iproute2 in two batched calls; torn down idempotently.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;
use uuid::Uuid;

use crate::ipam::Subnet;

/// The link group every container's host-side veth is in (isolation rules
/// and leak checks find them by it).
pub const LINK_GROUP: u32 = 0xb15;
/// Prefix of the network namespaces and host-side veths bismuthd creates.
pub const NETNS_PREFIX: &str = "bz-";
const HOST_IF_PREFIX: &str = "bz";

/// Why a network could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("network setup ({what}) failed: {detail}")]
pub struct NetError {
    what: &'static str,
    detail: String,
}

/// What [`Net::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetState {
    Intact,
    /// The namespace is there, the host-side veth is not (deleted by hand).
    VethMissing,
    /// No namespace: a process still in it cannot be reached any more.
    NamespaceMissing,
}

/// One container's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    pub subnet: Subnet,
    /// Namespace name (under /run/netns).
    pub netns: String,
    /// Host-side interface.
    pub host_if: String,
}

impl Net {
    pub fn new(instance: &str, cid: Uuid, subnet: Subnet) -> Net {
        let (netns, host_if) = names(instance, cid);
        Net {
            subnet,
            netns,
            host_if,
        }
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        self.subnet.host
    }

    pub fn container_ip(&self) -> Ipv4Addr {
        self.subnet.container
    }

    /// The namespace file runc joins.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Creates namespace, veth pair, addresses and routes. On failure what
    /// was made is removed again.
    pub async fn create(&self) -> Result<(), NetError> {
        // Whatever a crash left under these names goes first.
        if self.check() != NetState::NamespaceMissing
            || std::path::Path::new("/sys/class/net")
                .join(&self.host_if)
                .exists()
        {
            self.destroy().await;
        }
        let host = format!("netns add {}\n{}", self.netns, self.veth_batch());
        let result = async {
            ip_batch(&[], &host, "host side").await?;
            ip_batch(&["-n", &self.netns], &self.inside_batch(), "container side").await
        }
        .await;
        if result.is_err() {
            self.destroy().await;
        }
        result
    }

    /// What is there of the network now (no process spawned: two stats).
    pub fn check(&self) -> NetState {
        let ns = self.netns_path().exists();
        let link = std::path::Path::new("/sys/class/net")
            .join(&self.host_if)
            .exists();
        match (ns, link) {
            (true, true) => NetState::Intact,
            (true, false) => NetState::VethMissing,
            (false, _) => NetState::NamespaceMissing,
        }
    }

    /// Puts a deleted veth pair back into the existing namespace (a
    /// process in it keeps its namespace, so it serves again at once).
    pub async fn repair_veth(&self) -> Result<(), NetError> {
        let _ = ip(&["link", "del", &self.host_if]).await;
        ip_batch(&[], &self.veth_batch(), "host side").await?;
        ip_batch(&["-n", &self.netns], &self.inside_batch(), "container side").await
    }

    fn peer(&self) -> String {
        format!("bp{}", &self.host_if[HOST_IF_PREFIX.len()..])
    }

    /// The host side: the pair, its far end moved into the namespace.
    fn veth_batch(&self) -> String {
        format!(
            "link add {hif} group {group} type veth peer name {peer} netns {ns}\n\
             addr add {hip}/30 dev {hif}\n\
             link set {hif} up\n",
            ns = self.netns,
            hif = self.host_if,
            peer = self.peer(),
            group = LINK_GROUP,
            hip = self.host_ip(),
        )
    }

    /// Inside the namespace: eth0 with .2 and the default route via .1.
    fn inside_batch(&self) -> String {
        format!(
            "link set {peer} name eth0\n\
             addr add {cip}/30 dev eth0\n\
             link set eth0 up\n\
             link set lo up\n\
             route add default via {hip} dev eth0\n",
            peer = self.peer(),
            cip = self.container_ip(),
            hip = self.host_ip(),
        )
    }

    /// Deletes the veth pair (both ends) and the namespace; missing parts are fine.
    pub async fn destroy(&self) {
        let _ = ip(&["link", "del", &self.host_if]).await;
        let _ = ip(&["netns", "del", &self.netns]).await;
    }
}

/// The namespace and host interface names of a container (interface names
/// have at most 15 characters: "bz" and 13 hex digits of the id).
pub fn names(instance: &str, cid: Uuid) -> (String, String) {
    let hex = cid.simple().to_string();
    (
        format!("{NETNS_PREFIX}{instance}-{cid}"),
        format!("{HOST_IF_PREFIX}{}", &hex[..13]),
    )
}

/// Host-side veths in bismuth's link group with an address from `pool`
/// (another bismuthd on the host has its own range), by name.
pub async fn our_links(pool: &crate::ipam::Pool) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "group", &LINK_GROUP.to_string()])
        .stderr(Stdio::null())
        .output()
        .await;
    let Ok(out) = out else { return Vec::new() };
    // "7: bz0123456789abc    inet 10.177.0.1/30 scope global bz0123456789abc ..."
    let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.nth(1)?.split('@').next()?.to_owned();
            let addr: Ipv4Addr = words.nth(1)?.split('/').next()?.parse().ok()?;
            (name.starts_with(HOST_IF_PREFIX) && pool.contains(addr)).then_some(name)
        })
        .collect();
    links.dedup();
    links
}

/// Network namespaces this bismuthd instance created, by name.
pub fn our_namespaces(instance: &str) -> Vec<String> {
    let prefix = format!("{NETNS_PREFIX}{instance}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes a host-side veth by name.
pub async fn delete_link(name: &str) {
    let _ = ip(&["link", "del", name]).await;
}

/// Deletes a namespace by name.
pub async fn delete_namespace(name: &str) {
    let _ = ip(&["netns", "del", name]).await;
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

async fn ip_batch(global: &[&str], batch: &str, what: &'static str) -> Result<(), NetError> {
    use tokio::io::AsyncWriteExt;
    let fail = |detail: String| NetError { what, detail };
    let mut child = Command::new("ip")
        .args(global)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run ip (apt-get install iproute2): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits() {
        let cid = Uuid::new_v4();
        let (ns, hif) = names("0123abcd", cid);
        assert!(ns.starts_with("bz-0123abcd-"));
        assert!(hif.len() <= 15, "{hif}");
        assert!(hif.starts_with("bz"));
    }
}
