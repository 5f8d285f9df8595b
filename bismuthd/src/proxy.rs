//! Server mode: the request streamed to the container's port on its /30,
//! the response streamed back, hop-by-hop headers dropped both ways.

use std::net::SocketAddr;
use std::time::Duration;

use bismuth_daemon::headers;
use bismuth_daemon::upstream;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::debug;

use crate::node::Target;
use crate::respond::{error, Body};

pub type Client = upstream::Client;

/// A pooled HTTP/1 client for container ports (servers that close every
/// connection, like busybox `httpd`, simply get a new one each time).
pub fn client() -> Client {
    upstream::Client::new(upstream::Config {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        ..upstream::Config::default()
    })
}

/// Proxies `req` (its `traceparent` already this hop's) to
/// `http://{container ip}:{port}{rest}?{query}`.
pub async fn forward<B>(
    client: &Client,
    target: &Target,
    port: u16,
    req: Request<B>,
    rest: &str,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<crate::respond::BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let (sep, query) = match parts.uri.query() {
        Some(q) => ("?", q),
        None => ("", ""),
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    let addr = SocketAddr::from((target.net.container_ip(), port));
    let head = upstream::Head::new(
        &parts.method,
        format_args!("{rest}{sep}{query}"),
        addr,
        &parts.headers,
        &http_body::Body::size_hint(&body),
    );
    match client.send(addr, head, body).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(Into::into).boxed())
        }
        Err(e) => unanswered(port, &e),
    }
}

/// The answer when the container did not answer on `port`.
pub fn unanswered(port: u16, e: &upstream::Error) -> Response<Body> {
    debug!(error = %e, "container did not answer");
    error(
        StatusCode::BAD_GATEWAY,
        format!("the function did not answer on port {port}: {e}"),
    )
}
