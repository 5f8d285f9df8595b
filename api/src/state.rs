//! What every handler shares: the configuration, the ZooKeeper handle (set
//! once the background connect succeeds) and an HTTP client for bismuthds.

use std::sync::{Arc, OnceLock};

use bismuth_zk::Zk;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

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
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl AppState {
    /// State with no ZooKeeper connection yet.
    pub fn new(config: Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        AppState {
            inner: Arc::new(Inner {
                config,
                zk: OnceLock::new(),
                http,
            }),
        }
    }

    /// Installs the ZooKeeper handle.
    pub fn set_zk(&self, zk: Zk) {
        let _ = self.inner.zk.set(zk);
    }

    /// The ZooKeeper handle, or 503 while the api is still connecting.
    pub fn zk(&self) -> Result<&Zk, ApiError> {
        self.inner.zk.get().ok_or_else(|| {
            ApiError::Unavailable("not connected to ZooKeeper yet; retry shortly".into())
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Client for bismuthd's HTTP endpoints.
    pub fn http(&self) -> &Client<HttpConnector, Empty<Bytes>> {
        &self.inner.http
    }
}
