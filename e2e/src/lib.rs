//! The end-to-end harness: the whole of Bismuth as real processes, as an
//! operator runs it. [`System::start`] starts a ZooKeeper and a containerd
//! from the test kit (own ports, sockets and temporary directories), sets up
//! the environment with the real `bismuthctl` (bootstrap, provision, image
//! import), and runs the built `bismuthd`, `api` and `bismuthfe` binaries on
//! free loopback ports; bismuthd starts a real `svcprovider` per container.
//! Tests then talk HTTP to the api and the frontend only, and look at
//! containerd with `ctr` to see what is really left.
//!
//! Dropping a [`System`] kills the daemons, the svcproviders, this
//! bismuthd's firewall table and network namespaces; the test kit's
//! containerd then kills the containers and unmounts their root
//! filesystems, so nothing outlives a test, passed or failed.
//!
//! Start reading at [`System::start`]; the tests are in `tests/system.rs`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use ::http::Method;
use anyhow::{bail, ensure, Context};
use bismuth_testkit::http::{self, Reply};
use bismuth_testkit::{container_net, die_with_parent, eventually, free_port, images, uid_base};
use bismuth_testkit::{Containerd, ZooKeeper};
use serde_json::Value;
use uuid::Uuid;

pub mod fleet;
pub mod load;
pub use fleet::Fleet;
pub use load::Load;

/// The node every test's bismuthd serves as.
pub const NODE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// containerd namespace bismuthd uses.
pub const NAMESPACE: &str = "bismuth";
/// ZooKeeper environment (chroot) of the tests.
pub const ENV: &str = "e2e";
/// First wait before a failed container restarts: long enough that a test
/// polling every 50 ms sees Failed before the restart.
pub const RESTART_BACKOFF_MS: u64 = 3_000;

/// The binaries the system is made of.
const BINARIES: &[&str] = &["bismuthd", "api", "bismuthfe", "svcprovider", "bismuthctl"];

/// One daemon of the system.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
    args: Vec<String>,
    port: u16,
}

/// Where the api and bismuthfe listen (on 127.0.0.1), with the calls tests
/// make to them; shared by [`System`] and [`Fleet`].
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub api_port: u16,
    pub fe_port: u16,
}

impl Endpoints {
    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn fe_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.fe_port)
    }

    /// Calls the api.
    pub async fn api(&self, method: Method, path: &str, body: &str) -> Reply {
        http::request(method, &self.api_url(path), &[], body.to_owned())
            .await
            .unwrap_or_else(|e| panic!("api call failed: {e:#}"))
    }

    /// `POST /function`; the new function's id.
    pub async fn create(&self, definition: &Value) -> Uuid {
        let reply = self
            .api(Method::POST, "/function", &definition.to_string())
            .await;
        assert_eq!(reply.status, 200, "create: {}", reply.text());
        reply.json()["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("create answered {}", reply.text()))
    }

    /// `GET /function/{id}`.
    pub async fn function(&self, id: Uuid) -> Value {
        let reply = self.api(Method::GET, &format!("/function/{id}"), "").await;
        assert_eq!(reply.status, 200, "get {id}: {}", reply.text());
        reply.json()
    }

    /// The function's backends as (container id, status).
    pub async fn backends(&self, id: Uuid) -> Vec<(Uuid, String)> {
        let f = self.function(id).await;
        f["backends"]
            .as_array()
            .map(|b| {
                b.iter()
                    .filter_map(|b| {
                        Some((
                            b["backend"]["container_id"].as_str()?.parse().ok()?,
                            b["status"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until some backend of the function has `status`; its container id.
    pub async fn wait_status(&self, id: Uuid, status: &str, timeout: Duration) -> Uuid {
        eventually(
            &format!("a backend of {id} to be {status}"),
            timeout,
            || async move {
                self.backends(id)
                    .await
                    .into_iter()
                    .find(|(_, s)| s == status)
                    .map(|(c, _)| c)
            },
        )
        .await
    }

    /// Waits until `n` nodes are alive in the api's view.
    pub async fn eventually_alive(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let url = self.api_url("/node");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = http::get(&url).await {
                let alive = r
                    .json()
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|n| n["alive"] == true).count());
                if alive >= n {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{n} nodes were not alive within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl std::ops::Deref for System {
    type Target = Endpoints;
    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

/// Extra flags for the daemons of a [`System`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags<'a> {
    pub bismuthd: &'a [&'a str],
    pub api: &'a [&'a str],
    pub bismuthfe: &'a [&'a str],
}

/// A running Bismuth: ZooKeeper, containerd, bismuthd, api, bismuthfe.
#[derive(Debug)]
pub struct System {
    pub zookeeper: ZooKeeper,
    pub containerd: Containerd,
    pub dir: tempfile::TempDir,
    /// bismuthd's port on the node; the api's and bismuthfe's (on 127.0.0.1)
    /// with the calls tests make, through `Deref`.
    pub bismuthd_port: u16,
    pub endpoints: Endpoints,
    /// Every daemon's `--otlp-endpoint`, if spans are exported.
    otlp_endpoint: Option<String>,
    daemons: Vec<Daemon>,
}

impl System {
    /// Starts everything and returns once every daemon answers `/healthz`
    /// and the node is alive.
    pub async fn start() -> anyhow::Result<System> {
        System::start_with(&[]).await
    }

    /// [`start`](Self::start) with extra flags for bismuthd.
    pub async fn start_with(bismuthd_args: &[&str]) -> anyhow::Result<System> {
        System::start_full(bismuthd_args, None).await
    }

    /// [`start`](Self::start) with every daemon exporting spans to `endpoint`.
    pub async fn start_exporting_to(endpoint: &str) -> anyhow::Result<System> {
        System::start_full(&[], Some(endpoint.to_owned())).await
    }

    /// [`start`](Self::start) with extra flags for each daemon.
    pub async fn start_flags(flags: Flags<'_>) -> anyhow::Result<System> {
        System::start_all(flags, None).await
    }

    async fn start_full(
        bismuthd_args: &[&str],
        otlp_endpoint: Option<String>,
    ) -> anyhow::Result<System> {
        let flags = Flags {
            bismuthd: bismuthd_args,
            ..Flags::default()
        };
        System::start_all(flags, otlp_endpoint).await
    }

    async fn start_all(flags: Flags<'_>, otlp_endpoint: Option<String>) -> anyhow::Result<System> {
        let bismuthd_args = flags.bismuthd;
        let bin = binaries()?;
        let zookeeper = ZooKeeper::start()?;
        let containerd = Containerd::start()?;
        let dir = tempfile::Builder::new().prefix("bismuth-e2e-").tempdir()?;
        let mut system = System {
            zookeeper,
            containerd,
            dir,
            bismuthd_port: free_port()?,
            endpoints: Endpoints {
                api_port: free_port()?,
                fe_port: free_port()?,
            },
            otlp_endpoint,
            daemons: Vec::new(),
        };
        let s = &mut system;

        // The operator's part, with the real CLI.
        s.ctl(&["bootstrap"])?;
        s.ctl(&["provision", &NODE.to_string()])?;
        let busybox = s.dir.path().join("busybox.tar");
        images::write_busybox_archive(&busybox)?;
        for archive in [busybox, python_archive()?] {
            let socket = s.containerd.socket();
            s.ctl(&[
                "image",
                "import",
                &archive.to_string_lossy(),
                "--containerd",
                &socket.to_string_lossy(),
            ])?;
        }
        let key = s.dir.path().join("cluster.key");
        let out = Command::new(bin.join("svcprovider"))
            .arg("keygen")
            .output()?;
        ensure!(out.status.success(), "svcprovider keygen failed");
        std::fs::write(&key, &out.stdout)?;

        let zk = s.zookeeper.connect_string();
        let store = format!("sqlite:{}", s.dir.path().join("svc").display());
        let common = |listen: String| -> Vec<String> {
            vec![
                "--zookeeper".into(),
                zk.clone(),
                "--zookeeper-env".into(),
                ENV.into(),
                "--listen".into(),
                listen,
            ]
        };
        let d = s.dir.path().to_owned();
        let mut args = common(format!("{NODE}:{}", s.bismuthd_port));
        args.extend(
            [
                "--node-ip",
                &NODE.to_string(),
                "--containerd",
                &s.containerd.socket().to_string_lossy(),
                "--namespace",
                NAMESPACE,
                "--state-dir",
                &d.join("state").to_string_lossy(),
                "--run-dir",
                &d.join("run").to_string_lossy(),
                "--container-net",
                &container_net(s.zookeeper.port()),
                "--uid-base",
                &uid_base(s.zookeeper.port()).to_string(),
                "--runner",
                &runner()?.to_string_lossy(),
                "--svcprovider",
                &bin.join("svcprovider").to_string_lossy(),
                "--svc-store",
                &store,
                "--secret-key-file",
                &key.to_string_lossy(),
                "--restart-backoff-ms",
                &RESTART_BACKOFF_MS.to_string(),
                "--stop-grace-ms",
                "2000",
                "--allow-file-repos",
            ]
            .map(String::from),
        );
        args.extend(bismuthd_args.iter().map(|a| a.to_string()));
        s.spawn("bismuthd", args, s.bismuthd_port).await?;

        let mut args = common(format!("127.0.0.1:{}", s.api_port));
        args.extend(
            [
                "--bismuthd-port",
                &s.bismuthd_port.to_string(),
                "--svc-store",
                &store,
                "--secret-key-file",
                &key.to_string_lossy(),
                "--redeploy-timeout-ms",
                "60000",
            ]
            .map(String::from),
        );
        args.extend(flags.api.iter().map(|a| a.to_string()));
        s.spawn("api", args, s.api_port).await?;

        let mut args = common(format!("127.0.0.1:{}", s.fe_port));
        args.extend(["--backend-port".into(), s.bismuthd_port.to_string()]);
        args.extend(flags.bismuthfe.iter().map(|a| a.to_string()));
        s.spawn("bismuthfe", args, s.fe_port).await?;

        // The node counts once bismuthd holds its liveness znode.
        let api = s.api_url("/node");
        let bearer = flags
            .api
            .windows(2)
            .find(|w| w[0] == "--auth-token")
            .map(|w| format!("Bearer {}", w[1]));
        eventually("the node to be alive", Duration::from_secs(30), || {
            let api = api.clone();
            let bearer = bearer.clone();
            async move {
                let headers: Vec<(&str, &str)> = bearer
                    .iter()
                    .map(|b| ("authorization", b.as_str()))
                    .collect();
                let nodes = http::request(Method::GET, &api, &headers, "")
                    .await
                    .ok()?
                    .json();
                nodes
                    .as_array()?
                    .iter()
                    .any(|n| n["alive"] == true)
                    .then_some(())
            }
        })
        .await;
        Ok(system)
    }

    /// Runs the built binary `name` with `args`, its output in `name.log`,
    /// and waits until `port` answers `/healthz`.
    async fn spawn(
        &mut self,
        name: &'static str,
        args: Vec<String>,
        port: u16,
    ) -> anyhow::Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut env = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            // Batches every 200 ms rather than 5 s: tests wait for them.
            env.push(("BISMUTH_OTLP_ENDPOINT", endpoint.as_str()));
            env.push(("OTEL_BSP_SCHEDULE_DELAY", "200"));
        }
        let child = start_daemon(name, &args, port, &log, &env).await?;
        self.daemons.push(Daemon {
            name,
            child,
            log,
            args,
            port,
        });
        Ok(())
    }

    /// Runs `bismuthctl` against this system's ZooKeeper; its stdout.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        bismuthctl(&self.zookeeper.connect_string(), args)
    }

    /// `ctr` in bismuthd's namespace; its stdout.
    pub fn ctr(&self, args: &[&str]) -> String {
        self.containerd
            .ctr(NAMESPACE, args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// What containerd still has of a container: container, task, snapshot.
    pub fn in_containerd(&self, cid: Uuid) -> Vec<&'static str> {
        let id = cid.to_string();
        let mut found = Vec::new();
        if self.ctr(&["containers", "ls", "-q"]).contains(&id) {
            found.push("container");
        }
        if self.ctr(&["tasks", "ls"]).contains(&id) {
            found.push("task");
        }
        if self
            .ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"])
            .contains(&id)
        {
            found.push("snapshot");
        }
        found
    }

    /// The host pid of a container's process.
    pub fn task_pid(&self, cid: Uuid) -> Option<u32> {
        self.containerd.task_pid(NAMESPACE, &cid.to_string())
    }

    /// This bismuthd's instance id (in its namespaces' and table's names).
    pub fn instance(&self) -> String {
        bismuthd::config::instance_id(&self.containerd.socket(), NAMESPACE)
    }

    /// The last lines of every daemon's log.
    /// The pid of daemon `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.daemons
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.child.id())
    }

    /// Stops daemon `name` with SIGTERM (as an upgrade would), waits for it
    /// to exit, and starts it again with the same flags.
    pub async fn restart(&mut self, name: &'static str) -> anyhow::Result<()> {
        let i = self
            .daemons
            .iter()
            .position(|d| d.name == name)
            .with_context(|| format!("no daemon {name}"))?;
        let mut d = self.daemons.remove(i);
        let _ = Command::new("kill")
            .args(["-TERM", &d.child.id().to_string()])
            .status();
        let status = d.child.wait()?;
        ensure!(status.success(), "{name} exited with {status} on SIGTERM");
        self.spawn(name, d.args, d.port).await
    }

    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} (last 40 lines) ---\n{}", d.name, tail(&d.log, 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for d in self.daemons.iter_mut().rev() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        // bismuthd's per-container svcproviders, firewall table and network
        // namespaces; the veths go with the namespaces, and the test kit's
        // containerd (dropped next) kills the containers.
        bismuth_testkit::kill_processes_mentioning(self.dir.path());
        remove_host_objects(&self.instance(), self.dir.path());
    }
}

/// What a killed bismuthd `instance` leaves on the host beyond containerd:
/// its firewall table, its containers' network namespaces (their veths
/// go with them) and their writable layers mounted below `dir`.
pub fn remove_host_objects(instance: &str, dir: &Path) {
    bismuth_testkit::detach_mounts_under(dir);
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", &format!("bismuth_{instance}")])
        .stderr(Stdio::null())
        .status();
    for ns in bismuthd::net::our_namespaces(instance) {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
}

/// Runs the built daemon `name` with `args` (and `env`), its output
/// appended to `log`, and waits until `127.0.0.1:{port}` answers `/healthz`.
pub(crate) async fn start_daemon(
    name: &str,
    args: &[String],
    port: u16,
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(binaries()?.join(name));
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start {name}"))?;
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..300 {
        if http::get(&url).await.is_ok_and(|r| r.status == 200) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited with {status}:\n{}", tail(log, 20));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("{name} did not answer /healthz within 30 s")
}

/// Runs `bismuthctl` against the ZooKeeper at `zookeeper`; its stdout, or
/// an error with its stderr.
pub(crate) fn bismuthctl(zookeeper: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binaries()?.join("bismuthctl"))
        .args(["--zookeeper", zookeeper])
        .args(["--zookeeper-env", ENV])
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "bismuthctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The workspace's root directory.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

/// The directory holding the built binaries (the test's own `target/{profile}`),
/// building them when one is missing. The README's test command builds them
/// all (`--workspace`); run `cargo build --bins` before running this crate's
/// tests alone after a change.
pub fn binaries() -> anyhow::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/{profile}/deps/system-… → target/{profile}
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_owned)
            .ok_or("cannot find the target directory")?;
        if BINARIES.iter().any(|b| !dir.join(b).exists()) {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(workspace()).args(["build", "--bins", "-q"]);
            for b in BINARIES {
                cmd.args(["-p", b]);
            }
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("cargo build --bins failed".into());
            }
        }
        Ok(dir)
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// The static runner of Executable-mode containers (scripts/build-runner.sh).
pub(crate) fn runner() -> anyhow::Result<PathBuf> {
    let path = workspace().join("target/runner/bismuth-runner");
    if !path.exists() {
        let status = Command::new(workspace().join("scripts/build-runner.sh"))
            .arg("debug")
            .status()?;
        ensure!(status.success(), "scripts/build-runner.sh failed");
    }
    Ok(path)
}

/// The Python test image archive (built once and cached by scripts/test-images.sh).
fn python_archive() -> anyhow::Result<PathBuf> {
    let out = Command::new(workspace().join("scripts/test-images.sh"))
        .arg("python")
        .output()?;
    ensure!(
        out.status.success(),
        "scripts/test-images.sh python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
