//! Bismuth's ZooKeeper layer.
//!
//! - [`ZkConfig`] / [`ZkArgs`]: which ensemble and environment (`/{env}` chroot).
//! - [`Zk`]: a cheap-to-clone handle that reconnects after session expiry and
//!   maps every failure to a [`ZkError`] naming the path.
//! - [`Txn`]: multi-transactions with version checks; [`Zk::update`] retries
//!   read-modify-write on version conflicts.
//! - [`Zk::watch_tree`]: a subtree watch that survives connection and session
//!   loss, telling the consumer when to re-read ([`WatchEvent::Resync`]).
//! - [`store`]: the typed operations on the data model (functions, nodes,
//!   backends, routes) shared by `bismuthctl` and the daemons, and
//!   [`consistency`], which finds and repairs dangling references.

mod config;
pub mod consistency;
mod error;
mod session;
pub mod store;
mod txn;
mod watch;

pub use config::{ConfigError, ZkArgs, ZkConfig};
pub use error::ZkError;
pub use session::{backoff, Versioned, Zk};
pub use txn::Txn;
pub use watch::{TreeWatch, WatchEvent};
