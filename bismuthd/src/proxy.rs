//! Server mode: the request streamed to the container's port on its /30,
//! the response streamed back, hop-by-hop headers dropped both ways.

use std::time::Duration;

use bismuth_daemon::headers::{self, TRACEPARENT};
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::debug;

use crate::node::Target;
use crate::respond::{error, Body};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Incoming>;

/// A pooled HTTP/1 client for container ports.
pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Proxies `req` to `http://{container ip}:{port}{rest}?{query}`.
pub async fn forward(
    client: &Client,
    target: &Target,
    port: u16,
    req: Request<Incoming>,
    rest: &str,
    traceparent: &str,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("http://{}:{port}{rest}{query}", target.net.container_ip());
    parts.uri = match uri.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad path: {e}")),
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(traceparent) {
        parts.headers.insert(TRACEPARENT, v);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(Into::into).boxed())
        }
        Err(e) => {
            debug!(error = %e, "container did not answer");
            error(
                StatusCode::BAD_GATEWAY,
                format!("the function did not answer on port {port}: {e}"),
            )
        }
    }
}
