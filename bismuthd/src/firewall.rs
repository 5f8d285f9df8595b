//! The isolation rules, an nftables table of this bismuthd's own
//! (`inet bismuth_{instance}`), rebuilt atomically at start and removed on a
//! clean shutdown that leaves no container behind. Every packet a container
//! sends enters the host on a veth in link group 0xb15 with a source address
//! from this daemon's range (another bismuthd on the host has its own range
//! and table); the rules key on both. A source address that would not be
//! routed back out of the veth it came in on (spoofed) is dropped first.
//!
//! - input (to the host itself): replies to connections the host opened
//!   (bismuthd → the function's port) pass; new traffic passes only to the
//!   container's own svcprovider (its veth, its host-side address, port 9000,
//!   one set element per container); everything else is dropped — other
//!   containers' svcproviders, bismuthd's 8001, the api, any host listener.
//! - forward (through the host): nothing is forwarded into a veth except
//!   replies; traffic out of a veth to private, loopback, link-local (the
//!   cloud metadata address), shared, multicast and reserved ranges and all
//!   IPv6 is dropped; the rest (the internet) passes only with `--egress`,
//!   masqueraded.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::info;

use crate::net::LINK_GROUP;

/// The svcprovider port on every container's host-side address.
pub const SVC_PORT: u16 = 9000;

/// Ranges a container may never reach through the host.
const BLOCKED: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, \
     172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/4, 240.0.0.0/4";

/// Why the rules could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("nft failed: {0}")]
pub struct FirewallError(String);

/// This daemon's table.
#[derive(Clone, Debug)]
pub struct Firewall {
    table: String,
    egress: bool,
    /// This daemon's container range.
    range: String,
    /// The svcprovider elements the table should hold (veth, host address).
    members: Arc<Mutex<BTreeSet<(String, Ipv4Addr)>>>,
}

impl Firewall {
    pub fn new(instance: &str, egress: bool, range: String) -> Firewall {
        Firewall {
            table: format!("bismuth_{instance}"),
            egress,
            range,
            members: Arc::default(),
        }
    }

    fn members(&self) -> MutexGuard<'_, BTreeSet<(String, Ipv4Addr)>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the container behind `ifname` was let through.
    pub fn has(&self, ifname: &str, host_ip: Ipv4Addr) -> bool {
        self.members().contains(&(ifname.to_owned(), host_ip))
    }

    /// Installs the table again with every element it should hold.
    pub async fn reinstall(&self) -> Result<(), FirewallError> {
        let members: Vec<(String, Ipv4Addr)> = self.members().iter().cloned().collect();
        self.install(&members).await
    }

    /// Whether the live table still is what [`Firewall::ruleset`] made:
    /// present, its drop rules there, every element in its set.
    pub async fn intact(&self) -> bool {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await;
        let Ok(out) = out else { return false };
        let listing = String::from_utf8_lossy(&out.stdout);
        let expected = self.members().clone();
        out.status.success() && listing_is_intact(&listing, &expected)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The whole table, with one svcprovider element per (veth, address).
    pub fn ruleset(&self, members: &[(String, Ipv4Addr)]) -> String {
        let t = &self.table;
        // Ours: from a container veth, from an address of our range.
        let g = format!("{LINK_GROUP} ip saddr {}", self.range);
        let any = LINK_GROUP;
        let elements: Vec<String> = members
            .iter()
            .map(|(ifname, ip)| format!("\"{ifname}\" . {ip} . {SVC_PORT}"))
            .collect();
        let elements = if elements.is_empty() {
            String::new()
        } else {
            format!("\n    elements = {{ {} }}", elements.join(", "))
        };
        let (egress, nat) = if self.egress {
            (
                format!("    iifgroup {g} accept\n"),
                format!(
                    "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
                     iifgroup {g} oifgroup != {any} masquerade\n  }}\n"
                ),
            )
        } else {
            (format!("    iifgroup {g} counter drop\n"), String::new())
        };
        format!(
            "table inet {t}\ndelete table inet {t}\n\
             table inet {t} {{\n  \
               set svc {{\n    type ifname . ipv4_addr . inet_service;{elements}\n  }}\n  \
               chain input {{\n    type filter hook input priority filter - 10; policy accept;\n    \
                 iifgroup {any} fib saddr . iif oif missing counter drop\n    \
                 iifgroup {any} meta nfproto ipv6 counter drop\n    \
                 iifgroup {g} ct state established,related accept\n    \
                 iifgroup {g} iifname . ip daddr . tcp dport @svc accept\n    \
                 iifgroup {g} counter drop\n  }}\n  \
               chain forward {{\n    type filter hook forward priority filter - 10; policy accept;\n    \
                 iifgroup {any} fib saddr . iif oif missing counter drop\n    \
                 oifgroup {any} ip daddr {range} ct state established,related accept\n    \
                 oifgroup {any} ip daddr {range} counter drop\n    \
                 iifgroup {any} meta nfproto ipv6 counter drop\n    \
                 iifgroup {g} ip daddr {{ {BLOCKED} }} counter drop\n\
             {egress}  }}\n\
             {nat}}}\n",
            range = self.range
        )
    }

    /// Creates (or replaces) the table atomically with these elements.
    pub async fn install(&self, members: &[(String, Ipv4Addr)]) -> Result<(), FirewallError> {
        nft(&self.ruleset(members)).await?;
        *self.members() = members.iter().cloned().collect();
        if self.egress {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        }
        info!(table = %self.table, containers = members.len(), egress = self.egress, "firewall rules installed");
        Ok(())
    }

    /// Lets the container behind `ifname` reach its svcprovider.
    pub async fn allow(&self, ifname: &str, host_ip: Ipv4Addr) -> Result<(), FirewallError> {
        nft(&format!(
            "add element inet {} svc {{ \"{ifname}\" . {host_ip} . {SVC_PORT} }}\n",
            self.table
        ))
        .await?;
        self.members().insert((ifname.to_owned(), host_ip));
        Ok(())
    }

    /// Takes that permission back (a missing element is fine).
    pub async fn forget(&self, ifname: &str, host_ip: Ipv4Addr) {
        self.members().remove(&(ifname.to_owned(), host_ip));
        let _ = nft(&format!(
            "delete element inet {} svc {{ \"{ifname}\" . {host_ip} . {SVC_PORT} }}\n",
            self.table
        ))
        .await;
    }

    /// Deletes the table.
    pub async fn remove(&self) {
        let _ = nft(&format!("delete table inet {}\n", self.table)).await;
        info!(table = %self.table, "firewall rules removed");
    }
}

/// The check behind [`Firewall::intact`], on `nft list table` output.
fn listing_is_intact(listing: &str, members: &BTreeSet<(String, Ipv4Addr)>) -> bool {
    let rules = ["chain input", "chain forward", "oif missing", "@svc accept"];
    rules.iter().all(|r| listing.contains(r))
        && listing.matches("drop").count() >= 5
        && members
            .iter()
            .all(|(ifname, ip)| listing.contains(&format!("\"{ifname}\" . {ip} . {SVC_PORT}")))
}

async fn nft(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FirewallError(format!("cannot run nft (apt-get install nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| FirewallError(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| FirewallError(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_names_each_container_and_drops_by_default() {
        let fw = Firewall::new("0123abcd", false, "10.177.0.0/16".into());
        let rules = fw.ruleset(&[("bz0123456789abc".into(), Ipv4Addr::new(10, 177, 0, 1))]);
        assert!(rules.contains("table inet bismuth_0123abcd {"));
        assert!(rules.contains("\"bz0123456789abc\" . 10.177.0.1 . 9000"));
        assert!(rules.contains(
            "iifgroup 2837 ip saddr 10.177.0.0/16 iifname . ip daddr . tcp dport @svc accept"
        ));
        assert!(rules.contains("169.254.0.0/16"));
        assert!(!rules.contains("masquerade"));
        let open = Firewall::new("0123abcd", true, "10.177.0.0/16".into()).ruleset(&[]);
        assert!(open.contains("masquerade"));
        assert!(!open.contains("elements"));
    }

    #[test]
    fn nft_accepts_the_ruleset() {
        // `nft -c` parses and checks without applying (needs root and nftables).
        for egress in [false, true] {
            let rules = Firewall::new("0123abcd", egress, "10.177.0.0/16".into())
                .ruleset(&[("bz0123456789abc".into(), Ipv4Addr::new(10, 177, 0, 1))]);
            let mut child = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), rules.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}\n{rules}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
