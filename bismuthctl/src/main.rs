//! `bismuthctl`: parse the command line, set up logging, run, exit with the
//! command's status. All logic is in the library (`lib.rs`).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = bismuthctl::Cli::parse();
    bismuthctl::main(cli).await
}
