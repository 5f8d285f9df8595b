//! What every Bismuth daemon's `main` shares: a `tracing` subscriber filtered
//! by `RUST_LOG` (default `info`), and a [`CancellationToken`] cancelled on
//! SIGTERM or SIGINT, which the daemon's `run` treats as "drain and stop";
//! [`http::serve`], the accept loop with graceful draining; and the proxy
//! header rules ([`headers`], [`trace`]) bismuthfe and bismuthd share; span
//! export ([`otel`]); the invocation path's HTTP client ([`upstream`]); and
//! what a proxy's byte-level fast path needs ([`h1`], [`rewind`]).

pub mod coarse;
pub mod guarded;
pub mod h1;
pub mod headers;
pub mod http;
pub mod invoke;
pub mod lines;
pub mod otel;
pub mod rewind;
pub mod trace;
pub mod upstream;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Installs the global subscriber; call once at the top of `main`.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Returns a token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
        cancel.cancel();
    });
    Ok(token)
}
