//! A node cut off from ZooKeeper for longer than its session stops its
//! instances on its own: by then the session has expired, the control
//! plane has replaced them on other nodes, and a function must not run more
//! instances than it wants once the fleet settles. When ZooKeeper is back,
//! what it still wants here starts again (the watch's resync does the same;
//! this re-reads too, in case the two crossed).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::Node;
use crate::reconcile::Key;

/// How often the connection is looked at.
const TICK: Duration = Duration::from_millis(250);

/// Runs until `shutdown`.
pub async fn watch(node: Arc<Node>, base: String, shutdown: CancellationToken) {
    let session = node.cfg.zk.session_timeout;
    let mut disconnected_since: Option<Instant> = None;
    let mut stopped = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if node.zk.is_connected().await {
            disconnected_since = None;
            if stopped {
                match crate::read_wanted(&node, &base).await {
                    Ok(wanted) => {
                        info!(
                            containers = wanted.len(),
                            "back in touch with ZooKeeper: starting what it still wants here"
                        );
                        let changed = node.set_desired(wanted);
                        node.ctl
                            .enqueue_all(changed.into_iter().map(Key::Container));
                        stopped = false;
                    }
                    Err(e) => warn!(error = %e, "cannot read this node's containers yet"),
                }
            }
            continue;
        }
        let since = *disconnected_since.get_or_insert_with(Instant::now);
        if !stopped && since.elapsed() >= session {
            let all = node.all().len();
            warn!(
                containers = all,
                cut_off_ms = since.elapsed().as_millis() as u64,
                "cut off from ZooKeeper for longer than the session timeout: stopping this node's \
                 instances (the control plane runs them elsewhere now)"
            );
            let changed = node.set_desired(HashSet::new());
            node.ctl
                .enqueue_all(changed.into_iter().map(Key::Container));
            stopped = true;
        }
    }
}
