//! bismuthd's HTTP interface on `{node ip}:8001`: `/invoke/{cid}[/path]`
//! into a Running container (Server: proxied; Executable: one process per
//! request), `/logs/{cid}[?follow=true]`, and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use bismuth_daemon::headers::{CONTAINER_ID, TRACEPARENT};
use bismuth_daemon::trace;
use bismuth_model::{ContainerState, InvokeMode};
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::node::Node;
use crate::respond::{error, json, Body};
use crate::{exec, logs, proxy};

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
    pub async fn handle(self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return self.healthz();
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
            let follow = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "follow=true" || kv == "follow=1")
            });
            return logs::serve(&self.node, cid, follow).await;
        }
        error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
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

    async fn invoke(&self, cid: uuid::Uuid, rest: &str, req: Request<Incoming>) -> Response<Body> {
        let Some(h) = self.node.get(cid) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("container {cid} does not run on this node"),
            );
        };
        let Some(target) = h.running_target() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("container {cid} is {:?}, not Running", h.state()),
            );
        };
        let traceparent =
            trace::next_traceparent(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
        let mut resp = match &target.def.invoke_mode {
            InvokeMode::Server(_, port) => {
                proxy::forward(&self.client, &target, *port, req, rest, &traceparent).await
            }
            InvokeMode::Executable(_) => {
                exec::run(&h, &target, req, rest, self.node.cfg.exec_timeout).await
            }
        };
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&cid.to_string()) {
            headers.insert(CONTAINER_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT, v);
        }
        resp
    }
}
