//! bismuthd's command line, validated into a [`Config`] before anything starts.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use bismuth_containerd::RegistryConfig;
use bismuth_model::NodeCapacity;
use bismuth_zk::{ZkArgs, ZkConfig};

use crate::ipam::Pool;

/// Run functions' containers on this host, as ZooKeeper says.
#[derive(Debug, clap::Parser)]
#[command(name = "bismuthd", version, about)]
pub struct Args {
    #[command(flatten)]
    pub zookeeper: ZkArgs,
    /// This node's IPv4 address: its znode is /node/{ip}, and it serves on it
    #[arg(long, env = "BISMUTH_NODE_IP")]
    pub node_ip: Ipv4Addr,
    /// Address to serve invocations and logs on [default: {node ip}:8001]
    #[arg(long, env = "BISMUTH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// containerd's gRPC socket
    #[arg(
        long,
        env = "BISMUTH_CONTAINERD",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd: PathBuf,
    /// containerd namespace holding this daemon's containers (one bismuthd per namespace)
    #[arg(long, default_value = "bismuth")]
    pub namespace: String,
    /// Where containers' logs, /etc files and repositories live
    #[arg(long, default_value = "/var/lib/bismuth")]
    pub state_dir: PathBuf,
    /// Runtime files: the lock, runner sockets
    #[arg(long, default_value = "/run/bismuth")]
    pub run_dir: PathBuf,
    /// Address range containers' /30 networks are carved from
    #[arg(long, default_value = "10.177.0.0/16")]
    pub container_net: String,
    /// The static bismuth-runner binary Executable-mode containers start
    /// (scripts/build-runner.sh makes it) [default: next to bismuthd]
    #[arg(long)]
    pub runner: Option<PathBuf>,
    /// A registry (host[:port]) to pull from over plain HTTP; repeatable. Only for loopback tests
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// The svcprovider binary started beside every container [default: next to bismuthd]
    #[arg(long)]
    pub svcprovider: Option<PathBuf>,
    /// Where the containers' svcproviders keep data: sqlite:DIR or a postgres:// URL
    /// (the api's --svc-store, so secrets set there are readable)
    #[arg(
        long,
        env = "BISMUTH_SVC_STORE",
        default_value = "sqlite:/var/lib/bismuth/svc"
    )]
    pub svc_store: String,
    /// The cluster key file for secrets, passed to each svcprovider
    #[arg(long, env = "BISMUTH_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Let containers reach the internet (NAT); private and link-local ranges stay blocked
    #[arg(long)]
    pub egress: bool,
    /// Registry credentials in Docker's config.json format
    #[arg(long)]
    pub registry_auth_file: Option<PathBuf>,
    /// Let functions clone file:// repositories (host paths); off by default
    /// because a tenant could read another's repository. For tests and demos
    #[arg(long)]
    pub allow_file_repos: bool,
    /// Time limit of one Executable-mode request, in milliseconds
    #[arg(long, default_value_t = 30_000)]
    pub exec_timeout_ms: u64,
    /// Most processes one container may have
    #[arg(long, default_value_t = 1024)]
    pub pids_limit: u32,
    /// Bytes of each container's log (its stdout and stderr) kept on disk:
    /// the log rotates at half of this into `log.1`, so the newest part
    /// stays (at least 65536)
    #[arg(long, default_value_t = 10 << 20)]
    pub log_max_bytes: u64,
    /// First host uid (and gid) of containers' user namespaces: a container
    /// on network slot N has host ids uid-base + N × 65536 onwards, its
    /// uid 0–65535 mapped to them
    #[arg(long, default_value_t = 1 << 30)]
    pub uid_base: u32,
    /// Bytes a container may write to its filesystem (`/`, `/repo`): its
    /// writable layer is a tmpfs of this size, charged to its memory limit,
    /// emptied at each start (at least 1 MiB)
    #[arg(long, default_value_t = 512 << 20)]
    pub writable_max_bytes: u64,
    /// Cores offered to functions [default: all]
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Bytes of memory offered to functions [default: total minus 512 MiB]
    #[arg(long)]
    pub memory: Option<u64>,
    /// First wait before restarting a failed container, in milliseconds (doubles up to the max)
    #[arg(long, default_value_t = 1_000)]
    pub restart_backoff_ms: u64,
    /// Longest wait before restarting a failed container, in milliseconds
    #[arg(long, default_value_t = 60_000)]
    pub restart_backoff_max_ms: u64,
    /// Milliseconds a removed container gets between SIGTERM and SIGKILL
    #[arg(long, default_value_t = 5_000)]
    pub stop_grace_ms: u64,
    /// Milliseconds a Running container that ZooKeeper no longer wants keeps
    /// serving before it is stopped, so frontends stop sending to it first
    /// (a redeploy or an evacuation fails no request)
    #[arg(long, default_value_t = 1_000)]
    pub unroute_delay_ms: u64,
    /// Milliseconds a removed container's requests still in flight get to
    /// finish (after --unroute-delay-ms) before it is stopped: a scale-down
    /// or redeploy never cuts a request
    #[arg(long, default_value_t = 30_000)]
    pub drain_requests_ms: u64,
    /// Milliseconds in-flight requests get to finish after SIGTERM
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Threads serving HTTP (invocations, logs, metrics), each with its own
    /// runtime and connection pool to containers; a connection stays on
    /// the thread that got it. 0: one per CPU
    #[arg(long, default_value_t = 0)]
    pub serve_threads: usize,
    /// How often every container is checked against what it should be
    /// (repairs drift: a deleted veth, a flushed rules table, a dead
    /// svcprovider), in milliseconds
    #[arg(long, default_value_t = 30_000)]
    pub resync_ms: u64,
    /// Most containers reconciled at once
    #[arg(long, default_value_t = 32)]
    pub reconcile_concurrency: usize,
    /// Export spans (each invocation, each container start) over OTLP/HTTP
    /// to this collector (e.g. http://127.0.0.1:4318)
    #[arg(long, env = "BISMUTH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<bismuth_daemon::otel::Endpoint>,
    /// gVisor's runsc, for functions with `"isolation": "sandbox"`
    #[arg(long, default_value = "/usr/bin/runsc")]
    pub runsc: PathBuf,
    /// Remove every container this daemon runs (with its network,
    /// svcprovider and files) and its firewall table, then exit; bismuthd
    /// itself must be stopped. ZooKeeper is left as it is
    #[arg(long)]
    pub clean_up: bool,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub zk: ZkConfig,
    pub node_ip: Ipv4Addr,
    pub listen: SocketAddr,
    pub containerd: PathBuf,
    pub namespace: String,
    /// Names this daemon's host-wide objects (lock, network namespaces).
    pub instance: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pool: Pool,
    pub runner: PathBuf,
    pub runsc: PathBuf,
    pub svc: crate::svc::SvcConfig,
    pub egress: bool,
    pub registry: RegistryConfig,
    pub allow_file_repos: bool,
    pub exec_timeout: Duration,
    pub pids_limit: u32,
    pub log_max_bytes: u64,
    pub uid_base: u32,
    pub writable_max_bytes: u64,
    pub capacity: NodeCapacity,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    pub stop_grace: Duration,
    pub unroute_delay: Duration,
    pub drain_requests: Duration,
    pub shutdown_grace: Duration,
    pub serve_threads: usize,
    pub resync: Duration,
    pub reconcile_concurrency: usize,
    pub otlp_endpoint: Option<bismuth_daemon::otel::Endpoint>,
}

impl Args {
    /// Validates the flags and reads the files they name.
    pub fn config(&self) -> anyhow::Result<Config> {
        ensure!(
            !self.namespace.is_empty()
                && self
                    .namespace
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "--namespace must be letters, digits, '-', '_' or '.'"
        );
        ensure!(
            self.exec_timeout_ms > 0,
            "--exec-timeout-ms must be positive"
        );
        ensure!(self.pids_limit >= 8, "--pids-limit must be at least 8");
        ensure!(
            self.log_max_bytes >= crate::logwriter::MIN_MAX_BYTES,
            "--log-max-bytes must be at least {}",
            crate::logwriter::MIN_MAX_BYTES
        );
        ensure!(
            self.restart_backoff_ms > 0 && self.restart_backoff_max_ms >= self.restart_backoff_ms,
            "--restart-backoff-ms must be positive and at most --restart-backoff-max-ms"
        );
        ensure!(self.resync_ms >= 100, "--resync-ms must be at least 100");
        ensure!(
            self.reconcile_concurrency > 0,
            "--reconcile-concurrency must be positive"
        );
        let pool = Pool::parse(&self.container_net)
            .map_err(|e| anyhow::anyhow!("--container-net {}: {e}", self.container_net))?;
        crate::userns::check_range(self.uid_base, pool.capacity()).map_err(anyhow::Error::msg)?;
        ensure!(
            self.writable_max_bytes >= 1 << 20,
            "--writable-max-bytes must be at least 1048576 (1 MiB)"
        );

        // Paths end up as bind-mount sources and in child processes' argv,
        // which resolve relative paths against other directories: make them
        // absolute here.
        let runner = match &self.runner {
            Some(p) => absolute(p)?,
            None => std::env::current_exe()
                .context("cannot find bismuthd's own path; pass --runner")?
                .with_file_name("bismuth-runner"),
        };
        ensure!(
            runner.is_file(),
            "the runner binary {} does not exist (build it with scripts/build-runner.sh, or pass --runner)",
            runner.display()
        );
        ensure!(
            is_static_elf(&runner)?,
            "the runner binary {} is dynamically linked and would not start in images without its libc; \
             build it with scripts/build-runner.sh",
            runner.display()
        );

        let svcprovider = match &self.svcprovider {
            Some(p) => absolute(p)?,
            None => std::env::current_exe()
                .context("cannot find bismuthd's own path; pass --svcprovider")?
                .with_file_name("svcprovider"),
        };
        ensure!(
            svcprovider.is_file(),
            "the svcprovider binary {} does not exist (cargo build --profile small -p svcprovider, or pass --svcprovider)",
            svcprovider.display()
        );
        ensure!(
            self.svc_store.starts_with("sqlite:") || self.svc_store.starts_with("postgres"),
            "--svc-store must be sqlite:DIR or a postgres:// URL"
        );

        let mut registry = RegistryConfig {
            insecure: self
                .insecure_registries
                .iter()
                .cloned()
                .collect::<HashSet<_>>(),
            ..Default::default()
        };
        if let Some(path) = &self.registry_auth_file {
            let data = std::fs::read(path)
                .with_context(|| format!("cannot read --registry-auth-file {}", path.display()))?;
            registry
                .load_auth_file(&data)
                .map_err(|e| anyhow::anyhow!("--registry-auth-file {}: {e}", path.display()))?;
        }

        let cpu = match self.cpu {
            Some(c) => c,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        };
        ensure!(cpu > 0.0 && cpu.is_finite(), "--cpu must be positive");
        let memory = match self.memory {
            Some(m) => m,
            None => host_memory().saturating_sub(512 << 20),
        };
        ensure!(memory > 0, "--memory must be positive");

        Ok(Config {
            zk: bismuth_zk::ZkConfig {
                // A restart must not end the session: see alive.rs.
                detached: true,
                ..self.zookeeper.config()?
            },
            node_ip: self.node_ip,
            listen: self
                .listen
                .unwrap_or(SocketAddr::from((self.node_ip, 8001))),
            containerd: self.containerd.clone(),
            namespace: self.namespace.clone(),
            instance: instance_id(&self.containerd, &self.namespace),
            state_dir: absolute(&self.state_dir)?,
            run_dir: absolute(&self.run_dir)?,
            pool,
            runner,
            runsc: absolute(&self.runsc)?,
            svc: crate::svc::SvcConfig {
                binary: svcprovider,
                store: match self.svc_store.strip_prefix("sqlite:") {
                    Some(dir) => {
                        format!("sqlite:{}", absolute(std::path::Path::new(dir))?.display())
                    }
                    None => self.svc_store.clone(),
                },
                secret_key_file: self.secret_key_file.as_deref().map(absolute).transpose()?,
            },
            egress: self.egress,
            registry,
            allow_file_repos: self.allow_file_repos,
            exec_timeout: Duration::from_millis(self.exec_timeout_ms),
            pids_limit: self.pids_limit,
            log_max_bytes: self.log_max_bytes,
            uid_base: self.uid_base,
            writable_max_bytes: self.writable_max_bytes,
            capacity: NodeCapacity {
                cpu,
                memory,
                sandbox: self.runsc.is_file(),
            },
            restart_backoff: Duration::from_millis(self.restart_backoff_ms),
            restart_backoff_max: Duration::from_millis(self.restart_backoff_max_ms),
            stop_grace: Duration::from_millis(self.stop_grace_ms),
            unroute_delay: Duration::from_millis(self.unroute_delay_ms),
            drain_requests: Duration::from_millis(self.drain_requests_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            serve_threads: match self.serve_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            resync: Duration::from_millis(self.resync_ms),
            reconcile_concurrency: self.reconcile_concurrency,
            otlp_endpoint: self.otlp_endpoint.clone(),
        })
    }
}

/// Eight hex digits naming one (containerd socket, namespace) pair, the
/// scope of one bismuthd.
pub fn instance_id(socket: &std::path::Path, namespace: &str) -> String {
    let key = format!("{}\0{namespace}", socket.display());
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{:08x}", hash as u32)
}

/// `path` made absolute against the working directory (not resolving links).
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// MemTotal from /proc/meminfo, in bytes.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Whether an ELF executable has no program interpreter (is statically linked).
fn is_static_elf(path: &std::path::Path) -> anyhow::Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
    };
    ensure!(
        data.starts_with(b"\x7fELF") && data.get(4) == Some(&2),
        "{} is not a 64-bit ELF executable",
        path.display()
    );
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        anyhow::bail!("{} has a truncated ELF header", path.display());
    };
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).all(|i| u32_at(phoff + i * phentsize) != Some(PT_INTERP)))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{is_static_elf, Args};

    #[test]
    fn relative_paths_become_absolute() {
        // A path to /bin/busybox (static, so a valid runner) relative to the working directory.
        let up = std::env::current_dir().unwrap().components().count() - 1;
        let busybox = format!("{}bin/busybox", "../".repeat(up));
        let args = Args::try_parse_from([
            "bismuthd",
            "--node-ip",
            "10.0.0.5",
            "--runner",
            &busybox,
            "--svcprovider",
            &busybox,
            "--state-dir",
            "state",
            "--svc-store",
            "sqlite:svc",
        ])
        .unwrap();
        let cfg = args.config().unwrap();
        assert!(cfg.runner.is_absolute(), "{}", cfg.runner.display());
        assert!(cfg.svc.binary.is_absolute());
        assert!(cfg.state_dir.is_absolute());
        assert!(cfg.svc.store.starts_with("sqlite:/"), "{}", cfg.svc.store);
    }

    #[test]
    fn tells_static_from_dynamic_binaries() {
        // busybox-static is static; /bin/ls links against libc.
        assert!(is_static_elf(std::path::Path::new("/bin/busybox")).unwrap());
        assert!(!is_static_elf(std::path::Path::new("/bin/ls")).unwrap());
        assert!(is_static_elf(std::path::Path::new("/etc/hostname")).is_err());
    }
}
