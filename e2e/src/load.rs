//! Load for the tests: clients sending requests in a loop until stopped,
//! counting answers and keeping what went wrong.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use ::http::Method;
use bismuth_testkit::http;
use tokio::task::JoinHandle;

/// Clients sending `GET url` (with a `Host`, if given) one after another.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    /// Starts `clients` clients.
    pub fn start(url: String, host: Option<&'static str>, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let headers: Vec<(&str, &str)> =
                        host.map(|h| ("host", h)).into_iter().collect();
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Relaxed) {
                        match http::request(Method::GET, &url, &headers, "").await {
                            Ok(r) if r.status == 200 => ok += 1,
                            other => {
                                failed.push(format!("{:?}", other.map(|r| (r.status, r.text()))))
                            }
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients once their requests in flight end; how many were
    /// answered 200, and every other outcome.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.tasks {
            if let Ok((o, f)) = t.await {
                ok += o;
                failed.extend(f);
            }
        }
        (ok, failed)
    }
}
