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
use std::sync::Arc;

use bismuth_daemon::h1::{self, field, Conn, Next, RequestHead};
use bismuth_daemon::headers;
use bismuth_daemon::http::Hyper;
use bismuth_daemon::otel;
use bismuth_daemon::rewind::Rewound;
use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body_util::Full;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::proxy::{self, Proxy};
use crate::ring;
use crate::table::Target;

/// Serves the connection `stream` from `peer` until it ends, or until
/// `shutdown` (after the request in flight).
pub async fn serve(
    proxy: Arc<Proxy>,
    hyper: Hyper,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut conn = Conn::new(stream, peer, shutdown.clone(), &["traceparent"]);
    let mut request = Request::default();
    let why = loop {
        match conn.next().await {
            Next::Request => {
                if !request.answer(&proxy, &mut conn).await {
                    conn.shutdown().await;
                    return finish(conn, &proxy);
                }
            }
            Next::Closed => return finish(conn, &proxy),
            Next::Hyper(why) => break why,
        }
    };
    debug!(%peer, %why, "the rest of the connection is served by hyper");
    let (client, unread) = conn.finish(proxy.client());
    let handler = move |req, peer| {
        let proxy = Arc::clone(&proxy);
        async move { proxy.handle(req, peer).await }
    };
    hyper
        .serve(Rewound::new(unread, client), peer, handler, shutdown)
        .await;
}

fn finish(conn: Conn, proxy: &Proxy) {
    conn.finish(proxy.client());
}

/// The buffers a connection's upstream requests reuse.
#[derive(Default)]
struct Request {
    /// The upstream request's headers and body (the same for every backend).
    fwd: BytesMut,
    /// What follows `/invoke/{container}` in the upstream target.
    tail: Vec<u8>,
}

impl Request {
    /// Answers the request in `conn.head` (its body in `conn.buf()` as
    /// well); false when the connection is to close.
    async fn answer(&mut self, proxy: &Proxy, conn: &mut Conn) -> bool {
        let method = conn.head.method().clone();
        let close = conn.head.close;
        let peer = conn.peer();
        let buf = conn.buf();
        let head = &conn.head;
        let host = head.host.clone().map(|r| h1::text(buf, r));
        let path = h1::text(buf, head.target.start..head.path_end);
        let (function, entry) = match proxy.resolve(host, path) {
            Ok((function, rest, entry)) => {
                self.tail.clear();
                self.tail.extend_from_slice(rest.as_bytes());
                self.tail
                    .extend_from_slice(&buf[head.path_end..head.target.end]);
                (function, entry)
            }
            Err(early) => {
                conn.consume();
                return local(conn, early, &method, close).await.1;
            }
        };
        let (mut span, traceparent) = otel::hop(
            proxy.tracer(),
            "bismuthfe invoke",
            head.traceparent.clone().map(|r| h1::text(buf, r)),
            || proxy::span_attributes(function, &method),
        );
        forwarded(head, buf, peer, &traceparent, &mut self.fwd);
        let body_empty = head.content_length == 0;
        let total = head.total_len() as u64;
        conn.consume();

        let (metrics, load) = proxy.meters();
        let _load = load.begin(function);
        let in_flight = metrics.begin(function);
        let (status, keep, container) = match proxy.running(function, entry, total).await {
            Ok(entry) => {
                let mut attempts = proxy.attempts(function, ring::client_hash(peer.ip()), entry);
                let mut outcome = None;
                while let Some(target) = attempts.next(true).await {
                    let _counted = target.begin();
                    let addr = proxy.backend_addr(target);
                    self.request_line(&mut conn.req, &method, target, addr);
                    let sent = conn.exchange(proxy.client(), addr, &method, body_empty);
                    let failed = match tokio::time::timeout(proxy.response_timeout(), sent).await {
                        Ok(Ok((stream, head))) => {
                            let status = head.status;
                            let container = span.is_some().then(|| match head.container.clone() {
                                Some(c) => {
                                    String::from_utf8_lossy(&conn.upstream_buf()[c]).into_owned()
                                }
                                None => target.backend.container_id.to_string(),
                            });
                            let has_container = head.container.is_some();
                            let keep = conn
                                .relay(stream, addr, head, close, |out| {
                                    response_fields(out, &traceparent, target, has_container)
                                })
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
                    let (status, keep) = local(conn, failed, &method, close).await;
                    outcome = Some((status, keep, None));
                    break;
                }
                match outcome {
                    Some(o) => o,
                    None => {
                        let (status, keep) =
                            local(conn, proxy::unreachable(function), &method, close).await;
                        (status, keep, None)
                    }
                }
            }
            Err(early) => {
                let (status, keep) = local(conn, early, &method, close).await;
                (status, keep, None)
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
    fn request_line(&self, req: &mut BytesMut, method: &Method, target: &Target, addr: SocketAddr) {
        let mut id = uuid::Uuid::encode_buffer();
        let id = target
            .backend
            .container_id
            .as_hyphenated()
            .encode_lower(&mut id);
        h1::request_start(req, method, &[b"/invoke/", id.as_bytes(), &self.tail], addr);
        req.extend_from_slice(&self.fwd);
    }
}

/// The headers bismuthfe adds to a relayed response: its trace context,
/// and the container that answered when bismuthd did not say.
fn response_fields(out: &mut BytesMut, traceparent: &str, target: &Target, has_container: bool) {
    field(out, b"traceparent", traceparent.as_bytes());
    if !has_container {
        h1::container_field(out, target.backend.container_id);
    }
}

/// Writes a response made here; its status, and whether the connection
/// stays open.
async fn local(
    conn: &mut Conn,
    response: Response<Bytes>,
    method: &Method,
    close: bool,
) -> (http::StatusCode, bool) {
    let status = response.status();
    (
        status,
        conn.respond(response.map(Full::new), method, close).await,
    )
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
    head.write_passed(buf, fwd);
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
    head.write_body(buf, fwd);
}
