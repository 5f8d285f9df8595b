//! bismuthd's fast path seen byte for byte from a client: one kept-alive
//! connection carrying pipelined requests, an `/invoke` into a Server-mode
//! container (a busybox `httpd` CGI script that prints what it received)
//! with the headers passed on and replaced as the design says, requests
//! the fast path hands to the daemon's handlers on the same connection, and
//! an HTTP/1.0 one that hands the connection to hyper.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bismuth_model::{ContainerState, InvokeMode};
use support::{argv, busybox, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const START: Duration = Duration::from_secs(30);

/// A CGI script printing the request as the container saw it.
const ECHO: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\nX-Bismuth-Container-Id: spoofed\r\ntraceparent: fromfn\r\n\r\n'
echo "method=$REQUEST_METHOD query=$QUERY_STRING xff=$HTTP_X_FORWARDED_FOR proto=$HTTP_X_FORWARDED_PROTO fhost=$HTTP_X_FORWARDED_HOST tp=$HTTP_TRACEPARENT xa=$HTTP_X_A secret=[$HTTP_X_SECRET]"
head -c "${CONTENT_LENGTH:-0}"
"#;

#[tokio::test]
async fn pipelined_invokes_and_local_answers_share_one_connection() {
    let host = Host::start().await;
    let script = format!(
        "mkdir -p /tmp/www/cgi-bin && echo hi > /tmp/www/index.html && \
         cat > /tmp/www/cgi-bin/echo <<'EOF'\n{ECHO}EOF\n\
         chmod +x /tmp/www/cgi-bin/echo && exec httpd -f -p 8080 -h /tmp/www"
    );
    let (_, cid) = host
        .deploy(&busybox(InvokeMode::Server(
            argv(&["/bin/sh", "-c", &script]),
            8080,
        )))
        .await;
    host.wait_state(cid, ContainerState::Running, START).await;

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let requests = format!(
        "POST /invoke/{cid}/cgi-bin/echo?q=1 HTTP/1.1\r\nhost: node\r\n\
         x-forwarded-for: 1.1.1.1\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: app.example\r\ntraceparent: 00-{trace}-b7ad6b7169203331-01\r\n\
         x-a: 1\r\nconnection: keep-alive, x-secret\r\nx-secret: s\r\ncontent-length: 5\r\n\r\nhello\
         GET /invoke/{cid}/index.html HTTP/1.1\r\nhost: node\r\n\r\n\
         GET /healthz HTTP/1.1\r\nhost: node\r\n\r\n\
         GET /invoke/{}/ HTTP/1.1\r\nhost: node\r\n\r\n\
         GET /healthz HTTP/1.0\r\n\r\n",
        uuid::Uuid::new_v4()
    );
    let addr = host.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got))
        .await
        .expect("the HTTP/1.0 request ends the connection")
        .unwrap();
    let got = String::from_utf8_lossy(&got);

    // In order: the CGI's answer, the file, health, a 404, health again.
    let at = |needle: &str| {
        got.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {got}"))
    };
    let echo = at("method=POST");
    assert!(echo < at("\r\nhi\n") && at("\r\nhi\n") < at("\"status\":\"ok\""));
    assert!(at("\"status\":\"ok\"") < at("404 Not Found"));
    assert_eq!(got.matches("\"status\":\"ok\"").count(), 2, "{got}");

    let line = got[echo..].lines().next().unwrap();
    assert!(
        line.starts_with("method=POST query=q=1 xff=1.1.1.1 proto=http fhost=app.example"),
        "{line}"
    );
    assert!(line.contains(&format!("tp=00-{trace}-")), "{line}");
    assert!(
        !line.contains("b7ad6b7169203331"),
        "this hop's span id: {line}"
    );
    assert!(line.ends_with("xa=1 secret=[]"), "{line}");
    assert!(got[echo..].contains("hello"), "{got}");

    // The first response's head: bismuthd's container id and trace context,
    // not the function's; its close-delimited body re-chunked.
    let first = &got[..echo];
    let lower = first.to_ascii_lowercase();
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(
        lower.contains(&format!("x-bismuth-container-id: {cid}\r\n")),
        "{first}"
    );
    assert!(
        !lower.contains("spoofed") && !lower.contains("fromfn"),
        "{first}"
    );
    assert!(
        lower.contains(&format!("traceparent: 00-{trace}-")),
        "{first}"
    );
    assert!(lower.contains("transfer-encoding: chunked"), "{first}");
}
