//! `bismuthctl drain IP [--evacuate]` / `undrain IP`: whether a node takes
//! new containers, and moving its instances away.
//!
//! With `--evacuate` the control-plane controller (run by the leading api
//! process) places a replacement of every instance on another node and
//! removes the old one once the replacement runs, so nothing stops serving.
//! This command first checks that the other nodes have room (and changes
//! nothing when they do not), then waits until the node is empty, printing
//! progress, unless `--no-wait`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bismuth_model::{paths, NodeState};
use bismuth_zk::{store::nodes, Zk};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's IPv4 address
    pub ip: Ipv4Addr,
    /// Also move the node's instances to other nodes (replacements first)
    #[arg(long)]
    pub evacuate: bool,
    /// With --evacuate: return once asked, without waiting for the node to empty
    #[arg(long)]
    pub no_wait: bool,
    /// With --evacuate: seconds to wait for the node to empty
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

/// `undrain IP`.
#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    /// The node's IPv4 address
    pub ip: Ipv4Addr,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let ip = args.ip;
    if args.evacuate {
        if let Some(why) = nodes::evacuation_shortfall(zk, ip).await? {
            anyhow::bail!("cannot evacuate {ip}: {why}; nothing was changed");
        }
    }
    nodes::drain(zk, ip, args.evacuate).await?;
    if !args.evacuate {
        writeln!(out, "node {ip} is {}", NodeState::Disabled)?;
        return Ok(());
    }
    let count = |zk: &Zk| {
        let zk = zk.clone();
        async move {
            zk.children_opt(&paths::node_containers(ip))
                .await
                .map(|c| c.len())
        }
    };
    let at_start = count(zk).await?;
    writeln!(
        out,
        "node {ip} is drained; evacuating {at_start} instance(s): each is replaced elsewhere, then removed"
    )?;
    if args.no_wait || at_start == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let mut last = at_start;
    loop {
        let left = count(zk).await?;
        if left != last {
            writeln!(out, "  {left} instance(s) left on {ip}")?;
            out.flush()?;
            last = left;
        }
        if left == 0 {
            writeln!(
                out,
                "node {ip} is empty after {:.1} s: every instance was replaced elsewhere \
                 (its bismuthd stops the last ones within its grace period)",
                started.elapsed().as_secs_f64()
            )?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{left} instance(s) still on {ip} after {} s; the controller keeps moving them \
                 (is an api process running? `curl API/controller` shows the leader)",
                args.timeout_s
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn undrain(zk: &Zk, args: &UndrainArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    nodes::undrain(zk, args.ip).await?;
    writeln!(out, "node {} is {}", args.ip, NodeState::Enabled)?;
    Ok(())
}
