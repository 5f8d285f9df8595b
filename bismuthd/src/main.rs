//! `bismuthd`: parse flags, bind, run until SIGTERM. See `lib.rs`.
//! Run by containerd's shim as `bismuthd log-writer MAX:PATH`, it is a
//! container's log writer instead (`logwriter`).

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(bismuthd::logwriter::ARG) {
        return Ok(bismuthd::logwriter::run(&args.next().unwrap_or_default()));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(daemon())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn daemon() -> anyhow::Result<()> {
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
