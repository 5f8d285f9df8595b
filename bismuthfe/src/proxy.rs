//! Handling one invocation: find the function (by `Host`, else by
//! `/invoke/{function_id}`), rank its Running backends for this client, and
//! stream the request to the first one that accepts a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bismuth_controller::Backoff;
use bismuth_model::FunctionId;

use crate::metrics::FrontendMetrics;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::body::BodySlot;
use crate::load::FrontendLoad;
use crate::ring;
use crate::table::{Entry, RoutingTable, Target};
use crate::wake::Waker;
use bismuth_daemon::headers::{self, CONTAINER_ID, TRACEPARENT};
use bismuth_daemon::otel::{self, Tracer};
use bismuth_daemon::upstream::{self, UpstreamBody};
use opentelemetry::KeyValue;

/// The body of a response: streamed from a backend, or a short error.
pub type ResponseBody = Either<UpstreamBody, Full<Bytes>>;

/// At most this many backends are tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// Routes and forwards requests; shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwap<RoutingTable>>,
    ready: watch::Receiver<bool>,
    client: upstream::Client,
    backend_port: u16,
    response_timeout: Duration,
    refused_hold: Duration,
    refused_backoff: Backoff,
    metrics: Arc<FrontendMetrics>,
    tracer: Option<Tracer>,
    load: Arc<FrontendLoad>,
    waker: Waker,
    cold_start_timeout: Duration,
    max_held: (u64, u64),
}

impl Proxy {
    /// A proxy reading `table`, sending to bismuthd on `cfg.backend_port`.
    pub fn new(
        table: Arc<ArcSwap<RoutingTable>>,
        ready: watch::Receiver<bool>,
        cfg: &crate::config::Config,
        metrics: Arc<FrontendMetrics>,
        tracer: Option<Tracer>,
        load: Arc<FrontendLoad>,
        waker: Waker,
    ) -> Self {
        // A pooled connection to a node that died or was cut off must not
        // hold requests for the response timeout: keepalive probes find an
        // idle one dead within about 5 s, and data the peer does not
        // acknowledge for 10 s ends a busy one (a slow function's kernel
        // still acknowledges, so slow answers are unaffected). bismuthd
        // closes connections idle for 30 s; ours are dropped after 20.
        let client = upstream::Client::new(upstream::Config {
            connect_timeout: cfg.connect_timeout,
            idle_timeout: Duration::from_secs(20),
            max_idle_per_host: 256,
            keepalive: Some(Duration::from_secs(2)),
            user_timeout: Some(Duration::from_secs(10)),
        });
        Proxy {
            table,
            ready,
            client,
            backend_port: cfg.backend_port,
            response_timeout: cfg.response_timeout,
            refused_hold: cfg.hold_refused,
            refused_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            metrics,
            tracer,
            load,
            waker,
            cold_start_timeout: cfg.cold_start_timeout,
            max_held: (cfg.max_held_requests, cfg.max_held_bytes),
        }
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
        let (mut parts, body) = req.into_parts();
        let host = parts.headers.get(header::HOST).cloned();
        let host_str = host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or(parts.uri.host());
        let (function, rest, entry) = match self.resolve(host_str, parts.uri.path()) {
            Ok(found) => found,
            Err(early) => return local(early),
        };

        let (mut span, traceparent) = otel::hop(
            self.tracer.as_ref(),
            "bismuthfe invoke",
            parts
                .headers
                .get(&TRACEPARENT)
                .and_then(|v| v.to_str().ok()),
            || span_attributes(function, &parts.method),
        );
        let traceparent =
            HeaderValue::from_str(&traceparent).unwrap_or(HeaderValue::from_static(""));
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(&mut parts.headers, peer.ip(), host.as_ref());
        parts.headers.remove(header::HOST);
        // Answered here by hyper as the body is read; not passed on.
        parts.headers.remove(header::EXPECT);
        parts.headers.insert(TRACEPARENT, traceparent.clone());

        let _load = self.load.begin(function);
        let in_flight = self.metrics.begin(function);
        let response = match self.running(function, entry, head_bytes(&parts)).await {
            Ok(entry) => {
                self.forward(function, rest, &parts, body, entry, peer, traceparent)
                    .await
            }
            Err(response) => local(response),
        };
        if let Some(f) = in_flight {
            f.done(response.status().as_u16());
        }
        if let Some(span) = span.as_mut() {
            end_span(
                span,
                response.status(),
                response.headers().get(&CONTAINER_ID),
            );
        }
        response
    }

    /// The function a request is for, the path it sees, and its entry; or
    /// the answer when it is for no function (this frontend's own pages,
    /// 404, 503 before the table loaded). No ZooKeeper here: the current
    /// snapshot decides. Routed by host, the function sees the whole path;
    /// routed by `/invoke/{id}`, it sees what follows the id.
    // The error is the answer itself, made once per request: moving it
    // costs less than boxing it.
    #[allow(clippy::result_large_err)]
    pub(crate) fn resolve<'a>(
        &self,
        host: Option<&str>,
        path: &'a str,
    ) -> Result<(FunctionId, &'a str, Entry), Response<Bytes>> {
        let table = self.table.load();
        let (function, rest) = match host.and_then(|h| table.route(h)) {
            Some(f) => (f, path),
            None => match bismuth_daemon::invoke::target(path) {
                Some(Ok(found)) => found,
                Some(Err(id)) => {
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        format!("{id:?} is not a function id"),
                    ))
                }
                None if path == "/healthz" => return Err(plain(StatusCode::OK, "OK")),
                None if path == "/metrics" => return Err(self.metrics_page()),
                None if path == "/load" => return Err(self.load_page()),
                None if !*self.ready.borrow() => return Err(not_ready()),
                None => {
                    let host = host.unwrap_or("");
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        format!("no function is routed from host {host:?}"),
                    ));
                }
            },
        };
        match table.entry(function) {
            Some(e) => Ok((function, rest, e.clone())),
            None if !*self.ready.borrow() => Err(not_ready()),
            None => Err(error(
                StatusCode::NOT_FOUND,
                format!("function {function} does not exist"),
            )),
        }
    }

    /// The backends to try for a request from `client_hash` (see [`Attempts`]).
    pub(crate) fn attempts(
        &self,
        function: FunctionId,
        client_hash: u64,
        entry: Entry,
    ) -> Attempts<'_> {
        Attempts {
            proxy: self,
            function,
            client_hash,
            order: order(client_hash, &entry),
            entry,
            next: 0,
            tried: 0,
            held_since: tokio::time::Instant::now(),
            retry: self.refused_backoff.retry(),
            hold: None,
        }
    }

    /// The function's entry once it has a Running backend: at once, or
    /// after holding the request while one starts (scale from zero: the
    /// controller is woken); a clear 503 when the hold is full or no
    /// instance ran in time, 404 if the function went meanwhile. A held
    /// request counts `held_bytes` (its head, and its body if read) against
    /// the bound.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn running(
        &self,
        function: FunctionId,
        entry: Entry,
        held_bytes: u64,
    ) -> Result<Entry, Response<Bytes>> {
        if !entry.targets.is_empty() {
            return Ok(entry);
        }
        let no_backend = |waited: Option<Duration>| {
            let waited = waited.map_or(String::new(), |w| {
                format!(" (waited {:.1} s for one to start)", w.as_secs_f64())
            });
            retry_later(format!(
                "function {function} has no running backend{waited}"
            ))
        };
        if self.cold_start_timeout.is_zero() {
            return Err(no_backend(None));
        }
        let Some(_held) = self.load.hold(function, held_bytes) else {
            return Err(retry_later(format!(
                "too many requests are waiting for functions to start ({} at most, {} bytes of headers); retry shortly",
                self.max_held.0, self.max_held.1
            )));
        };
        let _wait = self.metrics.hold();
        let since = tokio::time::Instant::now();
        let deadline = since + self.cold_start_timeout;
        let mut changes = self.ready.clone();
        let mut next_wake = since;
        loop {
            match self.table.load().entry(function) {
                Some(e) if !e.targets.is_empty() => return Ok(e.clone()),
                Some(_) => {}
                None => {
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        format!("function {function} does not exist"),
                    ))
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(no_backend(Some(now - since)));
            }
            if now >= next_wake {
                // Again now and then: a wake-up can be lost with a leader.
                self.waker.wake(function);
                next_wake = now + Duration::from_secs(2);
            }
            let _ = tokio::time::timeout_at(deadline.min(next_wake), changes.changed()).await;
        }
    }

    /// Sends the request to the function's backends (see the module docs).
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        function: FunctionId,
        rest: &str,
        parts: &http::request::Parts,
        body: Incoming,
        entry: Entry,
        peer: SocketAddr,
        traceparent: HeaderValue,
    ) -> Response<ResponseBody> {
        let slot = BodySlot::new(body);
        let (sep, query) = match parts.uri.query() {
            Some(q) => ("?", q),
            None => ("", ""),
        };
        let mut attempts = self.attempts(function, ring::client_hash(peer.ip()), entry);
        while let Some(target) = attempts.next(slot.replayable()).await {
            let _counted = target.begin();
            let addr = SocketAddr::from((target.backend.ip, self.backend_port));
            let head = upstream::Head::new(
                &parts.method,
                format_args!("/invoke/{}{rest}{sep}{query}", target.backend.container_id),
                addr,
                &parts.headers,
                slot.size_hint(),
            );
            let sent = self.client.send(addr, head, slot.attempt());
            match tokio::time::timeout(self.response_timeout, sent).await {
                Ok(Ok(response)) => return respond(response, traceparent, target),
                Ok(Err(e)) if e.is_connect() => refused(function, target, &e),
                Ok(Err(e)) => return local(self.failed(function, target, &e)),
                Err(_) => return local(self.timed_out(function, target)),
            }
        }
        local(unreachable(function))
    }

    /// The client for upstream connections (this thread's pool).
    pub(crate) fn client(&self) -> &upstream::Client {
        &self.client
    }

    /// Where bismuthd listens on a node.
    pub(crate) fn backend_addr(&self, target: &Target) -> SocketAddr {
        SocketAddr::from((target.backend.ip, self.backend_port))
    }

    /// How long a backend may take to answer with a response head.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The tracer, when spans are exported.
    pub(crate) fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// This frontend's request metrics and load.
    pub(crate) fn meters(&self) -> (&FrontendMetrics, &FrontendLoad) {
        (&self.metrics, &self.load)
    }

    /// 502: the request failed at `target` after it was sent.
    pub(crate) fn failed(
        &self,
        function: FunctionId,
        target: &Target,
        e: &upstream::Error,
    ) -> Response<Bytes> {
        debug!(%function, error = ?e, "backend request failed");
        error(
            StatusCode::BAD_GATEWAY,
            format!(
                "backend {} of function {function} failed: {e}",
                target.backend.ip
            ),
        )
    }

    /// 504: `target` sent no response head in time.
    pub(crate) fn timed_out(&self, function: FunctionId, target: &Target) -> Response<Bytes> {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "backend {} of function {function} did not answer within {:?}",
                target.backend.ip, self.response_timeout
            ),
        )
    }
}

/// Logs a backend that refused the connection (the next is tried).
pub(crate) fn refused(function: FunctionId, target: &Target, e: &upstream::Error) {
    warn!(%function, backend = %target.backend.ip, container = %target.backend.container_id,
        error = %e, "backend refused the connection; trying the next");
}

/// 502: no backend took the connection.
pub(crate) fn unreachable(function: FunctionId) -> Response<Bytes> {
    error(
        StatusCode::BAD_GATEWAY,
        format!("no backend of function {function} could be reached"),
    )
}

/// The attributes of a request's span.
pub(crate) fn span_attributes(function: FunctionId, method: &http::Method) -> Vec<KeyValue> {
    vec![
        KeyValue::new("bismuth.function_id", function.to_string()),
        KeyValue::new("http.request.method", method.to_string()),
    ]
}

/// Ends a request's span with its status and the container that served it.
pub(crate) fn end_span(span: &mut otel::Span, status: StatusCode, container: Option<&HeaderValue>) {
    span.status(status.as_u16());
    if let Some(c) = container {
        let c = String::from_utf8_lossy(c.as_bytes()).into_owned();
        span.set(KeyValue::new("bismuth.container_id", c));
    }
}

/// The backends one request tries, in turn: the first [`MAX_ATTEMPTS`] of
/// [`order`]. When all of those refused the connection (usually their
/// bismuthds restart: an upgrade) and the body can be sent again, the same
/// again after a backoff, with the table read anew (a backend may have
/// moved), for up to the refused-hold.
#[derive(Debug)]
pub(crate) struct Attempts<'p> {
    proxy: &'p Proxy,
    function: FunctionId,
    client_hash: u64,
    entry: Entry,
    order: Vec<usize>,
    next: usize,
    tried: usize,
    held_since: tokio::time::Instant,
    retry: bismuth_controller::Retry,
    /// Set once the request is held: its wait is observed when it ends.
    hold: Option<crate::metrics::Held<'p>>,
}

impl Attempts<'_> {
    /// The next backend to try; `None` when there is none (or the body,
    /// already sent once, cannot be sent again: `replayable` false).
    pub(crate) async fn next(&mut self, replayable: bool) -> Option<&Target> {
        if self.tried > 0 && !replayable {
            return None;
        }
        while self.next >= self.order.len().min(MAX_ATTEMPTS) {
            let delay = self.retry.next_delay();
            if self.held_since.elapsed() + delay > self.proxy.refused_hold {
                return None;
            }
            let metrics = &self.proxy.metrics;
            self.hold.get_or_insert_with(|| metrics.hold());
            tokio::time::sleep(delay).await;
            match self.proxy.table.load().entry(self.function) {
                Some(e) if !e.targets.is_empty() => self.entry = e.clone(),
                _ => return None,
            }
            self.order = order(self.client_hash, &self.entry);
            self.next = 0;
        }
        let index = self.order[self.next];
        self.next += 1;
        self.tried += 1;
        self.entry.targets.get(index)
    }
}

/// The order to try a function's backends in: the client's rendezvous
/// ranking, except that when some are at their `concurrency` (counting
/// this frontend's requests), those with room come first and the busy ones
/// after, least loaded first (there the request waits for a slot).
fn order(client_hash: u64, entry: &Entry) -> Vec<usize> {
    let targets = &entry.targets;
    let mut ranked = ring::rank(client_hash, targets.iter().map(|t| t.hash));
    if ranked
        .iter()
        .any(|&i| targets[i].load() >= entry.concurrency)
    {
        // Stable: rank order within those with room.
        ranked.sort_by_key(|&i| {
            let load = targets[i].load();
            if load < entry.concurrency {
                (0, 0)
            } else {
                (1, load)
            }
        });
    }
    ranked
}

/// The size of a request's head (line and headers), for the hold bound.
fn head_bytes(parts: &http::request::Parts) -> u64 {
    let headers: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    (headers + parts.uri.to_string().len() + 16) as u64
}

/// 503 with `Retry-After: 1`.
fn retry_later(message: String) -> Response<Bytes> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A response made here, as hyper sends it.
fn local(response: Response<Bytes>) -> Response<ResponseBody> {
    response.map(|b| Either::Right(Full::new(b)))
}

fn respond(
    response: Response<UpstreamBody>,
    traceparent: HeaderValue,
    target: &Target,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(TRACEPARENT, traceparent);
    if !parts.headers.contains_key(&CONTAINER_ID) {
        if let Ok(v) = HeaderValue::from_str(&target.backend.container_id.to_string()) {
            parts.headers.insert(CONTAINER_ID, v);
        }
    }
    Response::from_parts(parts, Either::Left(body))
}

impl Proxy {
    /// `GET /load` (on a host that is not routed): what the controller's
    /// autoscaler reads.
    fn load_page(&self) -> Response<Bytes> {
        let body = serde_json::to_vec(&self.load.report()).unwrap_or_default();
        typed(
            Bytes::from(body),
            HeaderValue::from_static("application/json"),
        )
    }

    /// `GET /metrics` (on a host that is not routed).
    fn metrics_page(&self) -> Response<Bytes> {
        typed(
            Bytes::from(self.metrics.render()),
            HeaderValue::from_static(bismuth_metrics::CONTENT_TYPE),
        )
    }
}

fn not_ready() -> Response<Bytes> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "routing table not loaded from ZooKeeper yet".into(),
    )
}

/// A JSON error: `{"error": "…"}`.
pub fn error(status: StatusCode, message: String) -> Response<Bytes> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = typed(
        Bytes::from(body),
        HeaderValue::from_static("application/json"),
    );
    *r.status_mut() = status;
    r
}

/// 200 with `body` of `content_type`.
fn typed(body: Bytes, content_type: HeaderValue) -> Response<Bytes> {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(text.as_bytes()));
    *r.status_mut() = status;
    r
}
