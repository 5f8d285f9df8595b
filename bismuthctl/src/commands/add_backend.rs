//! `bismuthctl add-backend FUNCTION IP`: place a container of a function on a node.

use std::io::Write;
use std::net::Ipv4Addr;

use bismuth_zk::{store::backends, Zk};
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
    /// The node to run the container on
    pub ip: Ipv4Addr,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let container = backends::add_backend(zk, args.function, args.ip).await?;
    writeln!(out, "{container}")?;
    Ok(())
}
