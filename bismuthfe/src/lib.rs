//! bismuthfe, the invocation frontend.
//!
//! A request arrives ([`raw`], or [`proxy`] through hyper for what the
//! fast path leaves), its function is found by `Host` header or
//! `/invoke/{function_id}` in the current [`table::RoutingTable`], a
//! Running backend is chosen by rendezvous hashing of the client address
//! ([`ring`]), and the request streams to that backend's bismuthd. The
//! table is rebuilt by [`sync`] from ZooKeeper watches and swapped in whole,
//! so the request path never waits on ZooKeeper or a lock.
//!
//! Start reading at [`run`].

mod body;
pub mod config;
mod cow;
pub mod load;
pub mod metrics;
pub mod proxy;
mod raw;
pub mod ring;
pub mod sync;
pub mod table;
pub mod wake;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bismuth_daemon::otel::Tracer;
use bismuth_zk::Zk;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

pub use config::{Args, Config};

/// Serves invocations on `listener` until `shutdown`, then lets in-flight
/// requests finish for the grace period.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let table = Arc::new(ArcSwap::from_pointee(table::RoutingTable::default()));
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let (waker, wakes) = wake::Waker::new();
    let load = Arc::new(load::FrontendLoad::new(
        config.max_held_requests,
        config.max_held_bytes,
    ));
    let advertise = config.advertise.unwrap_or_else(|| {
        let mut a = listener
            .local_addr()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        if a.ip().is_unspecified() {
            a.set_ip([127, 0, 0, 1].into());
        }
        a
    });
    let sync_task = tokio::spawn(
        sync_forever(
            config.clone(),
            Arc::clone(&table),
            ready_tx,
            wakes,
            Arc::clone(&load),
            advertise.to_string(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("sync")),
    );
    let metrics = Arc::new(metrics::FrontendMetrics::new(config.request_metrics));
    let tracer = config
        .otlp_endpoint
        .as_ref()
        .map(|e| Tracer::new("bismuthfe", e))
        .transpose()?;
    info!(addr = %listener.local_addr()?, threads = config.threads, "bismuthfe serving");
    // Thread per core: each serving thread runs its own runtime with its
    // own upstream pool, and a connection stays on the thread it was
    // handed to, so a request never crosses threads. This task accepts and
    // deals connections out in turn.
    let make = |_| {
        let proxy = Arc::new(proxy::Proxy::new(
            Arc::clone(&table),
            ready_rx.clone(),
            &config,
            Arc::clone(&metrics),
            tracer.clone(),
            Arc::clone(&load),
            waker.clone(),
        ));
        // hyper, for the connections the fast path hands over; made on
        // the serving thread by its first connection (its timer ticks there).
        let mut hyper = None;
        move |stream, peer, shutdown| {
            let hyper = hyper
                .get_or_insert_with(bismuth_daemon::http::Hyper::new)
                .clone();
            raw::serve(Arc::clone(&proxy), hyper, stream, peer, shutdown)
        }
    };
    bismuth_daemon::http::serve_threads_conns(
        listener,
        config.threads,
        "bismuthfe",
        make,
        shutdown.clone(),
        config.shutdown_grace,
    )
    .await?;
    sync_task.abort();
    if let Some(t) = tracer {
        t.shutdown().await;
    }
    Ok(())
}

/// Connects to ZooKeeper (retrying until it answers), keeps the table
/// current, registers this frontend and writes the wake-ups held requests ask for.
async fn sync_forever(
    config: Config,
    table: Arc<ArcSwap<table::RoutingTable>>,
    ready: tokio::sync::watch::Sender<bool>,
    wakes: tokio::sync::mpsc::Receiver<bismuth_model::FunctionId>,
    load: Arc<load::FrontendLoad>,
    advertise: String,
    shutdown: CancellationToken,
) {
    let Some(zk) = Zk::connect_retrying(config.zk.clone(), &shutdown).await else {
        return;
    };
    let id = uuid::Uuid::new_v4();
    info!(%id, addr = advertise, "registering for load reports");
    tokio::join!(
        sync::run(zk.clone(), table, ready, load, shutdown.clone()),
        wake::run(zk.clone(), wakes, shutdown.clone()),
        wake::register(zk, id, advertise, shutdown),
    );
}
