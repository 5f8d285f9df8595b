//! bismuthd's server side for the common request, byte for byte, as
//! bismuthfe's: an `/invoke` of a Server-mode container is written to the
//! container from the client's own bytes and its response relayed as it is
//! parsed, on a connection to the container kept with the client's while
//! both last ([`bismuth_daemon::h1::Conn`]). Every other whole request
//! (Executable mode, `/logs`, `/metrics`, …) is answered by
//! [`Server::handle`] on the same connection; one the fast path does not
//! parse hands the connection to hyper for the rest of its life.

use std::net::SocketAddr;
use std::sync::Arc;

use bismuth_daemon::h1::{self, field, Conn, Next, RequestHead};
use bismuth_daemon::http::Hyper;
use bismuth_daemon::rewind::Rewound;
use bismuth_model::InvokeMode;
use bytes::BytesMut;
use http::StatusCode;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::http::Server;
use crate::node::Handle;
use crate::respond::error;

/// Response headers of the container's that bismuthd sets itself.
const OWN: &[&str] = &["traceparent", "x-bismuth-container-id"];

/// Serves the connection `stream` from `peer` until it ends, or until
/// `shutdown` (after the request in flight).
pub async fn serve(
    server: Server,
    hyper: Hyper,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut conn = Conn::new(stream, peer, shutdown.clone(), OWN);
    let why = loop {
        match conn.next().await {
            Next::Request => {
                if !answer(&server, &mut conn).await {
                    conn.shutdown().await;
                    conn.finish(&server.client);
                    return;
                }
            }
            Next::Closed => {
                conn.finish(&server.client);
                return;
            }
            Next::Hyper(why) => break why,
        }
    };
    debug!(%peer, %why, "the rest of the connection is served by hyper");
    let (client, unread) = conn.finish(&server.client);
    let handler = move |req, peer| server.clone().handle(req, peer);
    hyper
        .serve(Rewound::new(unread, client), peer, handler, shutdown)
        .await;
}

/// Answers the request in `conn.head`; false when the connection is to
/// close.
async fn answer(server: &Server, conn: &mut Conn) -> bool {
    let method = conn.head.method().clone();
    let close = conn.head.close;
    let (head, buf, req) = conn.split();
    let path = h1::text(buf, head.target.start..head.path_end);
    let Some((h, port, rest)) = server_invoke(server, path) else {
        let response = match conn.request() {
            Ok(req) => {
                conn.consume();
                server.clone().handle(req, conn.peer()).await
            }
            Err(e) => {
                conn.consume();
                error(StatusCode::BAD_REQUEST, format!("a bad request: {e}"))
            }
        };
        return conn.respond(response, &method, close).await;
    };
    let cid = h.cid;
    let incoming = head.traceparent.clone().map(|r| h1::text(buf, r));
    let mut call = match server.begin(h, &method, incoming).await {
        Ok(call) => call,
        Err(early) => {
            conn.consume();
            return conn.respond(early, &method, close).await;
        }
    };
    let addr = SocketAddr::from((call.target.net.container_ip(), port));
    container_request(head, buf, rest, addr, &call.traceparent, req);
    let empty = head.content_length == 0;
    conn.consume();
    match conn.exchange(&server.client, addr, &method, empty).await {
        Ok((stream, head)) => {
            server.finish(&mut call, head.status);
            let traceparent = call.traceparent.as_bytes();
            conn.relay(stream, addr, head, close, |out| {
                h1::container_field(out, cid);
                field(out, b"traceparent", traceparent);
            })
            .await
        }
        Err(e) => {
            let response = crate::proxy::unanswered(port, &e);
            server.finish(&mut call, response.status());
            conn.respond(response, &method, close).await
        }
    }
}

/// The container, its port and the path after `/invoke/{cid}` when `path`
/// is an `/invoke` of a Server-mode container here (whether it runs,
/// [`Server::begin`] says).
fn server_invoke<'p>(server: &Server, path: &'p str) -> Option<(Arc<Handle>, u16, &'p str)> {
    let (cid, rest) = bismuth_daemon::invoke::target(path)?.ok()?;
    let h = server.node.get(cid)?;
    match h.target.get()?.def.invoke_mode {
        InvokeMode::Server(_, port) => Some((h, port, rest)),
        InvokeMode::Executable(_) => None,
    }
}

/// Writes the request for the container at `addr` into `req`: `rest` (the
/// path after `/invoke/{cid}`) with the query, the client's headers but
/// those [`h1`] keeps back, the `X-Forwarded-*` headers as they came, this
/// hop's trace context, and the body.
fn container_request(
    head: &RequestHead,
    buf: &[u8],
    rest: &str,
    addr: SocketAddr,
    traceparent: &str,
    req: &mut BytesMut,
) {
    let query = &buf[head.path_end..head.target.end];
    h1::request_start(req, head.method(), &[rest.as_bytes(), query], addr);
    head.write_passed(buf, req);
    if !head.forwarded_for.is_empty() {
        req.extend_from_slice(b"x-forwarded-for: ");
        for (i, prior) in head.forwarded_for.iter().enumerate() {
            if i > 0 {
                req.extend_from_slice(b", ");
            }
            req.extend_from_slice(&buf[prior.clone()]);
        }
        req.extend_from_slice(b"\r\n");
    }
    if let Some(proto) = &head.forwarded_proto {
        field(req, b"x-forwarded-proto", &buf[proto.clone()]);
    }
    if let Some(host) = &head.forwarded_host {
        field(req, b"x-forwarded-host", &buf[host.clone()]);
    }
    field(req, b"traceparent", traceparent.as_bytes());
    head.write_body(buf, req);
}
