//! `bismuthctl drain IP` / `undrain IP`: toggle whether a node takes new containers.

use std::io::Write;
use std::net::Ipv4Addr;

use bismuth_model::NodeState;
use bismuth_zk::{store::nodes, Zk};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's IPv4 address
    pub ip: Ipv4Addr,
}

pub async fn run(zk: &Zk, args: &Args, enable: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let state = if enable {
        NodeState::Enabled
    } else {
        NodeState::Disabled
    };
    nodes::set_state(zk, args.ip, state).await?;
    writeln!(out, "node {} is {state}", args.ip)?;
    Ok(())
}
