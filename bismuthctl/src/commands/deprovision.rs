//! `bismuthctl deprovision IP [--force]`: remove a node.

use std::io::Write;
use std::net::Ipv4Addr;

use bismuth_zk::{store::nodes, Zk};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's IPv4 address
    pub ip: Ipv4Addr,
    /// Also remove the node's containers from their functions
    #[arg(long)]
    pub force: bool,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let removed = nodes::deprovision(zk, args.ip, args.force).await?;
    writeln!(
        out,
        "deprovisioned node {} ({removed} container(s) removed)",
        args.ip
    )?;
    Ok(())
}
