//! `/logs/{cid}`: a container's log file (its stdout, stderr and bismuthd's
//! own lines about it) as plain text, or with `?follow=true` as Server-Sent
//! Events, one `data:` event per line, new lines as they are written.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use bismuth_daemon::lines::Lines;

use crate::files::Files;
use crate::node::Node;
use crate::respond::{error, Body, BoxError};

/// How often a followed log is checked for growth.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Plain reads return at most the last this many bytes.
const MAX_PLAIN: u64 = 16 << 20;

pub async fn serve(node: &Node, cid: Uuid, follow: bool) -> Response<Body> {
    let files = Files::new(&node.cfg.state_dir, &node.cfg.run_dir, cid);
    let path = files.log();
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("container {cid} has no log on this node"),
            )
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    if !follow {
        // The newest MAX_PLAIN bytes, streamed in chunks (never all held).
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if file
            .seek(std::io::SeekFrom::Start(len.saturating_sub(MAX_PLAIN)))
            .await
            .is_err()
        {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the log".into(),
            );
        }
        tokio::spawn(async move {
            let mut left = MAX_PLAIN;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                match file.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let n = n.min(left as usize);
                        left -= n as u64;
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return r;
    }

    tokio::spawn(async move {
        // Lines are bounded: 64 MB without a newline is passed on in pieces.
        let mut lines = Lines::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => {
                    // Caught up: stop when the container is gone or the client left.
                    if !path.exists() || tx.is_closed() {
                        break;
                    }
                    tokio::time::sleep(FOLLOW_INTERVAL).await;
                }
                Ok(n) => {
                    let mut events = String::new();
                    lines.push(&buf[..n], |line| {
                        events.push_str("data: ");
                        events.push_str(line);
                        events.push_str("\n\n");
                    });
                    if !events.is_empty()
                        && tx.send(Ok(Frame::data(Bytes::from(events)))).await.is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
