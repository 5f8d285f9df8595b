//! `bismuthctl get-function ID`: one function as the api's GET JSON.

use std::io::Write;

use bismuth_zk::{store::functions, Zk};
use uuid::Uuid;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let view = functions::describe_function(zk, args.function).await?;
    output::json(out, &view)
}
