//! The api's command line, validated into a [`Config`] before binding.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bismuth_zk::{ZkArgs, ZkConfig};

/// Bismuth's control-plane API.
#[derive(Debug, clap::Parser)]
#[command(name = "api", version, about)]
pub struct Args {
    #[command(flatten)]
    pub zookeeper: ZkArgs,
    /// Address to serve the API on
    #[arg(long, env = "BISMUTH_API_LISTEN", default_value = "127.0.0.1:8002")]
    pub listen: SocketAddr,
    /// Bearer token every call but /healthz must present; required to listen beyond loopback
    #[arg(long, env = "BISMUTH_API_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Port bismuthd listens on, on every node (for logs)
    #[arg(long, env = "BISMUTH_BACKEND_PORT", default_value_t = 8001)]
    pub bismuthd_port: u16,
    /// How long a redeploy waits for a new instance to be Running, in milliseconds
    #[arg(long, default_value_t = 120_000)]
    pub redeploy_timeout_ms: u64,
    /// svcprovider store for secrets: sqlite:DIR or a postgres:// URL
    #[arg(
        long,
        env = "BISMUTH_SVC_STORE",
        default_value = "sqlite:/var/lib/bismuth/svc"
    )]
    pub svc_store: String,
    /// Cluster key file for secrets (as given to svcprovider)
    #[arg(long, env = "BISMUTH_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Export a span per request over OTLP/HTTP to this collector
    /// (e.g. http://127.0.0.1:4318)
    #[arg(long, env = "BISMUTH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<bismuth_daemon::otel::Endpoint>,
    /// The autoscaler's stable window in milliseconds: desired instances
    /// follow the average concurrency over it
    #[arg(long, default_value_t = 60_000)]
    pub autoscale_stable_window_ms: u64,
    /// The autoscaler's panic window in milliseconds: when it asks for twice
    /// the running instances, the scaler goes up at once
    #[arg(long, default_value_t = 6_000)]
    pub autoscale_panic_window_ms: u64,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// ZooKeeper ensemble and environment.
    pub zk: ZkConfig,
    /// Required bearer token, if any.
    pub auth_token: Option<String>,
    /// bismuthd's port.
    pub bismuthd_port: u16,
    /// Redeploy wait.
    pub redeploy_timeout: Duration,
    /// Where secrets go: the `--store` value svcprovider uses.
    pub svc_store: String,
    /// Cluster key file for secrets.
    pub secret_key_file: Option<PathBuf>,
    /// Where spans are exported, if anywhere.
    pub otlp_endpoint: Option<bismuth_daemon::otel::Endpoint>,
    /// The autoscaler's windows.
    pub autoscale_windows: crate::controller::autoscale::Windows,
}

impl Args {
    /// Validates the flags. Without a token, only loopback addresses are allowed.
    pub fn config(&self) -> anyhow::Result<Config> {
        if let Some(t) = &self.auth_token {
            anyhow::ensure!(t.len() >= 16, "--auth-token must be at least 16 characters");
        } else {
            anyhow::ensure!(
                self.listen.ip().is_loopback(),
                "refusing to listen on {} without authentication: set --auth-token (or BISMUTH_API_TOKEN), \
                 or listen on a loopback address such as 127.0.0.1:8002",
                self.listen
            );
        }
        bismuth_svcstore::StoreUrl::parse(&self.svc_store)
            .map_err(|e| anyhow::anyhow!("--svc-store: {e}"))?;
        if let Some(path) = &self.secret_key_file {
            crate::state::read_key(path).map_err(anyhow::Error::msg)?;
        }
        let tick = crate::controller::load::TICK.as_millis() as u64;
        anyhow::ensure!(
            self.autoscale_panic_window_ms >= tick
                && self.autoscale_stable_window_ms >= self.autoscale_panic_window_ms,
            "the autoscaler's windows must satisfy {tick} ≤ --autoscale-panic-window-ms ≤ --autoscale-stable-window-ms"
        );
        Ok(Config {
            autoscale_windows: crate::controller::autoscale::Windows {
                stable: Duration::from_millis(self.autoscale_stable_window_ms),
                panic: Duration::from_millis(self.autoscale_panic_window_ms),
            },
            zk: self.zookeeper.config()?,
            auth_token: self.auth_token.clone(),
            bismuthd_port: self.bismuthd_port,
            redeploy_timeout: Duration::from_millis(self.redeploy_timeout_ms),
            svc_store: self.svc_store.clone(),
            secret_key_file: self.secret_key_file.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
        })
    }
}

impl Config {
    /// Defaults for `zk`, as the flags' defaults would give (no token).
    pub fn new(zk: ZkConfig) -> Self {
        Config {
            zk,
            auth_token: None,
            bismuthd_port: 8001,
            redeploy_timeout: Duration::from_secs(120),
            svc_store: "sqlite:/var/lib/bismuth/svc".into(),
            secret_key_file: None,
            otlp_endpoint: None,
            autoscale_windows: Default::default(),
        }
    }
}
