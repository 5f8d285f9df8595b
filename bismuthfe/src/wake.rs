//! Scale from zero, the frontend's part: a request held because its
//! function has no Running instance asks the controller for one by creating
//! `/function/{id}/wake` (the leader watches it, scales the function up and
//! deletes it). At most one wake per function per [`MIN_GAP`] from this
//! frontend, so a burst of held requests writes ZooKeeper once. And the
//! frontend's registration, `/frontend/{id}`, where the controller finds
//! its `GET /load`.

use std::collections::HashMap;
use std::time::Duration;

use bismuth_model::{paths, FrontendRecord, FunctionId};
use bismuth_zk::{Zk, ZkError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

/// The least time between two wakes of one function from this frontend.
pub const MIN_GAP: Duration = Duration::from_millis(500);

/// How often the registration is checked (it is an ephemeral znode: a new
/// session must create it again).
const REGISTRATION_CHECK: Duration = Duration::from_secs(2);

/// Where held requests ask for an instance (cheap, never blocks).
#[derive(Clone, Debug)]
pub struct Waker {
    tx: mpsc::Sender<FunctionId>,
}

impl Waker {
    /// A waker and the receiving end for [`run`].
    pub fn new() -> (Waker, mpsc::Receiver<FunctionId>) {
        let (tx, rx) = mpsc::channel(4096);
        (Waker { tx }, rx)
    }

    /// Asks for an instance of `function` (dropped if the queue is full:
    /// a held request asks again).
    pub fn wake(&self, function: FunctionId) {
        let _ = self.tx.try_send(function);
    }
}

/// Creates the wake znodes asked for, until `shutdown`.
pub async fn run(zk: Zk, mut rx: mpsc::Receiver<FunctionId>, shutdown: CancellationToken) {
    let mut last: HashMap<FunctionId, Instant> = HashMap::new();
    loop {
        let function = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = rx.recv() => match f { Some(f) => f, None => return },
        };
        let now = Instant::now();
        if last.get(&function).is_some_and(|t| now - *t < MIN_GAP) {
            continue;
        }
        last.insert(function, now);
        last.retain(|_, t| now - *t < Duration::from_secs(60));
        match zk.create(&paths::function_wake(function), &[]).await {
            Ok(()) => debug!(%function, "asked the controller for an instance"),
            // Asked already, or the function is gone: nothing to do.
            Err(ZkError::NodeExists { .. } | ZkError::NoNode { .. }) => {}
            Err(e) => warn!(%function, error = %e, "cannot ask for an instance; will ask again"),
        }
    }
}

/// Keeps `/frontend/{id}` (where `GET /load` answers: `addr`) until `shutdown`.
pub async fn register(zk: Zk, id: Uuid, addr: String, shutdown: CancellationToken) {
    let record = serde_json::to_vec(&FrontendRecord { addr }).unwrap_or_default();
    let path = paths::frontend(id);
    loop {
        if let Err(e) = ensure_registered(&zk, &path, &record).await {
            warn!(error = %e, "cannot register this frontend for load reports; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = zk.delete(&path, None).await;
                return;
            }
            _ = tokio::time::sleep(REGISTRATION_CHECK) => {}
        }
    }
}

async fn ensure_registered(zk: &Zk, path: &str, record: &[u8]) -> Result<(), ZkError> {
    if zk.holds(path).await? {
        return Ok(());
    }
    match zk.create(paths::FRONTENDS, &[]).await {
        Ok(()) | Err(ZkError::NodeExists { .. }) => {}
        Err(e) => return Err(e),
    }
    match zk.create_ephemeral(path, record).await {
        Ok(()) => Ok(()),
        // A previous session's, about to expire: replace it with ours.
        Err(ZkError::NodeExists { .. }) => {
            zk.delete(path, None).await?;
            zk.create_ephemeral(path, record).await
        }
        Err(e) => Err(e),
    }
}
