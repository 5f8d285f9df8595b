//! `bismuthctl list-nodes [--json]`: nodes, their state and their containers.

use std::io::Write;

use bismuth_model::ContainerState;
use bismuth_zk::{store::nodes, Zk};

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let list = nodes::list_nodes(zk).await?;
    if args.json {
        return output::json(out, &list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let running = n
                .containers
                .iter()
                .filter(|c| c.state == Some(ContainerState::Running))
                .count();
            vec![
                n.ip.to_string(),
                if n.enabled { "enabled" } else { "drained" }.to_owned(),
                n.containers.len().to_string(),
                running.to_string(),
            ]
        })
        .collect();
    output::table(out, &["IP", "STATE", "CONTAINERS", "RUNNING"], &rows)?;
    Ok(())
}
