//! svcprovider: the K/V, blob and secret service bismuthd starts next to
//! every container, on the container's host-side address, reachable only
//! from that container.
//!
//! [`api`] is the HTTP surface (DESIGN.md's svcprovider API); the storage
//! (the [`store::Storage`] trait, SQLite and PostgreSQL, secrets encrypted
//! at rest, key validation) is the `bismuth-svcstore` library, re-exported
//! here as [`store`]. Start at [`serve`].

pub mod api;
pub mod config;

pub use bismuth_svcstore as store;
pub use bismuth_svcstore::{crypto, key};

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `api` on `listener` until `shutdown`.
pub async fn serve<S: store::Storage>(
    listener: TcpListener,
    api: Arc<api::Api<S>>,
    shutdown: CancellationToken,
) {
    let handler = move |req, _peer| {
        let api = Arc::clone(&api);
        async move { api.handle(req).await }
    };
    bismuth_daemon::http::serve(listener, handler, shutdown, Duration::from_secs(5)).await;
}
