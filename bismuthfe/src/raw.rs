//! bismuthfe's server side for the common request, byte for byte: the
//! request head is parsed in place ([`bismuth_daemon::h1`]) and written to
//! bismuthd from the client's own bytes, and the response head is written
//! to the client as it is parsed, with no `Request`, `Response` or header
//! map built for the request, and the upstream connection kept with the
//! client connection while both last.
//!
//! A request the fast path does not take (see [`bismuth_daemon::h1`]) hands
//! the connection, with the bytes already read, to hyper and
//! [`Proxy::handle`] for the rest of its life. Both paths share routing,
//! the cold-start hold, the order backends are tried in, metrics and spans.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bismuth_daemon::h1::{self, field, status_line, RelayedHead, RequestHead};
use bismuth_daemon::headers::{self, CONTAINER_ID};
use bismuth_daemon::http::Hyper;
use bismuth_daemon::otel;
use bismuth_daemon::rewind::Rewound;
use bismuth_daemon::upstream::wire::{self, BodyFraming, Decoder, RequestFraming};
use bismuth_daemon::upstream::Error as UpstreamError;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::debug;

use crate::proxy::{self, Proxy};
use crate::ring;
use crate::table::Target;

/// How long a connection may take to send a request, or stay idle between
/// requests (hyper's header read timeout, which the other path has).
const IDLE: Duration = Duration::from_secs(30);
/// Response bytes gathered before they are written to the client.
const FLUSH_AT: usize = 64 * 1024;

/// Serves the connection `stream` from `peer` until it ends, or until
/// `shutdown` (after the request in flight).
pub async fn serve(
    proxy: Arc<Proxy>,
    hyper: Hyper,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut conn = Conn::new(proxy, stream, peer, shutdown.clone());
    let end = conn.run().await;
    if let Some(up) = conn.upstream.take() {
        conn.proxy.client().put_idle(up.addr, up.stream);
    }
    if let End::Hyper(why) = end {
        debug!(%peer, %why, "the rest of the connection is served by hyper");
        let Conn {
            proxy,
            client,
            inbuf,
            ..
        } = conn;
        let handler = move |req, peer| {
            let proxy = Arc::clone(&proxy);
            async move { proxy.handle(req, peer).await }
        };
        hyper
            .serve(
                Rewound::new(inbuf.freeze(), client),
                peer,
                handler,
                shutdown,
            )
            .await;
    }
}

/// How a connection's fast path ended.
enum End {
    /// The connection is closed (or to be).
    Closed,
    /// A request needs hyper; the connection goes to it.
    Hyper(h1::Unsupported),
}

/// An upstream connection kept between requests.
struct Upstream {
    addr: SocketAddr,
    stream: TcpStream,
}

/// A client connection and the buffers its requests reuse.
struct Conn {
    proxy: Arc<Proxy>,
    client: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    /// What the client sent and is not answered yet.
    inbuf: BytesMut,
    /// The current request's head, parsed.
    head: RequestHead,
    /// The upstream request's headers and body (the same for every backend).
    fwd: BytesMut,
    /// The upstream request as sent: its line and host, then `fwd`.
    req: BytesMut,
    /// What follows `/invoke/{container}` in the upstream target.
    tail: Vec<u8>,
    upstream: Option<Upstream>,
    /// What the upstream sent and is not relayed yet.
    upbuf: BytesMut,
    /// What is written to the client next.
    out: BytesMut,
    /// Fires [`IDLE`] after `since` (re-armed when it finds the connection
    /// busy since): one timer per connection, not per request.
    idle: Pin<Box<Sleep>>,
    since: Instant,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Conn {
    fn new(
        proxy: Arc<Proxy>,
        client: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Self {
        Conn {
            proxy,
            client,
            peer,
            cancelled: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown,
            inbuf: BytesMut::with_capacity(8 * 1024),
            head: RequestHead::default(),
            fwd: BytesMut::with_capacity(1024),
            req: BytesMut::with_capacity(1024),
            tail: Vec::with_capacity(64),
            upstream: None,
            upbuf: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(4 * 1024),
            idle: Box::pin(tokio::time::sleep(IDLE)),
            since: Instant::now(),
        }
    }

    /// Answers requests until the connection ends or needs hyper.
    async fn run(&mut self) -> End {
        loop {
            loop {
                match self.head.parse(&self.inbuf) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(why) => return End::Hyper(why),
                }
                if !self.read_client(self.inbuf.is_empty()).await {
                    return End::Closed;
                }
            }
            while self.inbuf.len() < self.head.total_len() {
                if !self.read_client(false).await {
                    return End::Closed;
                }
            }
            if !self.answer().await {
                let _ = self.client.shutdown().await;
                return End::Closed;
            }
            self.since = Instant::now();
        }
    }

    /// Reads more of the client's bytes; false when the connection ended,
    /// stayed idle too long, or (`between` requests) the server shuts down.
    async fn read_client(&mut self, between: bool) -> bool {
        if self.inbuf.capacity() - self.inbuf.len() < 1024 {
            self.inbuf.reserve(8 * 1024);
        }
        loop {
            let idle = tokio::select! {
                biased;
                read = self.client.read_buf(&mut self.inbuf) => return matches!(read, Ok(n) if n > 0),
                _ = self.cancelled.as_mut(), if between => return false,
                _ = self.idle.as_mut() => self.since + IDLE,
            };
            if Instant::now() >= idle {
                debug!(peer = %self.peer, "closing an idle connection");
                return false;
            }
            self.idle.as_mut().reset(idle.into());
        }
    }

    /// Answers the request in `head` (its body in `inbuf` as well); false
    /// when the connection is to close.
    async fn answer(&mut self) -> bool {
        let proxy = Arc::clone(&self.proxy);
        let method = self.head.method().clone();
        let total = self.head.total_len();
        let close = self.head.close;
        let buf = &self.inbuf[..];
        let host = self.head.host.clone().map(|r| h1::text(buf, r));
        let path = h1::text(buf, self.head.target.start..self.head.path_end);
        let (function, entry) = match proxy.resolve(host, path) {
            Ok((function, rest, entry)) => {
                self.tail.clear();
                self.tail.extend_from_slice(rest.as_bytes());
                self.tail
                    .extend_from_slice(&buf[self.head.path_end..self.head.target.end]);
                (function, entry)
            }
            Err(early) => {
                self.inbuf.advance(total);
                return self.local(&early, &method, close).await;
            }
        };
        let (mut span, traceparent) = otel::hop(
            proxy.tracer(),
            "bismuthfe invoke",
            self.head.traceparent.clone().map(|r| h1::text(buf, r)),
            || proxy::span_attributes(function, &method),
        );
        forwarded(&self.head, buf, self.peer, &traceparent, &mut self.fwd);
        let body_empty = self.head.content_length == 0;
        self.inbuf.advance(total);

        let (metrics, load) = proxy.meters();
        let _load = load.begin(function);
        let in_flight = metrics.begin(function);
        let (status, keep, container) = match proxy.running(function, entry, total as u64).await {
            Ok(entry) => {
                let mut attempts =
                    proxy.attempts(function, ring::client_hash(self.peer.ip()), entry);
                let mut outcome = None;
                while let Some(target) = attempts.next(true).await {
                    let _counted = target.begin();
                    let addr = proxy.backend_addr(target);
                    self.request_line(&method, target, addr);
                    let sent = self.exchange(addr, &method, body_empty);
                    let failed = match tokio::time::timeout(proxy.response_timeout(), sent).await {
                        Ok(Ok((stream, head))) => {
                            let status = head.status;
                            let container = span.is_some().then(|| match head.container.clone() {
                                Some(c) => String::from_utf8_lossy(&self.upbuf[c]).into_owned(),
                                None => target.backend.container_id.to_string(),
                            });
                            let keep = self
                                .relay(stream, addr, head, &traceparent, target, close)
                                .await;
                            outcome = Some((status, keep, container));
                            break;
                        }
                        Ok(Err(e)) if e.is_connect() => {
                            proxy::refused(function, target, &e);
                            continue;
                        }
                        Ok(Err(e)) => proxy.failed(function, target, &e),
                        Err(_) => proxy.timed_out(function, target),
                    };
                    let keep = self.local(&failed, &method, close).await;
                    outcome = Some((failed.status(), keep, None));
                    break;
                }
                match outcome {
                    Some(o) => o,
                    None => {
                        let failed = proxy::unreachable(function);
                        let keep = self.local(&failed, &method, close).await;
                        (failed.status(), keep, None)
                    }
                }
            }
            Err(early) => {
                let keep = self.local(&early, &method, close).await;
                (early.status(), keep, None)
            }
        };
        if let Some(f) = in_flight {
            f.done(status.as_u16());
        }
        if let Some(span) = span.as_mut() {
            let container = container.and_then(|c| http::HeaderValue::from_str(&c).ok());
            proxy::end_span(span, status, container.as_ref());
        }
        keep
    }

    /// Writes the upstream request for `target` (at `addr`) into `req`.
    fn request_line(&mut self, method: &Method, target: &Target, addr: SocketAddr) {
        let req = &mut self.req;
        req.clear();
        req.extend_from_slice(method.as_str().as_bytes());
        req.extend_from_slice(b" /invoke/");
        let mut id = uuid::Uuid::encode_buffer();
        req.extend_from_slice(
            target
                .backend
                .container_id
                .as_hyphenated()
                .encode_lower(&mut id)
                .as_bytes(),
        );
        req.extend_from_slice(&self.tail);
        req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        headers::push_ip(req, addr.ip());
        req.extend_from_slice(b":");
        headers::push_decimal(req, u64::from(addr.port()));
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(&self.fwd);
    }

    /// Sends `req` to `addr` and reads the response head into `upbuf`: on
    /// the connection kept from the last request when it went to the same
    /// address, else a pooled or new one. A reused connection the upstream
    /// closed meanwhile is replaced by a new one when the request has no
    /// body (as the pooled client does).
    async fn exchange(
        &mut self,
        addr: SocketAddr,
        method: &Method,
        empty: bool,
    ) -> Result<(TcpStream, RelayedHead), UpstreamError> {
        let client = self.proxy.client();
        let (mut stream, mut reused) = match self.upstream.take() {
            // With a body, only if it still looks open: a body is not resent.
            Some(up) if up.addr == addr && (empty || quiet(&up.stream)) => (up.stream, true),
            other => {
                if let Some(up) = other.filter(|up| up.addr != addr) {
                    client.put_idle(up.addr, up.stream);
                }
                match client.take_idle(addr) {
                    Some(s) => (s, true),
                    None => (client.connect(addr).await?, false),
                }
            }
        };
        loop {
            self.upbuf.clear();
            self.out.clear();
            match send(
                &mut stream,
                &self.req,
                &mut self.upbuf,
                &mut self.out,
                method,
            )
            .await
            {
                Ok(head) => return Ok((stream, head)),
                Err(UpstreamError::Closed | UpstreamError::Io(_))
                    if reused && empty && self.upbuf.is_empty() =>
                {
                    stream = client.connect(addr).await?;
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the response whose head is `head` (its status line and
    /// headers already in `out`) to the client, its body streamed from
    /// `up`; keeps `up` for the next request when it can carry one.
    /// Whether the client connection stays open.
    async fn relay(
        &mut self,
        mut up: TcpStream,
        addr: SocketAddr,
        head: RelayedHead,
        traceparent: &str,
        target: &Target,
        close: bool,
    ) -> bool {
        self.upbuf.advance(head.len);
        let close = close || self.shutdown.is_cancelled();
        let out = &mut self.out;
        field(out, b"traceparent", traceparent.as_bytes());
        if head.container.is_none() {
            let mut id = uuid::Uuid::encode_buffer();
            let id = target
                .backend
                .container_id
                .hyphenated()
                .encode_lower(&mut id);
            field(out, CONTAINER_ID.as_str().as_bytes(), id.as_bytes());
        }
        if head.rechunk() {
            field(out, b"transfer-encoding", b"chunked");
        }
        if close {
            field(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        let relayed = match head.framing {
            BodyFraming::Empty => self.flush().await,
            BodyFraming::Length(n) => self.relay_length(&mut up, n).await,
            framing @ (BodyFraming::Chunked | BodyFraming::UntilClose) => {
                self.relay_chunks(&mut up, framing).await
            }
        };
        if relayed && head.reusable && self.upbuf.is_empty() {
            self.upstream = Some(Upstream { addr, stream: up });
        }
        relayed && !close
    }

    /// A body of `n` bytes, as it came.
    async fn relay_length(&mut self, up: &mut TcpStream, n: u64) -> bool {
        let mut left = n;
        let here = left.min(self.upbuf.len() as u64) as usize;
        self.out.extend_from_slice(&self.upbuf[..here]);
        self.upbuf.advance(here);
        left -= here as u64;
        if !self.flush().await {
            return false;
        }
        while left > 0 {
            self.upbuf.clear();
            self.upbuf.reserve(FLUSH_AT);
            match up.read_buf(&mut self.upbuf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let here = left.min(self.upbuf.len() as u64) as usize;
            if self.client.write_all(&self.upbuf[..here]).await.is_err() {
                return false;
            }
            self.upbuf.advance(here);
            left -= here as u64;
        }
        true
    }

    /// A chunked or close-delimited body, decoded and sent on chunked.
    async fn relay_chunks(&mut self, up: &mut TcpStream, framing: BodyFraming) -> bool {
        let mut decoder = Decoder::new(framing);
        loop {
            match decoder.decode(&mut self.upbuf) {
                Err(_) => return false,
                Ok(Some(data)) => {
                    wire::write_chunk(&mut self.out, &data);
                    if self.out.len() >= FLUSH_AT && !self.flush().await {
                        return false;
                    }
                    continue;
                }
                Ok(None) if decoder.is_done() => break,
                Ok(None) => {}
            }
            // What is decoded goes out before waiting for more.
            if !self.out.is_empty() && !self.flush().await {
                return false;
            }
            if self.upbuf.capacity() - self.upbuf.len() < 4096 {
                self.upbuf.reserve(FLUSH_AT);
            }
            match up.read_buf(&mut self.upbuf).await {
                Ok(0) if matches!(decoder, Decoder::UntilClose) => break,
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        self.out.extend_from_slice(wire::LAST_CHUNK);
        self.flush().await
    }

    /// Writes `out` to the client.
    async fn flush(&mut self) -> bool {
        let written = self.client.write_all(&self.out).await.is_ok();
        self.out.clear();
        written
    }

    /// Writes a response made here; whether the connection stays open.
    async fn local(&mut self, response: &Response<Bytes>, method: &Method, close: bool) -> bool {
        let close = close || self.shutdown.is_cancelled();
        let out = &mut self.out;
        out.clear();
        status_line(out, response.status());
        for (name, value) in response.headers() {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        let body = response.body();
        let mut length = Vec::with_capacity(8);
        headers::push_decimal(&mut length, body.len() as u64);
        field(out, b"content-length", &length);
        field(
            out,
            b"date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
        if close {
            field(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        if *method != Method::HEAD {
            out.extend_from_slice(body);
        }
        self.flush().await && !close
    }
}

/// Writes the upstream request's headers and body into `fwd`: the client's
/// headers but those [`h1`] keeps back, then `X-Forwarded-*`, the trace
/// context and the body's length.
fn forwarded(
    head: &RequestHead,
    buf: &[u8],
    peer: SocketAddr,
    traceparent: &str,
    fwd: &mut BytesMut,
) {
    fwd.clear();
    for (name, value) in &head.passed {
        field(fwd, &buf[name.clone()], &buf[value.clone()]);
    }
    fwd.extend_from_slice(b"x-forwarded-for: ");
    for prior in &head.forwarded_for {
        fwd.extend_from_slice(&buf[prior.clone()]);
        fwd.extend_from_slice(b", ");
    }
    headers::push_ip(fwd, peer.ip());
    fwd.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(host) = &head.host {
        field(fwd, b"x-forwarded-host", &buf[host.clone()]);
    }
    field(fwd, b"traceparent", traceparent.as_bytes());
    let length = head.content_length;
    if RequestFraming::for_body(head.method(), Some(length)) != RequestFraming::None {
        fwd.extend_from_slice(b"content-length: ");
        headers::push_decimal(fwd, length);
        fwd.extend_from_slice(b"\r\n");
    }
    fwd.extend_from_slice(b"\r\n");
    fwd.extend_from_slice(&buf[head.len..head.total_len()]);
}

/// Writes `req` to `stream` and reads the response head into `buf`, its
/// status line and the headers to pass on written into `out`.
async fn send(
    stream: &mut TcpStream,
    req: &[u8],
    buf: &mut BytesMut,
    out: &mut BytesMut,
    method: &Method,
) -> Result<RelayedHead, UpstreamError> {
    stream.write_all(req).await?;
    loop {
        if let Some(head) = h1::relay_response_head(buf, method, out)? {
            return Ok(head);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() {
                UpstreamError::Closed
            } else {
                UpstreamError::BadResponse("the connection closed within the response head".into())
            });
        }
    }
}

/// Whether a kept connection is open and quiet (reading would block).
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
