//! The HTTP/1 accept loop every daemon uses: serve each connection with a
//! handler until shutdown, then let in-flight requests finish for a grace
//! period before closing what is left ([`serve`]); or the same thread per
//! core, connections accepted once and dealt out to serving threads
//! ([`serve_threads`]). Both also take a connection server of one's own
//! instead of hyper's ([`serve_conns`], [`serve_threads_conns`]).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Where connections come from.
pub trait Accept: Send {
    /// The next connection; `None` when no more will come.
    fn next(
        &mut self,
    ) -> impl Future<Output = Option<std::io::Result<(TcpStream, SocketAddr)>>> + Send;
}

impl Accept for TcpListener {
    async fn next(&mut self) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
        Some(self.accept().await)
    }
}

/// Connections accepted elsewhere (on another thread), handed over to be
/// served on this thread's runtime.
#[derive(Debug)]
struct Handed(tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>);

impl Accept for Handed {
    async fn next(&mut self) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
        let (stream, peer) = self.0.recv().await?;
        Some(TcpStream::from_std(stream).map(|s| (s, peer)))
    }
}

/// Accepts on `listener` until `shutdown` and hands the connections to the
/// serving threads behind `threads` in turn (each serves its [`Handed`]).
async fn deal(
    mut listener: TcpListener,
    threads: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    shutdown: CancellationToken,
) {
    for next in (0..threads.len()).cycle() {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = accept(&mut listener) => match accepted {
                Some(conn) => conn,
                None => return,
            },
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if threads[next].send((stream, peer)).is_err() {
            return;
        }
    }
}

/// Serves on `threads` threads of their own, each a current-thread runtime
/// with the handler `make(i)` builds for it, until `shutdown` (then each
/// drains for `grace`). Connections are accepted by the calling task and
/// dealt out in turn; a connection and all its requests stay on the thread
/// that got it, so a request never crosses threads and nothing is shared
/// per request but what the handlers share themselves.
pub async fn serve_threads<M, H, Fut, B>(
    listener: TcpListener,
    threads: usize,
    name: &str,
    make: M,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()>
where
    M: Fn(usize) -> H,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let make = |i| hyper_conns(make(i));
    serve_threads_conns(listener, threads, name, make, shutdown, grace).await
}

/// [`serve_threads`] with a connection server of one's own: `make(i)`
/// builds thread `i`'s, called (on that thread) with each connection.
pub async fn serve_threads_conns<M, C, Fut>(
    listener: TcpListener,
    threads: usize,
    name: &str,
    make: M,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()>
where
    M: Fn(usize) -> C,
    C: FnMut(TcpStream, SocketAddr, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut hand = Vec::new();
    let mut done = Vec::new();
    for i in 0..threads.max(1) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let conns = make(i);
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => return tracing::error!(error = %e, "cannot start a serving thread"),
                };
                runtime.block_on(serve_conns(Handed(rx), conns, shutdown, grace));
                let _ = done_tx.send(());
            })?;
        hand.push(tx);
        done.push(done_rx);
    }
    deal(listener, hand, shutdown).await;
    for d in done {
        let _ = d.await;
    }
    Ok(())
}

/// The next connection, waiting out accept errors; `None` when no more come.
async fn accept<A: Accept>(listener: &mut A) -> Option<(TcpStream, SocketAddr)> {
    loop {
        match listener.next().await? {
            Ok(conn) => return Some(conn),
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `handler` on the connections of `listener` until `shutdown` is
/// cancelled (or the connections end).
pub async fn serve<A, H, Fut, B>(
    listener: A,
    handler: H,
    shutdown: CancellationToken,
    grace: Duration,
) where
    A: Accept,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_conns(listener, hyper_conns(handler), shutdown, grace).await
}

/// hyper serving `handler` on each connection it is called with.
fn hyper_conns<H, Fut, B>(
    handler: H,
) -> impl FnMut(TcpStream, SocketAddr, CancellationToken) -> BoxedConn + Send + 'static
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Made by the first connection, on the runtime that serves them all
    // (its timer ticks there).
    let mut builder: Option<Hyper> = None;
    move |stream, peer, shutdown| {
        let builder = builder.get_or_insert_with(Hyper::new).clone();
        let handler = handler.clone();
        Box::pin(async move { builder.serve(stream, peer, handler, shutdown).await })
    }
}

/// The future of one connection served by hyper.
type BoxedConn = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's HTTP/1 server as every daemon configures it; cheap to clone.
#[derive(Clone, Debug)]
pub struct Hyper {
    builder: http1::Builder,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper::new()
    }
}

impl Hyper {
    /// The server (its timer ticks on the current runtime).
    pub fn new() -> Self {
        let mut builder = http1::Builder::new();
        // Header read timeout (30 s, hyper's default; it also ends idle
        // keep-alive connections) on a timer that costs no syscall per request.
        builder.timer(crate::coarse::CoarseTimer::start());
        Hyper { builder }
    }

    /// Serves `handler` on `io` (from `peer`) until the connection ends;
    /// once `shutdown` is cancelled, it ends after the request in flight.
    pub async fn serve<I, H, Fut, B>(
        &self,
        io: I,
        peer: SocketAddr,
        handler: H,
        shutdown: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let service = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Serves each connection of `listener` with `conns` (given the
/// connection, its peer and `shutdown`, which it watches to end after the
/// request in flight) until `shutdown`; then waits up to `grace` for the
/// connections to end.
pub async fn serve_conns<A, C, Fut>(
    mut listener: A,
    mut conns: C,
    shutdown: CancellationToken,
    grace: Duration,
) where
    A: Accept,
    C: FnMut(TcpStream, SocketAddr, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&mut listener) => match accepted {
                Some(conn) => conn,
                None => break,
            },
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(conns(stream, peer, shutdown.clone()));
    }
    drop(listener);
    tracker.close();
    info!(connections = tracker.len(), "draining in-flight requests");
    tokio::select! {
        _ = tracker.wait() => info!("all connections closed"),
        _ = tokio::time::sleep(grace) => warn!("grace period over; closing remaining connections"),
    }
}
