//! `bismuthctl delete ID`: removes a function through the api (its
//! routes and containers go with it). `delete-function` does the same in
//! ZooKeeper directly, for repairs.

use std::io::Write;

use bytes::Bytes;
use http::Method;
use uuid::Uuid;

use crate::client::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
}

pub async fn run(api: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = format!("/function/{}", args.function);
    api.call(
        Method::DELETE,
        &path,
        Bytes::new(),
        std::time::Duration::from_secs(30),
    )
    .await?;
    writeln!(out, "deleted {}", args.function)?;
    Ok(())
}
