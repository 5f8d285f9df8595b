//! The HTTP/1.1 client of the invocation path's hops (bismuthfe → bismuthd,
//! bismuthd → a container): requests written straight to a pooled socket
//! and responses read from it in the task that asked, with no connection
//! task, no channel and no per-request copy of the headers.
//!
//! hyper's pooled client runs every connection as its own task fed through
//! channels, so each request crosses tasks (and often threads) three
//! times; a proxy that is mostly those crossings pays for them on every
//! request. Here the caller's task writes the head (and body) and parses
//! the response head; the response body reads the same socket as the
//! server side polls it, and puts the connection back in the pool when the
//! body ends cleanly.
//!
//! Limits: no protocol upgrades (101 is an error), request trailers are
//! dropped, and a request body is sent whole before the response is read
//! (an upstream answering early and closing turns into an error).

mod body;
pub mod wire;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, Version};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use body::UpstreamBody;
use wire::RequestFraming;

/// What can go wrong with one upstream request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before a response")]
    Closed,
    #[error("bad response: {0}")]
    BadResponse(String),
    #[error("reading the request body: {0}")]
    RequestBody(Box<dyn StdError + Send + Sync>),
}

impl Error {
    /// Whether no connection was made (the request surely did not arrive).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(..) | Error::ConnectTimeout(_))
    }
}

/// How connections are made and kept.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// Idle connections older than this are not reused (keep it below the
    /// upstream's own idle timeout).
    pub idle_timeout: Duration,
    /// Idle connections kept per upstream address.
    pub max_idle_per_host: usize,
    /// TCP keepalive: first probe after this idle time, then every half of
    /// it, three probes.
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`: unacknowledged data fails the connection after this.
    pub user_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(20),
            max_idle_per_host: 64,
            keepalive: None,
            user_timeout: None,
        }
    }
}

/// A pool of connections and the requests sent on them; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// A request's head, already on the wire format.
#[derive(Debug)]
pub struct Head {
    method: Method,
    bytes: BytesMut,
    framing: RequestFraming,
}

impl Head {
    /// `method target` with `headers` (hop-by-hop ones already removed by
    /// the caller; framing headers are replaced by the body's own) to
    /// `addr`, for a body with `size_hint`.
    pub fn new(
        method: &Method,
        target: fmt::Arguments<'_>,
        addr: SocketAddr,
        headers: &HeaderMap,
        size_hint: &http_body::SizeHint,
    ) -> Self {
        let framing = RequestFraming::for_body(method, size_hint.exact());
        let mut bytes = BytesMut::with_capacity(256 + headers.len() * 48);
        let mut host = Vec::with_capacity(24);
        crate::headers::push_ip(&mut host, addr.ip());
        host.push(b':');
        crate::headers::push_decimal(&mut host, u64::from(addr.port()));
        wire::write_head(&mut bytes, method, target, &host, headers, framing);
        Head {
            method: method.clone(),
            bytes,
            framing,
        }
    }
}

impl Client {
    pub fn new(config: Config) -> Self {
        Client {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends `head` and `body` to `addr` and reads the response head; the
    /// body streams from the connection as it is polled. A pooled
    /// connection the upstream closed meanwhile is replaced by a new one
    /// when nothing of the body was sent.
    pub async fn send<B>(
        &self,
        addr: SocketAddr,
        head: Head,
        mut body: B,
    ) -> Result<Response<UpstreamBody>, Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let empty = body.is_end_stream();
        let mut fresh = false;
        loop {
            let (mut stream, reused) = match (fresh, self.take_idle(addr)) {
                (false, Some(s)) => (s, true),
                _ => (self.connect(addr).await?, false),
            };
            let mut buf = BytesMut::with_capacity(8 * 1024);
            match exchange(&mut stream, &head, &mut body, empty, &mut buf).await {
                Ok(parsed) => {
                    return Ok(body::response(self.clone(), addr, stream, buf, parsed));
                }
                // The upstream closed the idle connection as we took it.
                Err(Error::Closed | Error::Io(_)) if reused && empty && buf.is_empty() => {
                    fresh = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A new connection to `addr`, with the configured socket options.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, Error> {
        let config = &self.inner.config;
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::ConnectTimeout(addr))?
            .map_err(|e| Error::Connect(addr, e))?;
        stream.set_nodelay(true)?;
        let sock = socket2::SockRef::from(&stream);
        if let Some(time) = config.keepalive {
            sock.set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(time)
                    .with_interval(time / 2)
                    .with_retries(3),
            )?;
        }
        if let Some(t) = config.user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        Ok(stream)
    }

    /// The newest idle connection to `addr` that is still open.
    pub fn take_idle(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.inner.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() > self.inner.config.idle_timeout {
                continue;
            }
            // Open and quiet: reading would block. Data or EOF: not reusable.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn.stream),
                _ => continue,
            }
        }
        None
    }

    /// Keeps a connection whose last response ended cleanly.
    pub fn put_idle(&self, addr: SocketAddr, stream: TcpStream) {
        let Ok(mut idle) = self.inner.idle.lock() else {
            return;
        };
        let list = idle.entry(addr).or_default();
        let now = Instant::now();
        let timeout = self.inner.config.idle_timeout;
        list.retain(|c| now.duration_since(c.since) <= timeout);
        if list.len() < self.inner.config.max_idle_per_host {
            list.push(Idle { stream, since: now });
        }
    }
}

/// Writes the request, reads the response head into `buf`.
async fn exchange<B>(
    stream: &mut TcpStream,
    head: &Head,
    body: &mut B,
    empty: bool,
    buf: &mut BytesMut,
) -> Result<wire::Head, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if empty {
        stream.write_all(&head.bytes).await?;
    } else {
        write_body(stream, head, body).await?;
    }
    loop {
        if let Some(parsed) = wire::parse_head(buf, &head.method)? {
            return Ok(parsed);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() {
                Error::Closed
            } else {
                Error::BadResponse("the connection closed within the response head".into())
            });
        }
    }
}

/// Writes the head and the body's frames (the first, if ready at once, in
/// the same write as the head).
async fn write_body<B>(stream: &mut TcpStream, head: &Head, body: &mut B) -> Result<(), Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let chunked = head.framing == RequestFraming::Chunked;
    let mut out = head.bytes.clone();
    let mut ended = false;
    loop {
        let frame = if out.is_empty() {
            http_body_util::BodyExt::frame(body).await
        } else {
            // Without waiting: what is ready goes with what is buffered.
            match std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::pin::Pin::new(&mut *body).poll_frame(cx))
            })
            .await
            {
                std::task::Poll::Ready(f) => f,
                std::task::Poll::Pending => {
                    stream.write_all(&out).await?;
                    out.clear();
                    continue;
                }
            }
        };
        match frame {
            None => ended = true,
            Some(Err(e)) => return Err(Error::RequestBody(e.into())),
            Some(Ok(frame)) => {
                // Trailers are dropped (see the module docs).
                if let Ok(data) = frame.into_data() {
                    if chunked {
                        wire::write_chunk(&mut out, &data);
                    } else {
                        out.extend_from_slice(&data);
                    }
                }
            }
        }
        if ended || out.len() >= 64 * 1024 {
            if ended && chunked {
                out.extend_from_slice(wire::LAST_CHUNK);
            }
            stream.write_all(&out).await?;
            out.clear();
        }
        if ended {
            return Ok(());
        }
    }
}

/// The response version we hand on.
const VERSION: Version = Version::HTTP_11;
