//! bismuthd's reconcile loop. Every decision about a container is made in
//! `reconcile(Key::Container(id))`: what ZooKeeper wants (the watch keeps
//! [`crate::node::Desired`]) against what is there (containerd's container
//! and task, the network namespace and veth, the /30, the rules element,
//! the svcprovider process, the files), converging step by step. Every
//! resource is named by the container id, so a step that fails leaves
//! nothing the next run cannot find. `Key::Host` checks what all containers
//! share (the rules table) and sweeps what belongs to no container.
//!
//! Triggers only enqueue keys: the ZooKeeper watch, containerd's exit
//! events (and a full re-read after every event-stream gap), svcprovider
//! exits, and a periodic resync of everything ([`discover`]).

mod container;
mod discover;
mod error;
mod host;
mod remove;
mod start;

use std::sync::Arc;

use bismuth_controller::Action;
use uuid::Uuid;

pub use discover::{discover, sweep_snapshots};
pub use error::Error;

use crate::node::Node;

/// What one reconcile is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// One container and everything named by its id.
    Container(Uuid),
    /// The rules table and leftovers of no container.
    Host,
}

/// Converges `key` one step further (see the module docs).
pub async fn reconcile(node: Arc<Node>, key: Key) -> Result<Action, Error> {
    match key {
        Key::Container(cid) => match node.wanted(cid) {
            None => Err(Error::NotSynced),
            Some(true) => container::converge(&node, cid).await,
            Some(false) => remove::remove(&node, cid).await,
        },
        Key::Host => host::converge(&node).await,
    }
}

/// Removes `cid` and everything of it, whatever ZooKeeper says (`--clean-up`).
pub async fn remove(node: &Node, cid: Uuid) -> Result<Action, Error> {
    remove::remove(node, cid).await
}
