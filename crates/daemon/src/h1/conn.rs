//! One client connection on a proxy's fast path, and the buffers its
//! requests reuse: reading whole requests ([`Conn::next`]), exchanging one
//! with an upstream on a connection kept from the last request
//! ([`Conn::exchange`]), relaying the response byte for byte
//! ([`Conn::relay`]), and writing a response made here ([`Conn::respond`]).
//! What a request means (where it goes, what is counted) is the caller's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::debug;

use super::{field, relay_response_head, status_line, RelayedHead, RequestHead, Unsupported};
use crate::upstream::wire::{self, BodyFraming, Decoder};
use crate::upstream::{Client, Error};

/// How long a connection may take to send a request, or stay idle between
/// requests (hyper's header read timeout, which the other path has).
pub const IDLE: Duration = Duration::from_secs(30);
/// Response bytes gathered before they are written to the client.
const FLUSH_AT: usize = 64 * 1024;
/// Bodies of a length up to this are relayed in one write with their head.
const COALESCE: usize = 16 * 1024;
/// Bytes of the client's next requests read while a response streams.
const READ_AHEAD: usize = super::MAX_HEAD + super::MAX_BODY as usize;
/// Response headers [`Conn::respond`] sets itself.
const FRAMING: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "date",
];

/// What [`Conn::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A whole request: its head in [`Conn::head`], head and body at the
    /// start of [`Conn::buf`].
    Request,
    /// The connection ended, stayed idle too long, or the server shuts down.
    Closed,
    /// A request the fast path does not take: the connection goes to hyper
    /// ([`Conn::finish`] gives back what it needs).
    Hyper(Unsupported),
}

/// An upstream connection kept between requests.
#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    stream: TcpStream,
}

/// A client connection on the fast path.
#[derive(Debug)]
pub struct Conn {
    client: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    /// Response headers the caller sets itself (not relayed).
    own: &'static [&'static str],
    /// What the client sent and is not answered yet.
    inbuf: BytesMut,
    /// The current request's head, parsed.
    pub head: RequestHead,
    /// The upstream request as [`Conn::exchange`] sends it; the caller
    /// writes it.
    pub req: BytesMut,
    upstream: Option<Upstream>,
    /// What the upstream sent and is not relayed yet.
    upbuf: BytesMut,
    /// What is written to the client next.
    out: BytesMut,
    /// Fires [`IDLE`] after `since` (re-armed when it finds the connection
    /// busy since): one timer per connection, not per request.
    idle: Pin<Box<Sleep>>,
    since: Instant,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Conn {
    /// Serves `client` (from `peer`) until `shutdown`; the upstream's
    /// response headers named in `own` (lower case) are not relayed, the
    /// caller sets them.
    pub fn new(
        client: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        own: &'static [&'static str],
    ) -> Self {
        Conn {
            client,
            peer,
            own,
            cancelled: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown,
            inbuf: BytesMut::with_capacity(8 * 1024),
            head: RequestHead::default(),
            req: BytesMut::with_capacity(1024),
            upstream: None,
            upbuf: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(4 * 1024),
            idle: Box::pin(tokio::time::sleep(IDLE)),
            since: Instant::now(),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client's bytes not answered yet: the current request (head and
    /// body) first.
    pub fn buf(&self) -> &[u8] {
        &self.inbuf
    }

    /// The upstream's bytes read by [`Conn::exchange`]: the response head
    /// (where [`RelayedHead::container`] points) first.
    pub fn upstream_buf(&self) -> &[u8] {
        &self.upbuf
    }

    /// Whether the server shuts down (the connection closes after this
    /// response).
    pub fn closing(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Waits for the next whole request (the first, or the one after the
    /// request [`Conn::consume`]d last).
    pub async fn next(&mut self) -> Next {
        self.since = Instant::now();
        loop {
            match self.head.parse(&self.inbuf) {
                Ok(true) => break,
                Ok(false) => {}
                Err(why) => return Next::Hyper(why),
            }
            if !self.read_client(self.inbuf.is_empty()).await {
                return Next::Closed;
            }
        }
        while self.inbuf.len() < self.head.total_len() {
            if !self.read_client(false).await {
                return Next::Closed;
            }
        }
        Next::Request
    }

    /// The current request's head and bytes, and the upstream request to
    /// write from them.
    pub fn split(&mut self) -> (&RequestHead, &[u8], &mut BytesMut) {
        (&self.head, &self.inbuf, &mut self.req)
    }

    /// Drops the current request's bytes from [`Conn::buf`] (once what is
    /// needed of them is copied).
    pub fn consume(&mut self) {
        self.inbuf.advance(self.head.total_len());
    }

    /// The current request as an `http::Request` with its body, for a
    /// handler written for hyper's requests.
    pub fn request(&self) -> Result<http::Request<http_body_util::Full<Bytes>>, http::Error> {
        let buf = &self.inbuf[..];
        let mut slots = [httparse::EMPTY_HEADER; super::MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut slots);
        // Parsed whole once already, so this parse succeeds the same way.
        let _ = parsed.parse(buf);
        let mut req = http::Request::builder()
            .method(self.head.method().clone())
            .uri(super::text(buf, self.head.target.clone()));
        for h in parsed.headers.iter() {
            req = req.header(h.name, h.value);
        }
        let body = Bytes::copy_from_slice(&buf[self.head.len..self.head.total_len()]);
        req.body(http_body_util::Full::new(body))
    }

    /// Reads more of the client's bytes; false when the connection ended,
    /// stayed idle too long, or (`between` requests) the server shuts down.
    async fn read_client(&mut self, between: bool) -> bool {
        if self.inbuf.capacity() - self.inbuf.len() < 1024 {
            self.inbuf.reserve(8 * 1024);
        }
        loop {
            let idle = tokio::select! {
                biased;
                read = self.client.read_buf(&mut self.inbuf) => return matches!(read, Ok(n) if n > 0),
                _ = self.cancelled.as_mut(), if between => return false,
                _ = self.idle.as_mut() => self.since + IDLE,
            };
            if Instant::now() >= idle {
                debug!(peer = %self.peer, "closing an idle connection");
                return false;
            }
            self.idle.as_mut().reset(idle.into());
        }
    }

    /// Sends [`Conn::req`] to `addr` and reads the response head, its
    /// status line and the headers to pass on written for the client: on
    /// the connection kept from the last request when it went to the same
    /// address, else one from `pool` or a new one. A reused connection the
    /// upstream closed meanwhile is replaced by a new one when the request
    /// has no body (`empty`), as the pooled client does.
    pub async fn exchange(
        &mut self,
        pool: &Client,
        addr: SocketAddr,
        method: &Method,
        empty: bool,
    ) -> Result<(TcpStream, RelayedHead), Error> {
        let (mut stream, mut reused) = match self.upstream.take() {
            // With a body, only if it still looks open: a body is not resent.
            Some(up) if up.addr == addr && (empty || quiet(&up.stream)) => (up.stream, true),
            other => {
                if let Some(up) = other.filter(|up| up.addr != addr) {
                    pool.put_idle(up.addr, up.stream);
                }
                match pool.take_idle(addr) {
                    Some(s) => (s, true),
                    None => (pool.connect(addr).await?, false),
                }
            }
        };
        loop {
            self.upbuf.clear();
            self.out.clear();
            match send(
                &mut stream,
                &self.req,
                &mut self.upbuf,
                &mut self.out,
                method,
                self.own,
            )
            .await
            {
                Ok(head) => return Ok((stream, head)),
                Err(Error::Closed | Error::Io(_)) if reused && empty && self.upbuf.is_empty() => {
                    stream = pool.connect(addr).await?;
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the response whose head [`Conn::exchange`] read to the
    /// client: its status line and headers, then what `add` writes (header
    /// lines), then its body streamed from `up`; keeps `up` for the next
    /// request when it can carry one. Whether the client connection stays
    /// open (not when `close`).
    pub async fn relay(
        &mut self,
        mut up: TcpStream,
        addr: SocketAddr,
        head: RelayedHead,
        close: bool,
        add: impl FnOnce(&mut BytesMut),
    ) -> bool {
        self.upbuf.advance(head.len);
        let close = close || self.closing();
        add(&mut self.out);
        if head.rechunk() {
            field(&mut self.out, b"transfer-encoding", b"chunked");
        }
        if close {
            field(&mut self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        let relayed = match head.framing {
            BodyFraming::Empty => self.flush().await,
            BodyFraming::Length(n) => self.relay_length(&mut up, n).await,
            framing @ (BodyFraming::Chunked | BodyFraming::UntilClose) => {
                self.relay_chunks(&mut up, framing).await
            }
        };
        if relayed && head.reusable && self.upbuf.is_empty() {
            self.upstream = Some(Upstream { addr, stream: up });
        }
        relayed && !close
    }

    /// A body of `n` bytes, as it came. One of at most [`COALESCE`] bytes
    /// is read whole before anything is written, so that the head and the
    /// body go to the client in one write (servers such as busybox `httpd`
    /// write them apart): one wake-up and one read less on the client's
    /// side. Should the upstream fail before it is whole, the client sees
    /// the connection close with no response.
    async fn relay_length(&mut self, up: &mut TcpStream, n: u64) -> bool {
        if n <= COALESCE as u64 {
            while (self.upbuf.len() as u64) < n {
                self.upbuf.reserve(n as usize - self.upbuf.len());
                match up.read_buf(&mut self.upbuf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
        }
        let mut left = n;
        let here = left.min(self.upbuf.len() as u64) as usize;
        self.out.extend_from_slice(&self.upbuf[..here]);
        self.upbuf.advance(here);
        left -= here as u64;
        if !self.flush().await {
            return false;
        }
        while left > 0 {
            self.upbuf.clear();
            self.upbuf.reserve(FLUSH_AT);
            match up.read_buf(&mut self.upbuf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let here = left.min(self.upbuf.len() as u64) as usize;
            if self.client.write_all(&self.upbuf[..here]).await.is_err() {
                return false;
            }
            self.upbuf.advance(here);
            left -= here as u64;
        }
        true
    }

    /// A chunked or close-delimited body, decoded and sent on chunked.
    async fn relay_chunks(&mut self, up: &mut TcpStream, framing: BodyFraming) -> bool {
        let mut decoder = Decoder::new(framing);
        loop {
            match decoder.decode(&mut self.upbuf) {
                Err(_) => return false,
                Ok(Some(data)) => {
                    wire::write_chunk(&mut self.out, &data);
                    if self.out.len() >= FLUSH_AT && !self.flush().await {
                        return false;
                    }
                    continue;
                }
                Ok(None) if decoder.is_done() => break,
                Ok(None) => {}
            }
            // What is decoded goes out before waiting for more.
            if !self.out.is_empty() && !self.flush().await {
                return false;
            }
            if self.upbuf.capacity() - self.upbuf.len() < 4096 {
                self.upbuf.reserve(FLUSH_AT);
            }
            match up.read_buf(&mut self.upbuf).await {
                Ok(0) if matches!(decoder, Decoder::UntilClose) => break,
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        self.out.extend_from_slice(wire::LAST_CHUNK);
        self.flush().await
    }

    /// Writes `out` to the client.
    async fn flush(&mut self) -> bool {
        let written = self.client.write_all(&self.out).await.is_ok();
        self.out.clear();
        written
    }

    /// Writes a response made here to the request with `method`, its body
    /// streamed as it comes (with a `Content-Length` when its size is
    /// known, else chunked); whether the connection stays open (not when
    /// `close`, nor when the body fails: the client then sees it cut off).
    /// While the body waits, the client's next bytes are read on, so that
    /// a client gone away ends a long stream (a followed log).
    pub async fn respond<B>(&mut self, response: Response<B>, method: &Method, close: bool) -> bool
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let close = close || self.closing();
        let status = response.status();
        let (parts, mut body) = response.into_parts();
        let out = &mut self.out;
        out.clear();
        status_line(out, status);
        for (name, value) in &parts.headers {
            if !FRAMING.contains(&name.as_str()) {
                field(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        field(
            out,
            b"date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
        if close {
            field(out, b"connection", b"close");
        }
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let length = body.size_hint().exact();
        let chunked = !bodiless && length.is_none();
        if bodiless {
        } else if let Some(n) = length {
            out.extend_from_slice(b"content-length: ");
            crate::headers::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        } else if *method != Method::HEAD {
            field(out, b"transfer-encoding", b"chunked");
        }
        out.extend_from_slice(b"\r\n");
        if bodiless || *method == Method::HEAD {
            return self.flush().await && !close;
        }
        loop {
            let frame = {
                let mut next = std::pin::pin!(body.frame());
                match std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                    // What is ready goes out together.
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if !self.out.is_empty() && !self.flush().await {
                            return false;
                        }
                        loop {
                            let room = self.inbuf.len() < READ_AHEAD;
                            tokio::select! {
                                frame = next.as_mut() => break frame,
                                read = self.client.read_buf(&mut self.inbuf), if room => {
                                    if !matches!(read, Ok(n) if n > 0) {
                                        return false;
                                    }
                                }
                            }
                        }
                    }
                }
            };
            match frame {
                None => break,
                Some(Err(_)) => {
                    let _ = self.flush().await;
                    return false;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if chunked {
                        wire::write_chunk(&mut self.out, &data);
                    } else {
                        self.out.extend_from_slice(&data);
                    }
                    if self.out.len() >= FLUSH_AT && !self.flush().await {
                        return false;
                    }
                }
            }
        }
        if chunked {
            self.out.extend_from_slice(wire::LAST_CHUNK);
        }
        self.flush().await && !close
    }

    /// Ends the fast path: a kept upstream connection goes back to `pool`;
    /// the client connection and the bytes read from it not answered yet
    /// are for hyper to go on with.
    pub fn finish(mut self, pool: &Client) -> (TcpStream, Bytes) {
        if let Some(up) = self.upstream.take() {
            pool.put_idle(up.addr, up.stream);
        }
        (self.client, self.inbuf.freeze())
    }

    /// Closes the client connection (after the last response).
    pub async fn shutdown(&mut self) {
        let _ = self.client.shutdown().await;
    }
}

/// Writes `req` to `stream` and reads the response head into `buf`, its
/// status line and the headers to pass on written into `out`.
async fn send(
    stream: &mut TcpStream,
    req: &[u8],
    buf: &mut BytesMut,
    out: &mut BytesMut,
    method: &Method,
    own: &[&str],
) -> Result<RelayedHead, Error> {
    stream.write_all(req).await?;
    loop {
        if let Some(head) = relay_response_head(buf, method, own, out)? {
            return Ok(head);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() {
                Error::Closed
            } else {
                Error::BadResponse("the connection closed within the response head".into())
            });
        }
    }
}

/// Whether a kept connection is open and quiet (reading would block).
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    /// A connection served by a [`Conn`], and its client's end.
    async fn pair() -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (
            Conn::new(server, peer, CancellationToken::new(), &[]),
            client,
        )
    }

    #[tokio::test]
    async fn responses_made_here_are_framed_by_what_is_known_of_their_body() {
        let (mut conn, mut client) = pair().await;
        client
            .write_all(b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();

        // Unknown length: chunked, each frame as it comes.
        assert!(matches!(conn.next().await, Next::Request));
        assert_eq!(conn.request().unwrap().uri(), "/a");
        conn.consume();
        let frames = [&b"he"[..], b"llo"].map(|c| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(c)))
        });
        let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        r.headers_mut()
            .insert("content-length", http::HeaderValue::from_static("99"));
        assert!(conn.respond(r, &Method::GET, false).await);

        // HEAD: the length of the body that is not sent.
        assert!(matches!(conn.next().await, Next::Request));
        conn.consume();
        let r = Response::new(Full::new(Bytes::from_static(b"12345")));
        assert!(conn.respond(r, &Method::HEAD, false).await);

        // A 204 has no body; the client asked to close.
        assert!(matches!(conn.next().await, Next::Request));
        let close = conn.head.close;
        conn.consume();
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        assert!(!conn.respond(r, &Method::GET, close).await);
        conn.shutdown().await;
        drop(conn);

        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8(got).unwrap();
        let parts: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(parts.len(), 3, "{got}");
        assert!(parts[0].starts_with("200 OK\r\n"), "{got}");
        assert!(parts[0].contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(
            !parts[0].contains("99"),
            "the handler's length is not trusted: {got}"
        );
        assert!(
            parts[0].ends_with("\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
            "{got}"
        );
        assert!(parts[1].contains("content-length: 5\r\n"), "{got}");
        assert!(parts[1].ends_with("\r\n\r\n"), "no body for HEAD: {got}");
        assert!(parts[2].starts_with("204 No Content\r\n"), "{got}");
        assert!(parts[2].contains("connection: close\r\n"), "{got}");
        assert!(!parts[2].contains("content-length"), "{got}");
    }
}
