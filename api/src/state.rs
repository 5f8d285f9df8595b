//! What every handler shares: the configuration, the ZooKeeper handle (set
//! once the background connect succeeds) and an HTTP client for bismuthds.

use bismuth_daemon::otel::Tracer;
use std::sync::{Arc, OnceLock};

use bismuth_zk::Zk;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use bismuth_svcstore::crypto::SecretKey;
use bismuth_svcstore::{SecretWriter, StoreUrl};

use crate::error::ApiError;
use crate::Config;

/// Shared application state (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    zk: OnceLock<Zk>,
    /// Whether the session is connected, updated as the client's state
    /// changes: requests answer 503 at once while ZooKeeper is away instead
    /// of waiting out the client's timeouts.
    connected: std::sync::atomic::AtomicBool,
    http: Client<HttpConnector, Empty<Bytes>>,
    /// Opened once (at start-up, or at the first secret write if the store
    /// was away then) and shared by every secret write.
    secrets: tokio::sync::OnceCell<SecretWriter>,
    metrics: Arc<crate::metrics::ApiMetrics>,
    /// The cluster as watches show it (placement reads it; the controller
    /// reconciles from it while this process leads).
    view: Arc<crate::controller::view::SharedView>,
    /// This process, as the controller election knows it.
    candidate: crate::controller::leader::Candidate,
    /// Set with `--otlp-endpoint`: a span per routed request.
    tracer: Option<Tracer>,
    /// The dashboard's live figures.
    stats: crate::stats::Stats,
}

impl AppState {
    /// State with no ZooKeeper connection yet; call within the runtime.
    /// `addr` is where the REST API listens (told to the other api processes).
    pub fn new(config: Config, addr: String) -> Self {
        let tracer = config.otlp_endpoint.as_ref().and_then(|e| {
            Tracer::new("bismuth-api", e)
                .map_err(|e| tracing::error!(error = %e, "spans are not exported"))
                .ok()
        });
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        AppState {
            inner: Arc::new(Inner {
                config,
                zk: OnceLock::new(),
                connected: std::sync::atomic::AtomicBool::new(false),
                http,
                secrets: tokio::sync::OnceCell::new(),
                metrics: Arc::new(crate::metrics::ApiMetrics::new()),
                view: Arc::default(),
                candidate: crate::controller::leader::Candidate {
                    id: uuid::Uuid::new_v4(),
                    addr,
                    since: String::new(),
                },
                tracer,
                stats: crate::stats::Stats::default(),
            }),
        }
    }

    /// Installs the ZooKeeper handle and follows its connection, so requests
    /// answer 503 at once while ZooKeeper is away.
    pub fn set_zk(&self, zk: Zk) {
        use std::sync::atomic::Ordering;
        self.inner.connected.store(true, Ordering::Relaxed);
        let _ = self.inner.zk.set(zk.clone());
        let inner = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            zk.follow_connection(|up| {
                let Some(inner) = inner.upgrade() else {
                    return false;
                };
                inner.connected.store(up, Ordering::Relaxed);
                true
            })
            .await;
        });
    }

    /// The ZooKeeper handle, or 503 while the api is still connecting or
    /// ZooKeeper is unreachable.
    pub fn zk(&self) -> Result<&Zk, ApiError> {
        let zk = self.inner.zk.get().ok_or_else(|| {
            ApiError::Unavailable("not connected to ZooKeeper yet; retry shortly".into())
        })?;
        if !self
            .inner
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(ApiError::Unavailable(
                "ZooKeeper cannot be reached; retry shortly".into(),
            ));
        }
        Ok(zk)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The secret writer, opened on first use; 503 when secrets are not
    /// configured or the store cannot be opened.
    pub async fn secrets(&self) -> Result<&SecretWriter, ApiError> {
        let config = &self.inner.config;
        self.inner
            .secrets
            .get_or_try_init(|| async {
                let Some(path) = &config.secret_key_file else {
                    return Err(ApiError::Unavailable(
                        "secrets are not configured: start the api with --secret-key-file".into(),
                    ));
                };
                let key = read_key(path).map_err(ApiError::Unavailable)?;
                let url = StoreUrl::parse(&config.svc_store)
                    .map_err(|e| ApiError::Unavailable(format!("secret store: {e}")))?;
                SecretWriter::open(&url, key)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("secret store: {e}")))
            })
            .await
    }

    /// The span exporter, with `--otlp-endpoint`.
    pub fn tracer(&self) -> Option<&Tracer> {
        self.inner.tracer.as_ref()
    }

    /// The api's metrics.
    pub fn metrics(&self) -> &crate::metrics::ApiMetrics {
        &self.inner.metrics
    }

    /// The metrics, to share with the controller.
    pub fn metrics_handle(&self) -> Arc<crate::metrics::ApiMetrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// The dashboard's live figures.
    pub fn stats(&self) -> &crate::stats::Stats {
        &self.inner.stats
    }

    /// The cluster view.
    pub fn view(&self) -> &Arc<crate::controller::view::SharedView> {
        &self.inner.view
    }

    /// This process as a controller candidate.
    pub fn candidate(&self) -> &crate::controller::leader::Candidate {
        &self.inner.candidate
    }

    /// Whether `b`'s node still has the container (its bismuthd knows it);
    /// a node that cannot be reached counts as not having it.
    pub async fn node_has_container(&self, b: bismuth_model::Backend) -> bool {
        let uri = format!(
            "http://{}:{}/containers/{}",
            b.ip,
            self.config().bismuthd_port,
            b.container_id
        );
        let Ok(uri) = uri.parse::<http::Uri>() else {
            return false;
        };
        let request = self.http().get(uri);
        match tokio::time::timeout(std::time::Duration::from_secs(2), request).await {
            Ok(Ok(r)) => r.status() == http::StatusCode::OK,
            _ => false,
        }
    }

    /// Client for bismuthd's HTTP endpoints.
    pub fn http(&self) -> &Client<HttpConnector, Empty<Bytes>> {
        &self.inner.http
    }
}

/// Reads the cluster key file.
pub fn read_key(path: &std::path::Path) -> Result<SecretKey, String> {
    let material = std::fs::read(path)
        .map_err(|e| format!("cannot read --secret-key-file {}: {e}", path.display()))?;
    SecretKey::from_bytes(&material)
        .map_err(|e| format!("--secret-key-file {}: {e}", path.display()))
}
