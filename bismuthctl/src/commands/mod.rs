//! The subcommands, one file each. Every command validates its input in
//! [`Command::validate`] before any network call. The api verbs (deploy,
//! update, redeploy, invoke, logs, calls, describe, top, delete) speak HTTP to the
//! api and the frontend; the others are ZooKeeper-level (bootstrap and
//! repair) or local (image).

mod add_backend;
mod bootstrap;
mod calls;
mod consistency;
mod create_function;
mod delete;
mod delete_function;
pub(crate) mod deploy;
mod deprovision;
mod describe;
mod drain;
mod get_function;
pub mod image;
mod invoke;
mod list_functions;
mod list_nodes;
mod logs;
mod provision;
mod remove_backend;
mod top;

use std::io::Write;

use bismuth_zk::Zk;
use clap::Subcommand;

use crate::client::Endpoints;

/// What `bismuthctl` can do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a function from a JSON or YAML definition through the api;
    /// prints its id and waits until it is Running
    Deploy(deploy::Args),
    /// Replace a function's definition (a rollout: new instances first)
    Update(deploy::UpdateArgs),
    /// Replace a function's instances with fresh ones (same definition)
    Redeploy(deploy::RedeployArgs),
    /// Call a function through the frontend, by id or routed hostname
    Invoke(invoke::Args),
    /// Print a function's container output; -f follows it
    Logs(logs::Args),
    /// A function's last invocations: time, status, duration, cold start
    Calls(calls::Args),
    /// A function's definition, instances and backends
    Describe(describe::Args),
    /// Functions and nodes with live rates, latencies and instances
    Top(top::Args),
    /// Delete a function (its routes and containers) through the api
    #[command(alias = "rm")]
    Delete(delete::Args),
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
    /// Checks the command's input without touching the network.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            Command::CreateFunction(args) => args.definition().map(|_| ()),
            Command::Invoke(args) => args.validate(),
            _ => Ok(()),
        }
    }

    /// Whether the command speaks to the api or the frontend (not ZooKeeper).
    pub fn speaks_api(&self) -> bool {
        matches!(
            self,
            Command::Deploy(_)
                | Command::Update(_)
                | Command::Redeploy(_)
                | Command::Invoke(_)
                | Command::Logs(_)
                | Command::Calls(_)
                | Command::Describe(_)
                | Command::Top(_)
                | Command::Delete(_)
        )
    }

    /// Runs an api verb (see [`Command::speaks_api`]).
    pub async fn run_api(&self, endpoints: &Endpoints, out: &mut dyn Write) -> anyhow::Result<()> {
        let api = || endpoints.api();
        match self {
            Command::Deploy(args) => deploy::deploy(&api()?, args, out).await,
            Command::Update(args) => deploy::update(&api()?, args, out).await,
            Command::Redeploy(args) => deploy::redeploy(&api()?, args, out).await,
            Command::Invoke(args) => invoke::run(&endpoints.fe()?, args, out).await,
            Command::Logs(args) => logs::run(&api()?, args, out).await,
            Command::Calls(args) => calls::run(&api()?, args, out).await,
            Command::Describe(args) => describe::run(&api()?, args, out).await,
            Command::Top(args) => top::run(&api()?, args, out).await,
            Command::Delete(args) => delete::run(&api()?, args, out).await,
            other => Err(misrouted(other)),
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
            other => Err(misrouted(other)),
        }
    }
}

/// A command handed to the wrong dispatch (a bug in `lib.rs`).
fn misrouted(command: &Command) -> anyhow::Error {
    anyhow::anyhow!("bismuthctl bug: {command:?} reached the wrong dispatch")
}
