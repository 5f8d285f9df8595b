//! bismuthd's HTTP interface on `{node ip}:8001`: `/invoke/{cid}[/path]`
//! into a Running container (Server: proxied; Executable: one process per
//! request), `/logs/{cid}[?follow=true]`, `/containers/{cid}` (is it here?),
//! `/calls/{function}`, `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use bismuth_daemon::headers::{CONTAINER_ID, TRACEPARENT};
use bismuth_daemon::otel;
use bismuth_model::{ContainerState, InvokeMode};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use opentelemetry::KeyValue;

use crate::node::{Handle, Node, Target};
use crate::respond::{error, full, json, Body};
use crate::{exec, logs, proxy};
use bismuth_daemon::guarded::Guarded;
use http_body_util::BodyExt;

/// What every request handler needs.
#[derive(Clone, Debug)]
pub struct Server {
    pub node: Arc<Node>,
    pub client: proxy::Client,
}

impl Server {
    pub fn new(node: Arc<Node>) -> Server {
        Server {
            node,
            client: proxy::client(),
        }
    }

    /// Routes one request.
    pub async fn handle<B>(self, req: Request<B>, _peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<crate::respond::BoxError> + Send,
    {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return self.healthz();
        }
        if path == "/metrics" {
            return self.metrics().await;
        }
        if let Some(id) = path.strip_prefix("/containers/") {
            return self.container(id);
        }
        if path == "/load" {
            return self.load();
        }
        if let Some(id) = path.strip_prefix("/calls/") {
            return self.calls(id, req.uri().query());
        }
        if let Some(target) = bismuth_daemon::invoke::target(&path) {
            return match target {
                Ok((cid, rest)) => {
                    let rest = rest.to_owned();
                    self.invoke(cid, &rest, req).await
                }
                Err(id) => error(
                    StatusCode::NOT_FOUND,
                    format!("{id:?} is not a container id"),
                ),
            };
        }
        if let Some(id) = path.strip_prefix("/logs/") {
            if req.method() != Method::GET {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "logs are read with GET".into(),
                );
            }
            let Ok(cid) = id.trim_end_matches('/').parse() else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("{id:?} is not a container id"),
                );
            };
            return match logs::Query::parse(req.uri().query()) {
                Ok(query) => logs::serve(&self.node, cid, query).await,
                Err(message) => error(StatusCode::BAD_REQUEST, message),
            };
        }
        error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
    }

    /// `GET /metrics`: Prometheus' text format.
    async fn metrics(&self) -> Response<Body> {
        let mut containers = Vec::new();
        for h in self.node.all() {
            let function = h.target.get().map(|t| t.function_id);
            containers.push((h.cid, function, h.state()));
        }
        let text = self
            .node
            .metrics
            .render(&containers, &self.node.ctl.stats());
        let mut r = Response::new(full(text));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(bismuth_metrics::CONTENT_TYPE),
        );
        r
    }

    /// `GET /calls/{function_id}?limit=N`: this node's records, newest first.
    fn calls(&self, id: &str, query: Option<&str>) -> Response<Body> {
        let Ok(function) = id.trim_end_matches('/').parse() else {
            return error(
                StatusCode::NOT_FOUND,
                format!("{id:?} is not a function id"),
            );
        };
        let limit = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("limit="))
            .map_or(Ok(100), str::parse::<usize>);
        let Ok(limit) = limit else {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a non-negative integer".into(),
            );
        };
        let calls = bismuth_model::Calls {
            calls: self
                .node
                .calls
                .recent(function, limit, self.node.cfg.node_ip),
        };
        json(
            StatusCode::OK,
            &serde_json::to_value(calls).unwrap_or_default(),
        )
    }

    /// `GET /containers/{cid}`: whether this node still has the container
    /// (200 with its state and address) or not (404): the api waits on it
    /// after a rollout.
    fn container(&self, id: &str) -> Response<Body> {
        let Ok(cid) = id.parse::<uuid::Uuid>() else {
            return error(
                StatusCode::NOT_FOUND,
                format!("{id:?} is not a container id"),
            );
        };
        match self.node.get(cid) {
            Some(h) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "container_id": cid,
                    "state": format!("{:?}", h.state()),
                    "address": h.target.get().map(|t| t.net.container_ip().to_string()),
                }),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                format!("container {cid} is not on this node"),
            ),
        }
    }

    fn healthz(&self) -> Response<Body> {
        let all = self.node.all();
        let running = all
            .iter()
            .filter(|h| h.state() == ContainerState::Running)
            .count();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "node": self.node.cfg.node_ip,
                "containers": all.len(),
                "running": running,
                "addresses_in_use": self.node.cfg.pool.in_use(),
            }),
        )
    }

    async fn invoke<B>(&self, cid: uuid::Uuid, rest: &str, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<crate::respond::BoxError> + Send,
    {
        let Some(h) = self.node.get(cid) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("container {cid} does not run on this node"),
            );
        };
        let incoming = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
        let mut call = match self.begin(h, req.method(), incoming).await {
            Ok(call) => call,
            Err(early) => return early,
        };
        let mut req = req;
        // The function sees this hop's traceparent (a header for a Server,
        // TRACEPARENT in its environment for an Executable).
        let traceparent_value = HeaderValue::from_str(&call.traceparent).ok();
        if let Some(v) = &traceparent_value {
            req.headers_mut().insert(TRACEPARENT, v.clone());
        }
        let mut resp = match &call.target.def.invoke_mode {
            InvokeMode::Server(_, port) => {
                proxy::forward(&self.client, &call.target, *port, req, rest).await
            }
            InvokeMode::Executable(_) => {
                exec::run(&call.h, &call.target, req, rest, self.node.cfg.exec_timeout).await
            }
        };
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&cid.to_string()) {
            headers.insert(CONTAINER_ID, v);
        }
        if let Some(v) = traceparent_value {
            headers.insert(TRACEPARENT, v);
        }
        self.finish(&mut call, resp.status());
        resp.map(|body| Guarded::new(body, call.held).boxed())
    }

    /// Starts an invocation of the container `h` with `method` (and the
    /// caller's trace context): the container must be Running, and a slot
    /// of its concurrency free (waited for). Else the answer.
    pub(crate) async fn begin(
        &self,
        h: Arc<Handle>,
        method: &Method,
        incoming: Option<&str>,
    ) -> Result<Call, Response<Body>> {
        let cid = h.cid;
        let Some(target) = h.running_target() else {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("container {cid} is {:?}, not Running", h.state()),
            ));
        };
        let arrived = (std::time::SystemTime::now(), std::time::Instant::now());
        // In flight from now until the response's last byte, waiting for a
        // slot included: what the autoscaler reads.
        let load = bismuth_metrics::load::OwnedLoadGuard::begin(Arc::clone(&h.load));
        let slot = acquire_slot(&target).await?;
        let (span, traceparent) = otel::hop(
            self.node.tracer.as_ref(),
            "bismuthd invoke",
            incoming,
            || {
                vec![
                    KeyValue::new("bismuth.function_id", target.function_id.to_string()),
                    KeyValue::new("bismuth.container_id", cid.to_string()),
                    KeyValue::new("http.request.method", method.to_string()),
                ]
            },
        );
        let cold = !h.served.swap(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Call {
            h,
            target,
            traceparent,
            span,
            arrived,
            cold,
            held: (slot, load),
        })
    }

    /// Records `call` at its response head with `status`: counted, in
    /// the call records, its span's status set (the span ends, and the
    /// slot and load count are released, when `call` is dropped).
    pub(crate) fn finish(&self, call: &mut Call, status: StatusCode) {
        let status = status.as_u16();
        if let Some(span) = call.span.as_mut() {
            span.status(status);
            span.set(KeyValue::new("bismuth.cold", call.cold));
        }
        let function = call.target.function_id;
        self.node.metrics.invoked(function, status, call.cold);
        self.node.calls.record(
            function,
            crate::calls::Call {
                trace_id: crate::calls::Call::trace_id_of(&call.traceparent),
                container_id: call.h.cid,
                start: call.arrived.0,
                duration_ms: call.arrived.1.elapsed().as_secs_f64() * 1000.0,
                status,
                cold: call.cold,
            },
        );
    }

    /// `GET /load`: every container's requests in flight, their integral
    /// and idle time, for the control plane's autoscaler.
    fn load(&self) -> Response<Body> {
        let instances = self
            .node
            .all()
            .into_iter()
            .filter_map(|h| {
                let function = h.target.get()?.function_id;
                let s = h.load.sample();
                Some(bismuth_model::InstanceLoad {
                    container_id: h.cid,
                    function,
                    in_flight: s.in_flight,
                    busy_s: s.busy.as_secs_f64(),
                    requests: s.requests,
                    idle_s: s.idle.as_secs_f64(),
                })
            })
            .collect();
        let report = bismuth_model::LoadReport {
            uptime_s: bismuth_metrics::load::uptime_s(),
            functions: Vec::new(),
            instances,
        };
        json(
            StatusCode::OK,
            &serde_json::to_value(report).unwrap_or_default(),
        )
    }
}

/// An invocation under way ([`Server::begin`] to [`Server::finish`]).
pub(crate) struct Call {
    pub h: Arc<Handle>,
    pub target: Arc<Target>,
    /// This hop's trace context, as the function sees it.
    pub traceparent: String,
    span: Option<otel::Span>,
    arrived: (std::time::SystemTime, std::time::Instant),
    cold: bool,
    pub held: Held,
}

/// What an invocation holds until its response's last byte: its slot of
/// the container's concurrency and its count in the container's load.
pub(crate) type Held = (
    tokio::sync::OwnedSemaphorePermit,
    bismuth_metrics::load::OwnedLoadGuard,
);

/// Requests waiting for a slot beyond which an instance answers 503 (the
/// frontends send elsewhere and the autoscaler adds instances long before).
pub const MAX_WAITING: u64 = 1_000;

/// A slot of the container's `concurrency`, waited for if all are taken;
/// 503 with `Retry-After` when too many already wait.
async fn acquire_slot(
    target: &Target,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response<Body>> {
    use std::sync::atomic::Ordering::Relaxed;
    if let Ok(p) = Arc::clone(&target.slots).try_acquire_owned() {
        return Ok(p);
    }
    struct Waiting<'a>(&'a std::sync::atomic::AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Relaxed);
        }
    }
    let waiting = Waiting(&target.waiting);
    if waiting.0.fetch_add(1, Relaxed) >= MAX_WAITING {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the instance serves {} requests at once (its concurrency) and {MAX_WAITING} more wait; retry shortly",
                target.def.concurrency()
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    let permit = Arc::clone(&target.slots).acquire_owned().await;
    drop(waiting);
    permit.map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the instance is stopping".into(),
        )
    })
}
