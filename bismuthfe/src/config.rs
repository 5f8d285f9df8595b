//! bismuthfe's command line, validated into a [`Config`] before any port is bound.

use std::net::SocketAddr;
use std::time::Duration;

use bismuth_daemon::otel::Endpoint;
use bismuth_zk::{ZkArgs, ZkConfig};

/// Route HTTP invocations to functions' Running backends.
#[derive(Debug, clap::Parser)]
#[command(name = "bismuthfe", version, about)]
pub struct Args {
    #[command(flatten)]
    pub zookeeper: ZkArgs,
    /// Address to serve invocations on
    #[arg(long, env = "BISMUTH_FE_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Port bismuthd listens on, on every node
    #[arg(long, env = "BISMUTH_BACKEND_PORT", default_value_t = 8001)]
    pub backend_port: u16,
    /// Milliseconds to wait for a backend to accept a connection before
    /// trying the next (a node cut off answers nothing: keep it short)
    #[arg(long, default_value_t = 500)]
    pub connect_timeout_ms: u64,
    /// Milliseconds to wait for a backend's response headers (504 after that)
    #[arg(long, default_value_t = 300_000)]
    pub response_timeout_ms: u64,
    /// Milliseconds in-flight requests get to finish after SIGTERM
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Milliseconds a request is held and retried while every backend of its
    /// function refuses connections (their bismuthds restarting); 0 answers 502 at once
    #[arg(long, default_value_t = 5_000)]
    pub hold_refused_ms: u64,
    /// Milliseconds a request for a function with no Running instance is
    /// held while one starts (scale from zero); 0 answers 503 at once
    #[arg(long, env = "BISMUTH_COLD_START_TIMEOUT_MS", default_value_t = 30_000)]
    pub cold_start_timeout_ms: u64,
    /// Most requests held at once waiting for cold starts (beyond: 503 with Retry-After)
    #[arg(long, default_value_t = 10_000)]
    pub max_held_requests: u64,
    /// Most bytes of request heads held at once (bodies stay unread in the
    /// clients' sockets while held)
    #[arg(long, default_value_t = 64 << 20)]
    pub max_held_bytes: u64,
    /// Address the controller reaches this frontend's /load on (default:
    /// --listen, with 127.0.0.1 for an unspecified address)
    #[arg(long, env = "BISMUTH_FE_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Threads serving requests, each with its own runtime, connections
    /// and upstream pool (a connection stays on the thread that got it);
    /// 0: one per CPU
    #[arg(long, env = "BISMUTH_FE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Do not record request metrics (`/metrics` then has the process
    /// metrics only); for measuring what recording costs
    #[arg(long)]
    pub no_metrics: bool,
    /// Export a span per request over OTLP/HTTP to this collector
    /// (e.g. http://127.0.0.1:4318)
    #[arg(long, env = "BISMUTH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<Endpoint>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// ZooKeeper ensemble and environment.
    pub zk: ZkConfig,
    /// bismuthd's port on every node.
    pub backend_port: u16,
    /// Connect timeout per backend.
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub response_timeout: Duration,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// How long a request is retried while every backend refuses.
    pub hold_refused: Duration,
    /// How long a request waits for a cold start.
    pub cold_start_timeout: Duration,
    /// Bounds on held requests: count, bytes of their heads.
    pub max_held_requests: u64,
    pub max_held_bytes: u64,
    /// Where the controller asks for `/load`; `None`: the listening address.
    pub advertise: Option<SocketAddr>,
    /// Serving threads.
    pub threads: usize,
    /// Whether requests are recorded in the metrics.
    pub request_metrics: bool,
    /// Where spans are exported, if anywhere.
    pub otlp_endpoint: Option<Endpoint>,
}

impl Args {
    /// Validates the flags.
    pub fn config(&self) -> anyhow::Result<Config> {
        anyhow::ensure!(self.backend_port != 0, "--backend-port must be 1-65535");
        anyhow::ensure!(
            self.connect_timeout_ms > 0,
            "--connect-timeout-ms must be positive"
        );
        anyhow::ensure!(
            self.response_timeout_ms > 0,
            "--response-timeout-ms must be positive"
        );
        Ok(Config {
            zk: self.zookeeper.config()?,
            backend_port: self.backend_port,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            hold_refused: Duration::from_millis(self.hold_refused_ms),
            cold_start_timeout: Duration::from_millis(self.cold_start_timeout_ms),
            max_held_requests: self.max_held_requests,
            max_held_bytes: self.max_held_bytes,
            advertise: self.advertise,
            threads: match self.threads {
                0 => default_threads(),
                n => n,
            },
            request_metrics: !self.no_metrics,
            otlp_endpoint: self.otlp_endpoint.clone(),
        })
    }
}

impl Config {
    /// Defaults for `zk`, as the flags' defaults would give.
    pub fn new(zk: ZkConfig) -> Self {
        Config {
            zk,
            backend_port: 8001,
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            hold_refused: Duration::from_secs(5),
            cold_start_timeout: Duration::from_secs(30),
            max_held_requests: 10_000,
            max_held_bytes: 64 << 20,
            advertise: None,
            threads: default_threads(),
            request_metrics: true,
            otlp_endpoint: None,
        }
    }
}

/// One serving thread per CPU this process may run on.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
