//! `bismuthctl provision IP`: register a node as schedulable.

use std::io::Write;
use std::net::Ipv4Addr;

use bismuth_zk::{store::nodes, Zk};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's IPv4 address (where its bismuthd listens)
    pub ip: Ipv4Addr,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    nodes::provision(zk, args.ip).await?;
    writeln!(out, "provisioned node {}", args.ip)?;
    Ok(())
}
