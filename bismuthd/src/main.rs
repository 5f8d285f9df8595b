//! `bismuthd`: parse flags, bind, run until SIGTERM. See `lib.rs`.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bismuth_daemon::init_tracing();
    let args = bismuthd::Args::parse();
    let config = args.config()?;
    if args.clean_up {
        let report = bismuthd::clean_up(config).await?;
        println!(
            "removed {} containers, {} snapshots",
            report.removed_containers, report.removed_snapshots
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = bismuth_daemon::shutdown_on_signals()?;
    bismuthd::run(listener, config, shutdown).await
}
