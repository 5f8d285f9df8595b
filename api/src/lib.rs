//! The api: Bismuth's control plane.
//!
//! [`routes`] is the HTTP surface (wire-compatible with the original
//! Bismuth API, plus `GET /function`, `GET /node`, node drains, secrets and
//! `GET /controller`); it writes desired state: [`deploy`] creates
//! functions (placing them with `bismuth_model::placement` on the
//! [`cluster`] snapshot) and requests redeploys. The [`controller`], run
//! by whichever api process leads, keeps every function served. Every
//! error maps to a status in [`error`]. Start at [`run`].

pub mod cluster;
pub mod config;
pub mod controller;
pub mod deploy;
pub mod error;
mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod stats;

use bismuth_zk::Zk;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{Args, Config};

/// Serves the API on `listener` until `shutdown`. ZooKeeper is connected in
/// the background; until then calls answer 503.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = state::AppState::new(config.clone(), listener.local_addr()?.to_string());
    let connecting = state.clone();
    let stop = shutdown.clone();
    let zk_config = config.zk.clone();
    let controller = tokio::spawn(async move {
        if let Some(zk) = Zk::connect_retrying(zk_config, &stop).await {
            connecting.set_zk(zk.clone());
            let view = std::sync::Arc::clone(connecting.view());
            let watching = {
                let (view, zk, stop) = (std::sync::Arc::clone(&view), zk.clone(), stop.clone());
                tokio::spawn(async move { view.maintain(zk, stop).await })
            };
            // Every api process campaigns; the leader runs the controller.
            let me = connecting.candidate().clone();
            let settings = controller::Settings {
                bismuthd_port: config.bismuthd_port,
                windows: config.autoscale_windows,
            };
            controller::run(zk, me, view, connecting.metrics_handle(), settings, stop).await;
            let _ = watching.await;
        }
    });
    if config.secret_key_file.is_some() {
        let opening = state.clone();
        tokio::spawn(async move {
            if let Err(e) = opening.secrets().await {
                tracing::warn!(error = %e, "cannot open the secret store yet; will retry on the first secret write");
            }
        });
    }
    info!(addr = %listener.local_addr()?, "api serving");
    let stopping = shutdown.clone();
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .await?;
    // Lets the controller step down (deleting the leader znode) before exit.
    shutdown.cancel();
    let _ = controller.await;
    Ok(())
}
