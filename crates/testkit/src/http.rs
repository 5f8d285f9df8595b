//! A small HTTP/1.1 client for tests: whole replies ([`request`]) and
//! streamed bodies read line by line ([`Stream`], for Server-Sent Events).

use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long a request may take before the test gives up on it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A whole reply.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<http::Response<Incoming>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method.clone()).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body))?;
    tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| anyhow!("{method} {url}: no response within {TIMEOUT:?}"))?
        .with_context(|| format!("{method} {url}"))
}

/// Sends one request and reads the whole reply.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Reply> {
    let resp = send(method.clone(), url, headers, body.into()).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| anyhow!("{method} {url}: body not complete within {TIMEOUT:?}"))?
        .with_context(|| format!("{method} {url}: reading the body"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// `GET url` with no headers.
pub async fn get(url: &str) -> anyhow::Result<Reply> {
    request(Method::GET, url, &[], Bytes::new()).await
}

/// A response whose body is read as it arrives.
#[derive(Debug)]
pub struct Stream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    pending: Vec<u8>,
}

impl Stream {
    /// `GET url`, returning once the headers are in.
    pub async fn get(url: &str) -> anyhow::Result<Stream> {
        let resp = send(Method::GET, url, &[], Bytes::new()).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        Ok(Stream {
            status,
            headers,
            body: resp.into_body(),
            pending: Vec::new(),
        })
    }

    /// The next line of the body (without its newline); `None` at the end.
    pub async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..i])
                        .trim_end_matches('\r')
                        .to_owned(),
                ));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    let rest = String::from_utf8_lossy(&self.pending).into_owned();
                    self.pending.clear();
                    return Ok(Some(rest));
                }
            }
        }
    }

    /// Reads lines until one contains `needle`, failing after `timeout`.
    pub async fn line_containing(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        tokio::time::timeout(timeout, async {
            while let Some(line) = self.next_line().await? {
                if line.contains(needle) {
                    return Ok(line);
                }
            }
            Err(anyhow!("stream ended before a line containing {needle:?}"))
        })
        .await
        .map_err(|_| anyhow!("no line containing {needle:?} within {timeout:?}"))?
    }
}
