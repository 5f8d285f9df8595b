//! containerd's task exits (`/tasks/exit` in our namespace) as triggers:
//! each enqueues its container. After every (re)subscription every known
//! container is enqueued too, so a process that died while containerd or
//! the stream was away is seen at once, not at the next resync.

use std::sync::Arc;
use std::time::Duration;

use bismuth_containerd::api::SubscribeRequest;
use bismuth_containerd::events::TaskExit;
use bismuth_controller::Backoff;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::node::Node;
use crate::reconcile::Key;

/// Runs until `shutdown`.
pub async fn watch_exits(node: Arc<Node>, shutdown: CancellationToken) {
    let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).retry();
    loop {
        let req = SubscribeRequest {
            filters: vec![format!(
                "namespace=={},topic==\"/tasks/exit\"",
                node.rt.ctd.namespace()
            )],
        };
        let mut client = node.rt.ctd.events();
        // containerd sends the stream's headers with its first event, so the
        // call completes only then: look at every container meanwhile (now,
        // and once more when containerd surely serves again).
        let subscribe = client.subscribe(req);
        tokio::pin!(subscribe);
        let recheck = {
            let node = Arc::clone(&node);
            tokio::spawn(async move {
                enqueue_known(&node);
                tokio::time::sleep(Duration::from_secs(1)).await;
                enqueue_known(&node);
            })
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => {
                recheck.abort();
                return;
            }
            r = &mut subscribe => r,
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(status) => {
                let delay = retry.next_delay();
                warn!(error = %status.message(), retry_in_ms = delay.as_millis() as u64, "cannot subscribe to containerd events");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        retry.reset();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(envelope)) => {
                    let Some(event) = envelope.event else {
                        continue;
                    };
                    match TaskExit::decode(event.value.as_slice()) {
                        // The init process (exec'd processes have their own ids).
                        Ok(exit) if exit.id == exit.container_id => {
                            if let Ok(cid) = Uuid::parse_str(&exit.container_id) {
                                debug!(container = %cid, pid = exit.pid, status = exit.exit_status, "task exited");
                                node.ctl.enqueue(Key::Container(cid));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "undecodable task exit event"),
                    }
                }
                Ok(None) | Err(_) => {
                    warn!("containerd's event stream ended; resubscribing");
                    break;
                }
            }
        }
    }
}

fn enqueue_known(node: &Node) {
    node.ctl
        .enqueue_all(node.all().iter().map(|h| Key::Container(h.cid)));
}
