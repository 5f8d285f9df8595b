//! `bismuthctl`, the operator's command line for a Bismuth environment.
//!
//! Each subcommand lives in its own file under [`commands`]. The api verbs
//! (deploy, invoke, logs, …) are clients of the api and the frontend
//! ([`client`]); the ZooKeeper-level verbs (bootstrap, provision, repair)
//! talk to ZooKeeper through `bismuth_zk::store`. Exit codes: 0 success, 1
//! the operation failed (a server unreachable, unknown function or node, a
//! conflict), 2 invalid input, 3 `consistency` found problems it did not fix.

pub mod client;
pub mod commands;
mod deffile;
mod output;
mod units;

use std::process::ExitCode;

use clap::Parser;

pub use commands::Command;

/// Operate a Bismuth environment: deploy and watch functions through the
/// api; nodes, backends and repairs in ZooKeeper.
#[derive(Debug, Parser)]
#[command(name = "bismuthctl", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub endpoints: client::Endpoints,
    #[command(flatten)]
    pub zookeeper: bismuth_zk::ZkArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Input the operator got wrong; exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `consistency` found problems that remain; exits with status 3.
#[derive(Debug, thiserror::Error)]
#[error("{0} problem(s) remain")]
pub struct Inconsistent(pub usize);

/// Runs the command, prints any error to stderr, and returns the exit status.
pub async fn main(cli: Cli) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match run(cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            if !err.is::<Inconsistent>() {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

/// Connects and runs one command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    if cli.command.speaks_api() {
        cli.command.validate()?;
        return cli.command.run_api(&cli.endpoints, out).await;
    }
    let config = cli
        .zookeeper
        .config()
        .map_err(|e| UsageError(e.to_string()))?;
    // Validate the command's own input before touching the network.
    cli.command.validate()?;
    // Image commands talk to this host's containerd, not ZooKeeper.
    if let Command::Image(args) = &cli.command {
        return commands::image::run(args, out).await;
    }
    let zk = bismuth_zk::Zk::connect(config).await?;
    cli.command.run(&zk, out).await
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.is::<UsageError>() {
        2
    } else if err.is::<Inconsistent>() {
        3
    } else if let Some(bismuth_zk::store::StoreError::Invalid(_)) = err.downcast_ref() {
        2
    } else if let Some(e) = err.downcast_ref::<client::ClientError>() {
        e.exit_code()
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&UsageError("x".into()).into()), 2);
        assert_eq!(exit_code(&Inconsistent(1).into()), 3);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), 1);
    }
}
