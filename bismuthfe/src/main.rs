//! `bismuthfe`: parse flags, bind, serve until SIGTERM. See `lib.rs`.

use anyhow::Context;
use clap::Parser;

// ZooKeeper, accepting and span export; requests are served on the
// threads `run` starts.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    bismuth_daemon::init_tracing();
    let args = bismuthfe::Args::parse();
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = bismuth_daemon::shutdown_on_signals()?;
    bismuthfe::run(listener, config, shutdown).await
}
