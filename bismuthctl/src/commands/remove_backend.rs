//! `bismuthctl remove-backend FUNCTION CONTAINER`: take a container away from a function.

use std::io::Write;

use bismuth_zk::{store::backends, Zk};
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
    /// The container's id (see get-function)
    pub container: Uuid,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let b = backends::remove_backend(zk, args.function, args.container).await?;
    writeln!(
        out,
        "removed container {} on node {} from function {}",
        b.container_id, b.ip, args.function
    )?;
    Ok(())
}
