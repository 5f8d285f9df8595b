//! `/logs/{cid}[?tail=N][&follow=true]`: a container's log (its stdout,
//! stderr and bismuthd's own lines about it) as plain text, or with
//! `follow` as Server-Sent Events, one `data:` event per line, new lines as
//! they are written. The log is two files (`log.1`, the rotated-out older
//! half, then `log`; see `logwriter`), read as one stream: the newest
//! `MAX_PLAIN` bytes of it, or its last `tail` lines. A follower goes on
//! across rotations.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc::Sender;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use bismuth_daemon::lines::Lines;

use crate::files::Files;
use crate::node::Node;
use crate::respond::{error, Body, BoxError};

/// How often a followed log is checked for growth.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Reads without `tail` return at most the last this many bytes.
const MAX_PLAIN: u64 = 16 << 20;
/// Read size.
const CHUNK: usize = 64 << 10;

type Chunks = Sender<Result<Frame<Bytes>, BoxError>>;

/// What to send of a log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub follow: bool,
    /// Only the last this many lines.
    pub tail: Option<u64>,
}

impl Query {
    /// `follow=true|1` and `tail=N` from a query string; an error message
    /// for a bad `tail`.
    pub fn parse(query: Option<&str>) -> Result<Query, String> {
        let mut q = Query::default();
        let pairs = query.into_iter().flat_map(|q| q.split('&'));
        for (k, v) in pairs.map(|kv| kv.split_once('=').unwrap_or((kv, ""))) {
            match k {
                "follow" => q.follow = matches!(v, "true" | "1"),
                "tail" => {
                    q.tail = Some(
                        v.parse()
                            .map_err(|_| format!("tail must be a number of lines, not {v:?}"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// One of the log's files, open, with its length when opened.
struct Part {
    file: File,
    len: u64,
}

pub async fn serve(node: &Node, cid: Uuid, query: Query) -> Response<Body> {
    let files = Files::new(&node.cfg.state_dir, &node.cfg.run_dir, cid);
    let path = files.log();
    // The current file first: if it rotates before the older one is
    // opened, both name the same file and the older is left out.
    let Ok(current) = open(&path).await else {
        return error(
            StatusCode::NOT_FOUND,
            format!("container {cid} has no log on this node"),
        );
    };
    let mut parts = Vec::with_capacity(2);
    if let Ok(older) = open(&crate::logwriter::previous(&path)).await {
        let same = match (older.file.metadata().await, current.file.metadata().await) {
            (Ok(a), Ok(b)) => a.ino() == b.ino(),
            _ => true,
        };
        if !same {
            parts.push(older);
        }
    }
    parts.push(current);
    let start = match query.tail {
        Some(n) => match tail_start(&mut parts, n).await {
            Ok(s) => s,
            Err(_) => return unreadable(),
        },
        None => bytes_start(&parts, MAX_PLAIN),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    tokio::spawn(async move {
        let mut out = Out::new(tx, query.follow);
        let _ = send(parts, start, path, &mut out).await;
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
    let h = r.headers_mut();
    if query.follow {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

fn unreadable() -> Response<Body> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot read the log".into(),
    )
}

async fn open(path: &Path) -> std::io::Result<Part> {
    let file = File::open(path).await?;
    let len = file.metadata().await?.len();
    Ok(Part { file, len })
}

/// Where the newest `max` bytes of the parts begin: (part, offset).
fn bytes_start(parts: &[Part], max: u64) -> (usize, u64) {
    let mut keep = max;
    for (i, p) in parts.iter().enumerate().rev() {
        if p.len >= keep {
            return (i, p.len - keep);
        }
        keep -= p.len;
    }
    (0, 0)
}

/// Where the last `n` lines of the parts (read as one stream) begin:
/// (part, offset). A final newline does not start another line.
async fn tail_start(parts: &mut [Part], n: u64) -> std::io::Result<(usize, u64)> {
    if n == 0 {
        let last = parts.len() - 1;
        return Ok((last, parts[last].len));
    }
    let mut newlines = 0u64;
    let mut at_end = true;
    let mut buf = vec![0u8; CHUNK];
    for i in (0..parts.len()).rev() {
        let mut end = parts[i].len;
        while end > 0 {
            let begin = end.saturating_sub(CHUNK as u64);
            let block = &mut buf[..(end - begin) as usize];
            let file = &mut parts[i].file;
            file.seek(std::io::SeekFrom::Start(begin)).await?;
            file.read_exact(block).await?;
            for (k, &b) in block.iter().enumerate().rev() {
                if b != b'\n' {
                    at_end = false;
                    continue;
                }
                if at_end {
                    // The newline ending the last line.
                    at_end = false;
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok((i, begin + k as u64 + 1));
                }
            }
            end = begin;
        }
    }
    Ok((0, 0))
}

/// Where the bytes go: as they are, or as SSE events a line each.
struct Out {
    tx: Chunks,
    events: Option<Lines>,
}

impl Out {
    fn new(tx: Chunks, follow: bool) -> Out {
        Out {
            tx,
            // Lines are bounded: 64 MB without a newline is passed on in pieces.
            events: follow.then(Lines::default),
        }
    }

    /// Sends `data`; false once the client left.
    async fn send(&mut self, data: &[u8]) -> bool {
        let chunk = match &mut self.events {
            None => Bytes::copy_from_slice(data),
            Some(lines) => {
                let mut events = String::new();
                lines.push(data, |line| {
                    events.push_str("data: ");
                    events.push_str(line);
                    events.push_str("\n\n");
                });
                if events.is_empty() {
                    return true;
                }
                Bytes::from(events)
            }
        };
        self.tx.send(Ok(Frame::data(chunk))).await.is_ok()
    }
}

/// Sends the parts from `start` on; a follower then goes on with new
/// lines until the container is gone or the client leaves.
async fn send(
    parts: Vec<Part>,
    start: (usize, u64),
    path: PathBuf,
    out: &mut Out,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let last = parts.len() - 1;
    let mut current = None;
    for (i, mut part) in parts.into_iter().enumerate().skip(start.0) {
        let from = if i == start.0 { start.1 } else { 0 };
        part.file.seek(std::io::SeekFrom::Start(from)).await?;
        // The older part up to its length then; the current one to its end.
        let mut left = if i == last { u64::MAX } else { part.len - from };
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = part.file.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n as u64);
            if !out.send(&buf[..n]).await {
                return Ok(());
            }
        }
        if i == last {
            current = Some(part.file);
        }
    }
    let (Some(mut file), true) = (current, out.events.is_some()) else {
        return Ok(());
    };
    loop {
        let n = file.read(&mut buf).await?;
        if n > 0 {
            if !out.send(&buf[..n]).await {
                return Ok(());
            }
            continue;
        }
        // Caught up. Rotated meanwhile: what is left of the old file was
        // just read, so go on with the new one.
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.ino() != file.metadata().await?.ino() => {
                file = File::open(&path).await?;
                continue;
            }
            Ok(_) => {}
            // The container is gone.
            Err(_) => return Ok(()),
        }
        if out.tx.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(dir: &Path, contents: &[&str]) -> Vec<Part> {
        let mut v = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            let p = dir.join(format!("p{i}"));
            std::fs::write(&p, c).unwrap();
            v.push(open(&p).await.unwrap());
        }
        v
    }

    async fn read_from(parts: Vec<Part>, start: (usize, u64)) -> String {
        let mut s = String::new();
        for (i, mut p) in parts.into_iter().enumerate().skip(start.0) {
            let from = if i == start.0 { start.1 } else { 0 };
            p.file.seek(std::io::SeekFrom::Start(from)).await.unwrap();
            p.file.read_to_string(&mut s).await.unwrap();
        }
        s
    }

    #[tokio::test]
    async fn tail_counts_lines_across_the_rotation_seam() {
        let dir = tempfile::tempdir().unwrap();
        // A line split across the two files, as a rotation may leave it.
        let contents = ["a\nb\nc-fir", "st-half\nd\ne\n"];
        for (n, want) in [
            (0, ""),
            (1, "e\n"),
            (2, "d\ne\n"),
            (3, "c-first-half\nd\ne\n"),
            (5, "a\nb\nc-first-half\nd\ne\n"),
            (50, "a\nb\nc-first-half\nd\ne\n"),
        ] {
            let mut p = parts(dir.path(), &contents).await;
            let start = tail_start(&mut p, n).await.unwrap();
            assert_eq!(read_from(p, start).await, want, "tail={n}");
        }
        // No final newline: the unfinished line is the last one.
        let mut p = parts(dir.path(), &["x\ny\nz"]).await;
        let start = tail_start(&mut p, 2).await.unwrap();
        assert_eq!(read_from(p, start).await, "y\nz");
    }

    #[tokio::test]
    async fn the_newest_bytes_span_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), &["0123456789", "abcde"]).await;
        assert_eq!(bytes_start(&p, 3), (1, 2));
        assert_eq!(bytes_start(&p, 8), (0, 7));
        assert_eq!(bytes_start(&p, 100), (0, 0));
        assert_eq!(read_from(p, (0, 7)).await, "789abcde");
    }

    #[test]
    fn query() {
        assert_eq!(Query::parse(None), Ok(Query::default()));
        assert_eq!(
            Query::parse(Some("follow=true&tail=20")),
            Ok(Query {
                follow: true,
                tail: Some(20)
            })
        );
        assert!(Query::parse(Some("tail=-1")).unwrap_err().contains("tail"));
        assert!(Query::parse(Some("tail=")).is_err());
    }
}
