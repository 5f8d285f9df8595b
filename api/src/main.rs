//! `api`: parse flags, bind, serve until SIGTERM. See `lib.rs`.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bismuth_daemon::init_tracing();
    let args = api::Args::parse();
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = bismuth_daemon::shutdown_on_signals()?;
    api::run(listener, config, shutdown).await
}
