//! bismuthfe's byte-level fast path, seen on the wire: pipelined requests,
//! every response framing a backend may use (length, chunked, until close,
//! none), the headers it passes on, and the requests it leaves to hyper
//! (HTTP/1.0, `Expect: 100-continue`, chunked uploads) on the same
//! connection.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bismuth_model::ContainerState::Running;
use http::StatusCode;
use support::{client_from, get, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NODE_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SCRIPTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const WAIT: Duration = Duration::from_secs(15);

/// A response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that reads responses one at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill().await, "the connection closed within a line");
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "the connection closed within a body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response; `bodiless` for a HEAD request's.
    async fn response(&mut self, bodiless: bool) -> Wire {
        let status_line = self.take_line().await;
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.take_line().await;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        let mut wire = Wire {
            status,
            headers,
            body: Vec::new(),
        };
        if bodiless || status == 204 || (100..200).contains(&status) {
            return wire;
        }
        if wire.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = self.take_line().await;
                let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    while !self.take_line().await.is_empty() {}
                    return wire;
                }
                let data = self.take(size).await;
                wire.body.extend_from_slice(&data);
                assert!(self.take_line().await.is_empty());
            }
        }
        match wire.header("content-length") {
            Some(n) => wire.body = self.take(n.parse().unwrap()).await,
            None => {
                while self.fill().await {}
                wire.body = std::mem::take(&mut self.buf);
            }
        }
        wire
    }

    /// Whether the server closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

/// A bismuthd stand-in that answers from a script by path (after
/// `/invoke/{container}`), keeping connections open unless the script
/// closes them: `/chunked`, `/close` (a body until close), `/empty` (204),
/// `/echo-head` (the request head it got as the body); HEAD gets a
/// length and no body.
async fn scripted(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut words = text.split(' ');
                    let method = words.next().unwrap_or("");
                    let target = words.next().unwrap_or("");
                    let path = target.splitn(4, '/').nth(3).unwrap_or("");
                    let reply: Vec<u8> = if method == "HEAD" {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()
                    } else {
                        match path {
                            "chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
                            "close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close".to_vec(),
                            "empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                            _ => [format!("HTTP/1.1 200 OK\r\ntraceparent: backend\r\ncontent-length: {}\r\n\r\n", head.len()).as_bytes(), &head].concat(),
                        }
                    };
                    if s.write_all(&reply).await.is_err() || path == "close" {
                        return;
                    }
                }
            });
        }
    });
}

/// Waits until the function routed from `host` answers.
async fn routed(cluster: &Cluster, host: &str) {
    let client = client_from(Ipv4Addr::LOCALHOST);
    let url = cluster.url("/");
    bismuth_testkit::eventually(&format!("{host} to be routed"), WAIT, || async {
        (get(&client, &url, &[("host", host)]).await.status == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pipelined_requests_get_every_framing_back_in_order() {
    let cluster = Cluster::start().await;
    scripted(SocketAddr::from((SCRIPTED, cluster.backend_port))).await;
    let f = cluster.function(&["wire.test"]).await;
    let cid = cluster.backend(f, SCRIPTED, Running).await;
    routed(&cluster, "wire.test").await;

    let mut c = Conn::open(cluster.fe).await;
    c.send(
        b"GET /chunked HTTP/1.1\r\nHost: wire.test\r\n\r\n\
          HEAD /x HTTP/1.1\r\nHost: wire.test\r\n\r\n\
          GET /empty HTTP/1.1\r\nHost: wire.test\r\n\r\n\
          GET /echo-head?q=1 HTTP/1.1\r\nHost: wire.test\r\nX-Forwarded-For: 1.2.3.4\r\n\
          Connection: keep-alive, x-hop\r\nx-hop: 1\r\nX-Kept: 2\r\nTE: trailers\r\n\r\n",
    )
    .await;
    let chunked = c.response(false).await;
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.body, b"hello world");
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        chunked.header("x-bismuth-container-id"),
        Some(&*cid.to_string())
    );
    assert_eq!(chunked.header("traceparent").map(str::len), Some(55));

    let head = c.response(true).await;
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("5")),
        "a HEAD answer keeps its length and has no body"
    );
    let empty = c.response(false).await;
    assert_eq!(empty.status, 204);

    let echo = c.response(false).await;
    let traces: Vec<_> = echo
        .headers
        .iter()
        .filter(|(n, _)| n == "traceparent")
        .collect();
    assert_eq!(traces.len(), 1, "ours replaces the backend's: {traces:?}");
    assert_ne!(traces[0].1, "backend");
    let sent = String::from_utf8(echo.body).unwrap();
    let lines: Vec<&str> = sent.split("\r\n").collect();
    assert_eq!(
        lines[0],
        format!("GET /invoke/{cid}/echo-head?q=1 HTTP/1.1")
    );
    let port = cluster.backend_port;
    assert!(
        lines.contains(&&*format!("host: {SCRIPTED}:{port}")),
        "{sent}"
    );
    assert!(lines.contains(&"X-Kept: 2"), "{sent}");
    assert!(
        lines.contains(&"x-forwarded-for: 1.2.3.4, 127.0.0.1"),
        "{sent}"
    );
    assert!(lines.contains(&"x-forwarded-host: wire.test"), "{sent}");
    let lower = sent.to_ascii_lowercase();
    for dropped in ["x-hop", "connection", "te:", "content-length"] {
        assert!(!lower.contains(dropped), "{dropped} passed on: {sent}");
    }

    // A body until the backend closes goes on chunked; the client's
    // connection stays.
    c.send(b"GET /close HTTP/1.1\r\nHost: wire.test\r\n\r\n")
        .await;
    let until_close = c.response(false).await;
    assert_eq!(until_close.body, b"until close");
    assert_eq!(until_close.header("transfer-encoding"), Some("chunked"));
    c.send(b"GET /chunked HTTP/1.1\r\nHost: wire.test\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.body, b"hello world");

    // HTTP/1.0 is hyper's to answer, on the same connection; it closes it.
    c.send(b"GET /chunked HTTP/1.0\r\nHost: wire.test\r\n\r\n")
        .await;
    let old = c.response(false).await;
    assert_eq!(old.status, 200);
    assert_eq!(old.body, b"hello world");
    assert!(c.closed().await);

    // The client asking to close gets its answer, then the close.
    let mut c = Conn::open(cluster.fe).await;
    c.send(b"GET /empty HTTP/1.1\r\nHost: wire.test\r\nConnection: close\r\n\r\n")
        .await;
    let last = c.response(false).await;
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn requests_the_fast_path_leaves_are_served_by_hyper() {
    let cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let f = cluster.function(&["count.test"]).await;
    cluster.backend(f, NODE_A, Running).await;
    routed(&cluster, "count.test").await;

    // A small body goes the fast path.
    let mut c = Conn::open(cluster.fe).await;
    c.send(b"POST /count HTTP/1.1\r\nHost: count.test\r\nContent-Length: 10\r\n\r\n0123456789")
        .await;
    assert_eq!(c.response(false).await.body, b"10");

    // Expect: 100-continue is answered before the body is sent.
    c.send(b"POST /count HTTP/1.1\r\nHost: count.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    assert_eq!(c.response(false).await.body, b"5");

    // A chunked upload, then an ordinary request on the same connection.
    let mut c = Conn::open(cluster.fe).await;
    c.send(b"POST /count HTTP/1.1\r\nHost: count.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.body, b"7");
    c.send(b"GET /count HTTP/1.1\r\nHost: count.test\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.body, b"0");

    // Answers made here: health, HEAD of it, a JSON 404.
    let mut c = Conn::open(cluster.fe).await;
    c.send(b"GET /healthz HTTP/1.1\r\nHost: fe\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: fe\r\n\r\nGET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        .await;
    let health = c.response(false).await;
    assert_eq!((health.status, &health.body[..]), (200, &b"OK"[..]));
    assert!(health.header("date").is_some());
    let head = c.response(true).await;
    assert_eq!(head.header("content-length"), Some("2"));
    let missing = c.response(false).await;
    assert_eq!(missing.status, 404);
    let json: serde_json::Value = serde_json::from_slice(&missing.body).unwrap();
    assert!(json["error"].as_str().unwrap().contains("nowhere.test"));
}
