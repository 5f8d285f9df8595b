//! Process exits from containerd's event stream (`/tasks/exit` in our
//! namespace), routed to each container's actor. After (re)subscribing it
//! asks containerd for every task's state, so an exit during a gap in the
//! stream (containerd restarting) is not lost.

use std::sync::Arc;
use std::time::Duration;

use bismuth_containerd::api::SubscribeRequest;
use bismuth_containerd::events::TaskExit;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::node::Node;

/// Runs until `shutdown`.
pub async fn watch_exits(node: Arc<Node>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let req = SubscribeRequest {
            filters: vec![format!(
                "namespace=={},topic==\"/tasks/exit\"",
                node.rt.ctd.namespace()
            )],
        };
        let mut client = node.rt.ctd.events();
        // containerd sends the stream's headers with its first event, so the
        // call completes only then; look for missed exits meanwhile.
        let subscribe = client.subscribe(req);
        tokio::pin!(subscribe);
        let checker = {
            let node = Arc::clone(&node);
            tokio::spawn(async move {
                node.check_exits().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                node.check_exits().await;
            })
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => {
                checker.abort();
                return;
            }
            r = &mut subscribe => r,
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(status) => {
                failures += 1;
                warn!(error = %status.message(), "cannot subscribe to containerd events; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200 << failures.min(5))) => continue,
                }
            }
        };
        failures = 0;
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
                                node.notify_exit(cid, (exit.pid, exit.exit_status));
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
        // The next subscription's resync covers the gap.
    }
}
