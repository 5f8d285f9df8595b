//! The subcommands, one file each. Every command validates its input in
//! [`Command::validate`] before any network call.

mod add_backend;
mod bootstrap;
mod consistency;
mod create_function;
mod delete_function;
mod deprovision;
mod drain;
mod get_function;
pub mod image;
mod list_functions;
mod list_nodes;
mod provision;
mod remove_backend;

use std::io::Write;

use bismuth_zk::Zk;
use clap::Subcommand;

/// What `bismuthctl` can do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the environment's top-level znodes (safe to run again)
    Bootstrap,
    /// Register a node (bismuthd host) as schedulable
    Provision(provision::Args),
    /// Remove a node; --force also removes its containers
    Deprovision(deprovision::Args),
    /// Stop scheduling new containers on a node; --evacuate also moves its
    /// instances to other nodes (replacements first) and waits until it is empty
    Drain(drain::Args),
    /// Make a drained node schedulable again (ends an evacuation)
    Undrain(drain::UndrainArgs),
    /// List nodes with their state and containers
    ListNodes(list_nodes::Args),
    /// List functions with their image, mode, routes and backends
    ListFunctions(list_functions::Args),
    /// Show one function's definition and backends as JSON
    GetFunction(get_function::Args),
    /// Create a function; prints its id
    CreateFunction(create_function::Args),
    /// Delete a function with its routes and containers
    DeleteFunction(delete_function::Args),
    /// Add a container of a function on a node; prints the container id
    AddBackend(add_backend::Args),
    /// Remove a container from a function
    RemoveBackend(remove_backend::Args),
    /// Report dangling references in the tree; --fix repairs them
    Consistency(consistency::Args),
    /// Images in this host's containerd (import an archive)
    Image(image::Args),
}

impl Command {
    /// Checks the command's input without touching ZooKeeper.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            Command::CreateFunction(args) => args.definition().map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Runs the command against `zk`, writing results to `out`.
    pub async fn run(&self, zk: &Zk, out: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Command::Bootstrap => bootstrap::run(zk, out).await,
            Command::Provision(args) => provision::run(zk, args, out).await,
            Command::Deprovision(args) => deprovision::run(zk, args, out).await,
            Command::Drain(args) => drain::run(zk, args, out).await,
            Command::Undrain(args) => drain::undrain(zk, args, out).await,
            Command::ListNodes(args) => list_nodes::run(zk, args, out).await,
            Command::ListFunctions(args) => list_functions::run(zk, args, out).await,
            Command::GetFunction(args) => get_function::run(zk, args, out).await,
            Command::CreateFunction(args) => create_function::run(zk, args, out).await,
            Command::DeleteFunction(args) => delete_function::run(zk, args, out).await,
            Command::AddBackend(args) => add_backend::run(zk, args, out).await,
            Command::RemoveBackend(args) => remove_backend::run(zk, args, out).await,
            Command::Consistency(args) => consistency::run(zk, args, out).await,
            Command::Image(args) => image::run(args, out).await,
        }
    }
}
