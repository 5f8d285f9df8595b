//! [`Zk::watch_tree`]: a recursive watch on a subtree that survives connection
//! loss and session expiry.
//!
//! The consumer gets [`WatchEvent::Resync`] first and after every reconnect
//! (events may have been missed meanwhile, so it must re-read what it cares
//! about), then one event per change under the path. After a reconnect the
//! watch is registered again rather than trusting the server to restore it. The watch task ends
//! when the [`TreeWatch`] is dropped.

use std::time::Duration;

use bismuth_controller::Backoff;

use tokio::sync::mpsc;
use tracing::{debug, warn, Instrument};
use zookeeper_client as zkc;

use crate::session::Zk;

/// A change seen by a [`TreeWatch`]; paths are relative to the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// (Re)connected: anything may have changed; re-read the whole subtree.
    Resync,
    /// A znode was created.
    Created(String),
    /// A znode was deleted.
    Deleted(String),
    /// A znode's data changed.
    Changed(String),
}

impl WatchEvent {
    /// The path the event is about, `None` for [`WatchEvent::Resync`].
    pub fn path(&self) -> Option<&str> {
        match self {
            WatchEvent::Resync => None,
            WatchEvent::Created(p) | WatchEvent::Deleted(p) | WatchEvent::Changed(p) => Some(p),
        }
    }
}

/// Receives a subtree's [`WatchEvent`]s; dropping it stops the watch.
#[derive(Debug)]
pub struct TreeWatch {
    events: mpsc::Receiver<WatchEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl TreeWatch {
    /// The next event; `None` only if the watch task has stopped.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// An event already queued, without waiting.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Zk {
    /// Watches `path` and everything below it (the znodes need not exist yet).
    pub fn watch_tree(&self, path: &str) -> TreeWatch {
        let (tx, rx) = mpsc::channel(1024);
        let zk = self.clone();
        let span = tracing::info_span!("zk_watch", path);
        let path = path.to_owned();
        let task = tokio::spawn(async move { watch_loop(zk, path, tx).await }.instrument(span));
        TreeWatch { events: rx, task }
    }
}

async fn watch_loop(zk: Zk, path: String, tx: mpsc::Sender<WatchEvent>) {
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).retry();
    loop {
        let watcher = async {
            let client = zk.client().await?;
            client
                .watch(&path, zkc::AddWatchMode::PersistentRecursive)
                .await
                .map_err(|e| crate::ZkError::from_client("watch", &path, e))
        };
        let mut watcher = match watcher.await {
            Ok(w) => w,
            Err(e) => {
                let delay = retry.next_delay();
                warn!(error = %e, retry_in = ?delay, "cannot watch; will retry");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        retry.reset();
        if tx.send(WatchEvent::Resync).await.is_err() {
            return;
        }
        loop {
            let event = watcher.changed().await;
            let out = match event.event_type {
                zkc::EventType::Session => match event.session_state {
                    zkc::SessionState::SyncConnected | zkc::SessionState::ConnectedReadOnly => {
                        // Events during the disconnect may be lost (ZOOKEEPER-4698), and a
                        // restarted server does not always re-arm a persistent watch: register
                        // it anew, which also tells the consumer to resync.
                        debug!("reconnected; re-registering the watch");
                        break;
                    }
                    zkc::SessionState::Disconnected => continue,
                    state => {
                        // Terminal: this watcher must not be polled again.
                        warn!(?state, "ZooKeeper session ended; re-establishing the watch");
                        break;
                    }
                },
                zkc::EventType::NodeCreated => WatchEvent::Created(event.path),
                zkc::EventType::NodeDeleted => WatchEvent::Deleted(event.path),
                zkc::EventType::NodeDataChanged | zkc::EventType::NodeChildrenChanged => {
                    WatchEvent::Changed(event.path)
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}
