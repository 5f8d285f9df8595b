//! `bismuthctl delete-function ID`: remove a function, its routes and containers.

use std::io::Write;

use bismuth_zk::{store::functions, Zk};
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    functions::delete_function(zk, args.function).await?;
    writeln!(out, "deleted function {}", args.function)?;
    Ok(())
}
