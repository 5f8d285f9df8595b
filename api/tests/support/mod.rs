//! Test support for the api: a real ZooKeeper, the api in-process, nodes that
//! announce themselves like bismuthd would, a stand-in status reporter, and a
//! small HTTP client.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bismuth_model::{paths, ContainerState, NodeCapacity};
use bismuth_testkit::ZooKeeper;
use bismuth_zk::store::nodes;
use bismuth_zk::{Zk, ZkConfig};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub zookeeper: ZooKeeper,
    pub zk: Zk,
    pub zk_config: ZkConfig,
    pub api: SocketAddr,
    pub token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_owned()
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut api::Config)) -> Cluster {
        let zookeeper = ZooKeeper::start().unwrap();
        let zk_config = ZkConfig::new(&zookeeper.connect_string(), "api").unwrap();
        let zk = Zk::connect(zk_config.clone()).await.unwrap();
        zk.bootstrap().await.unwrap();
        let mut config = api::Config::new(zk_config.clone());
        tweak(&mut config);
        let token = config.auth_token.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(api::run(listener, config, shutdown.clone()));
        let cluster = Cluster {
            zookeeper,
            zk,
            zk_config,
            api,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
            shutdown,
        };
        // Wait until the api has its ZooKeeper session.
        bismuth_testkit::eventually("api connected", Duration::from_secs(20), || async {
            (cluster.call(Method::GET, "/function", "").await.status == StatusCode::OK)
                .then_some(())
        })
        .await;
        cluster
    }

    /// Provisions a node and announces it alive with a capacity, as bismuthd will.
    pub async fn node(&self, ip: Ipv4Addr, cpu: f64, memory: u64) {
        self.announce(
            ip,
            NodeCapacity {
                cpu,
                memory,
                sandbox: false,
            },
        )
        .await;
    }

    /// Provisions a node and announces `cap`.
    pub async fn announce(&self, ip: Ipv4Addr, cap: NodeCapacity) {
        nodes::provision(&self.zk, ip).await.unwrap();
        let cap = serde_json::to_vec(&cap).unwrap();
        self.zk
            .create_ephemeral(&paths::node_alive(ip), &cap)
            .await
            .unwrap();
    }

    pub async fn call(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.call_with(method, path, body, self.token.as_deref())
            .await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.api));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        Reply {
            status,
            body: resp.into_body().collect().await.unwrap().to_bytes(),
        }
    }

    /// Marks every container Running as soon as it appears, like a healthy bismuthd.
    pub fn report_running(&self) -> CancellationToken {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let zk = self.zk.clone();
        tokio::spawn(async move {
            let mut watch = zk.watch_tree(paths::NODES);
            loop {
                // React to changes, and rescan periodically so a read that
                // failed under load is retried (as bismuthd's resync does).
                tokio::select! {
                    _ = token.cancelled() => return,
                    ev = watch.next() => if ev.is_none() { return },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                for ip in zk.children_opt(paths::NODES).await.unwrap_or_default() {
                    let Ok(ip) = ip.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    for c in zk
                        .children_opt(&paths::node_containers(ip))
                        .await
                        .unwrap_or_default()
                    {
                        let Ok(cid) = c.parse() else { continue };
                        let path = paths::container_status(ip, cid);
                        if let Ok(Some(v)) = zk.get_opt(&path).await {
                            if v.value == [ContainerState::Invalid.to_byte()] {
                                let _ = zk
                                    .set(
                                        &path,
                                        &[ContainerState::Running.to_byte()],
                                        Some(v.version),
                                    )
                                    .await;
                            }
                        }
                    }
                }
            }
        });
        stop
    }
}

/// The DESIGN.md example, verbatim.
pub const DESIGN_EXAMPLE: &str = r#"{
  "image": "docker.io/library/python:3.11",
  "repo": ["https://git.example/org/app.git", "main"],
  "svc_group_id": null,
  "cpu": 0.5,
  "memory": 134217728,
  "svc_quotas": null,
  "invoke_mode": {"Server": [["/usr/local/bin/python3", "-m", "http.server"], 8000]},
  "max_instances": 1,
  "routes": [{"hostname": "test.host.internal"}]
}"#;

/// A small definition with the given routes and instance count.
pub fn def(routes: &[&str], instances: u32) -> String {
    serde_json::json!({
        "image": "busybox",
        "cpu": 0.25,
        "memory": 16 << 20,
        "invoke_mode": {"Executable": ["/bin/cat"]},
        "max_instances": instances,
        "routes": routes.iter().map(|h| serde_json::json!({"hostname": h})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// A stand-in bismuthd serving `/logs/{cid}` (two lines) and
/// `/logs/{cid}?follow=true` (SSE: two events, then held open).
pub struct LogServer {
    open_follows: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    started_follows: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for LogServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl LogServer {
    pub async fn start(addr: SocketAddr) -> LogServer {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind(addr).await.unwrap();
        let open_follows = Arc::new(AtomicUsize::new(0));
        let started_follows = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (open, started, token) = (open_follows.clone(), started_follows.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => r.unwrap(),
                };
                let (open, started) = (open.clone(), started.clone());
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (open, started) = (open.clone(), started.clone());
                        async move {
                            let cid = req.uri().path().trim_start_matches("/logs/").to_owned();
                            type Body = http_body_util::StreamBody<
                                futures_channel::mpsc::Receiver<
                                    Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
                                >,
                            >;
                            let (mut tx, rx) = futures_channel::mpsc::channel(4);
                            if req.uri().query() == Some("follow=true") {
                                started.fetch_add(1, Ordering::SeqCst);
                                open.fetch_add(1, Ordering::SeqCst);
                                tokio::spawn(async move {
                                    use futures_util::SinkExt;
                                    for n in 1..=2 {
                                        let _ = tx
                                            .send(Ok(hyper::body::Frame::data(Bytes::from(
                                                format!("data: live-{n}\n\n"),
                                            ))))
                                            .await;
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    // Hold the stream open with comments until the reader goes away.
                                    while tx
                                        .send(Ok(hyper::body::Frame::data(Bytes::from_static(
                                            b": ping\n\n",
                                        ))))
                                        .await
                                        .is_ok()
                                    {
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    open.fetch_sub(1, Ordering::SeqCst);
                                });
                            } else {
                                tokio::spawn(async move {
                                    use futures_util::SinkExt;
                                    let _ = tx
                                        .send(Ok(hyper::body::Frame::data(Bytes::from(format!(
                                            "hello from {cid}\nsecond line\n"
                                        )))))
                                        .await;
                                });
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new(rx)))
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        LogServer {
            open_follows,
            started_follows,
            stop,
        }
    }

    /// Whether every follow that was started has been closed by its reader.
    pub fn followers_gone(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.started_follows.load(Ordering::SeqCst) > 0
            && self.open_follows.load(Ordering::SeqCst) == 0
    }
}
