//! Test support for bismuthfe: stand-in bismuthds, an in-process frontend,
//! and a client that can choose its source address.

#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bismuth_model::{paths, ContainerState, FunctionDefinition, InvokeMode, Route};
use bismuth_testkit::ZooKeeper;
use bismuth_zk::store::{backends, functions, nodes};
use bismuth_zk::{Zk, ZkConfig};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A ZooKeeper, a frontend in-process, and the port stand-ins listen on.
pub struct Cluster {
    pub zookeeper: ZooKeeper,
    pub zk: Zk,
    pub fe: SocketAddr,
    pub backend_port: u16,
    shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_with(|_| {}).await
    }

    /// A cluster whose frontend's configuration `tweak` changes.
    pub async fn start_with(tweak: impl FnOnce(&mut bismuthfe::Config)) -> Cluster {
        let zookeeper = ZooKeeper::start().unwrap();
        let zk_config = ZkConfig::new(&zookeeper.connect_string(), "fe").unwrap();
        let zk = Zk::connect(zk_config.clone()).await.unwrap();
        zk.bootstrap().await.unwrap();
        let backend_port = bismuth_testkit::free_port().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fe = listener.local_addr().unwrap();
        let mut config = bismuthfe::Config::new(zk_config);
        config.backend_port = backend_port;
        config.connect_timeout = Duration::from_millis(500);
        // Requests for a function without a Running backend are held this
        // long (scale from zero) before the 503 the tests expect.
        config.cold_start_timeout = Duration::from_millis(300);
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        tokio::spawn(bismuthfe::run(listener, config, shutdown.clone()));
        Cluster {
            zookeeper,
            zk,
            fe,
            backend_port,
            shutdown,
        }
    }

    /// Starts a stand-in bismuthd for node `ip`.
    pub async fn stand_in(&self, ip: Ipv4Addr) -> StandIn {
        StandIn::start(SocketAddr::from((ip, self.backend_port))).await
    }

    /// Creates a function (Server mode) with the given routes.
    pub async fn function(&self, routes: &[&str]) -> Uuid {
        let def = FunctionDefinition {
            image: "busybox".into(),
            repo: None,
            svc_group_id: None,
            cpu: 0.5,
            memory: 64 << 20,
            svc_quotas: None,
            invoke_mode: InvokeMode::Server(vec!["/bin/httpd".into()], 8080),
            max_instances: 4,
            min_instances: None,
            concurrency: None,
            idle_timeout: None,
            isolation: None,
            routes: routes
                .iter()
                .map(|h| Route {
                    hostname: (*h).into(),
                })
                .collect(),
        };
        functions::create_function(&self.zk, &def).await.unwrap()
    }

    /// Adds a backend of `function` on node `ip` (provisioning it) in `state`.
    pub async fn backend(&self, function: Uuid, ip: Ipv4Addr, state: ContainerState) -> Uuid {
        if !self.zk.exists(&paths::node(ip)).await.unwrap() {
            nodes::provision(&self.zk, ip).await.unwrap();
            // Alive, as its bismuthd would hold it.
            self.zk
                .create_ephemeral(
                    &paths::node_alive(ip),
                    br#"{"cpu":4.0,"memory":1073741824}"#,
                )
                .await
                .unwrap();
        }
        let cid = backends::add_backend(&self.zk, function, ip).await.unwrap();
        self.set_state(ip, cid, state).await;
        cid
    }

    pub async fn set_state(&self, ip: Ipv4Addr, cid: Uuid, state: ContainerState) {
        self.zk
            .set(&paths::container_status(ip, cid), &[state.to_byte()], None)
            .await
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.fe)
    }
}

/// A plain HTTP server standing in for bismuthd: it answers
/// `/invoke/{cid}/…` with a JSON description of the request, counts
/// uploaded bytes at `/count`, and streams `?bytes=N` zeros at `/download`.
pub struct StandIn {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl StandIn {
    pub async fn start(addr: SocketAddr) -> StandIn {
        let listener = TcpListener::bind(addr).await.unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let node = addr.ip();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => r.unwrap(),
                };
                let service = service_fn(move |req| serve(node, req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let token = token.clone();
                tokio::spawn(async move {
                    tokio::select! { _ = token.cancelled() => {}, _ = conn => {} }
                });
            }
        });
        StandIn { addr, stop }
    }
}

type StandInBody = http_body_util::Either<
    Full<Bytes>,
    StreamBody<futures_channel::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>>,
>;

async fn serve(node: IpAddr, req: Request<Incoming>) -> Result<Response<StandInBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let rest: Vec<&str> = path.splitn(4, '/').collect(); // ["", "invoke", cid, rest]
    let cid = rest.get(2).copied().unwrap_or("").to_owned();
    let fn_path = format!("/{}", rest.get(3).copied().unwrap_or(""));
    let response = Response::builder().header("x-bismuth-container-id", cid.as_str());
    if fn_path == "/count" {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n += data.len() as u64;
            }
        }
        return Ok(response
            .body(http_body_util::Either::Left(Full::new(Bytes::from(
                n.to_string(),
            ))))
            .unwrap());
    }
    if fn_path == "/download" {
        let total: u64 = query.trim_start_matches("bytes=").parse().unwrap_or(0);
        let (mut tx, rx) = futures_channel::mpsc::channel(4);
        tokio::spawn(async move {
            use futures_util::SinkExt;
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            let mut sent = 0;
            while sent < total {
                let n = (total - sent).min(chunk.len() as u64) as usize;
                if tx.send(Ok(Frame::data(chunk.slice(..n)))).await.is_err() {
                    return;
                }
                sent += n as u64;
            }
        });
        return Ok(response
            .body(http_body_util::Either::Right(StreamBody::new(rx)))
            .unwrap());
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let body = serde_json::json!({
        "node": node.to_string(),
        "container": cid,
        "path": fn_path,
        "query": query,
        "method": req.method().as_str(),
        "headers": headers,
    });
    Ok(response
        .status(StatusCode::OK)
        .body(http_body_util::Either::Left(Full::new(Bytes::from(
            body.to_string(),
        ))))
        .unwrap())
}

/// A response read to the end.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client whose connections come from `source` (any 127.x address).
pub fn client_from(source: Ipv4Addr) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::V4(source)));
    Client::builder(TokioExecutor::new()).build(connector)
}

pub async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Resident set size of this process in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
