//! A host for bismuthd integration tests: real ZooKeeper and containerd from
//! the test kit, the busybox image imported, the node provisioned, and
//! bismuthd itself as a child process on a free port with its own state
//! dirs and its own slice of container addresses. Dropping it kills the
//! daemon and removes every network it left.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bismuth_containerd::Containerd as CtdClient;
use bismuth_model::{ContainerState, FunctionDefinition, InvokeMode};
use bismuth_testkit::{eventually, free_port, images, Containerd, ZooKeeper};
use bismuth_zk::store::{backends, functions, nodes};
use bismuth_zk::{Zk, ZkConfig};
use uuid::Uuid;

pub const NS: &str = "bismuth";
pub const NODE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

pub struct Host {
    pub zk_server: ZooKeeper,
    pub ctd: Containerd,
    pub zk: Zk,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub extra_args: Vec<String>,
    /// Address bismuthd listens on (127.0.0.1 unless a test needs it reachable from containers).
    pub listen_ip: &'static str,
    daemon: Option<Child>,
    cids: std::sync::Mutex<Vec<Uuid>>,
}

/// The svcprovider binary of this build (built when missing).
pub fn svcprovider() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    // Next to the bismuthd under test (target/debug or target/release).
    let path = Path::new(env!("CARGO_BIN_EXE_bismuthd")).with_file_name("svcprovider");
    if !path.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root)
            .args(["build", "-q", "-p", "svcprovider"]);
        if path.parent().is_some_and(|d| d.ends_with("release")) {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "cargo build -p svcprovider failed"
        );
    }
    path
}

/// The static runner, built once (scripts/build-runner.sh).
pub fn runner() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let path = root.join("target/runner/bismuth-runner");
    if !path.exists() {
        let status = Command::new(root.join("scripts/build-runner.sh"))
            .arg("debug")
            .status()
            .unwrap();
        assert!(status.success(), "scripts/build-runner.sh failed");
    }
    path
}

impl Host {
    /// Everything up, busybox imported, daemon not started yet.
    pub async fn prepare() -> Host {
        let zk_server = ZooKeeper::start().unwrap();
        let ctd = Containerd::start().unwrap();
        let zk = Zk::connect(ZkConfig::new(&zk_server.connect_string(), "d").unwrap())
            .await
            .unwrap();
        zk.bootstrap().await.unwrap();
        nodes::provision(&zk, NODE).await.unwrap();
        let dir = tempfile::Builder::new()
            .prefix("bismuthd-test-")
            .tempdir()
            .unwrap();
        let archive = dir.path().join("busybox.tar");
        images::write_busybox_archive(&archive).unwrap();
        CtdClient::connect(&ctd.socket(), NS)
            .await
            .unwrap()
            .import_archive(&archive, None)
            .await
            .unwrap();
        Host {
            zk_server,
            ctd,
            zk,
            port: free_port().unwrap(),
            dir,
            extra_args: Vec::new(),
            listen_ip: "127.0.0.1",
            daemon: None,
            cids: Default::default(),
        }
    }

    /// Imports an image archive into this host's containerd.
    pub async fn import(&self, archive: &Path) {
        CtdClient::connect(&self.ctd.socket(), NS)
            .await
            .unwrap()
            .import_archive(archive, None)
            .await
            .unwrap();
    }

    /// [`prepare`](Self::prepare) and start the daemon.
    pub async fn start() -> Host {
        let mut h = Host::prepare().await;
        h.start_daemon().await;
        h
    }

    /// This test's own /26 of container addresses.
    pub fn container_net(&self) -> String {
        bismuth_testkit::container_net(self.zk_server.port())
    }

    pub fn command(&self) -> Command {
        self.command_on(self.port)
    }

    pub fn command_on(&self, port: u16) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bismuthd"));
        cmd.args(["--zookeeper", &self.zk_server.connect_string()])
            .args(["--zookeeper-env", "d"])
            .args(["--node-ip", &NODE.to_string()])
            .args(["--listen", &format!("{}:{port}", self.listen_ip)])
            .arg("--containerd")
            .arg(self.ctd.socket())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--run-dir")
            .arg(self.dir.path().join("run"))
            .args(["--container-net", &self.container_net()])
            .args([
                "--uid-base",
                &bismuth_testkit::uid_base(self.zk_server.port()).to_string(),
            ])
            .arg("--runner")
            .arg(runner())
            .args(self.default_unless_given("--restart-backoff-ms", "500"))
            .args(self.default_unless_given("--stop-grace-ms", "2000"))
            .arg("--allow-file-repos")
            .arg("--svcprovider")
            .arg(svcprovider())
            .arg("--svc-store")
            .arg(format!("sqlite:{}", self.dir.path().join("svc").display()))
            .args(&self.extra_args)
            .env("RUST_LOG", "bismuthd=debug,info")
            .stdin(Stdio::null());
        cmd
    }

    /// `[flag, value]` unless the test passes its own `flag` in `extra_args`.
    fn default_unless_given(&self, flag: &'static str, value: &'static str) -> Vec<&'static str> {
        if self.extra_args.iter().any(|a| a == flag) {
            vec![]
        } else {
            vec![flag, value]
        }
    }

    pub async fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bismuthd.log"))
            .unwrap();
        let child = self
            .command()
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let url = self.url("/healthz");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !http_get(&url).await.is_ok_and(|(s, _)| s == 200) {
            assert!(
                std::time::Instant::now() < deadline,
                "bismuthd did not answer /healthz within 30 s:\n{}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop_daemon(&mut self) -> std::process::ExitStatus {
        let mut c = self.daemon.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bismuthd.log")).unwrap_or_default()
    }

    /// The daemon's instance id (in its network namespaces' names).
    pub fn instance(&self) -> String {
        bismuthd::config::instance_id(&self.ctd.socket(), NS)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Creates a function and one container of it on this node.
    pub async fn deploy(&self, def: &FunctionDefinition) -> (Uuid, Uuid) {
        let fid = functions::create_function(&self.zk, def).await.unwrap();
        let cid = backends::add_backend(&self.zk, fid, NODE).await.unwrap();
        self.cids.lock().unwrap().push(cid);
        (fid, cid)
    }

    pub async fn state(&self, cid: Uuid) -> Option<ContainerState> {
        backends::container_state(&self.zk, NODE, cid)
            .await
            .unwrap()
    }

    pub async fn wait_state(&self, cid: Uuid, want: ContainerState, timeout: Duration) {
        eventually(&format!("{cid} to be {want:?}"), timeout, || async move {
            (self.state(cid).await == Some(want)).then_some(())
        })
        .await;
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctd.ctr(NS, args).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILLs a container's process (a crash); returns its pid.
    pub fn kill_task(&self, cid: Uuid) -> u32 {
        let pid = self.task_pid(cid).expect("a running task");
        assert!(Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        pid
    }

    /// The pid of a container's process, from `ctr tasks ls`.
    pub fn task_pid(&self, cid: Uuid) -> Option<u32> {
        self.ctd.task_pid(NS, &cid.to_string())
    }

    /// The pid of a container's svcprovider, from its record.
    pub fn svc_pid(&self, cid: Uuid) -> Option<u32> {
        let path = self
            .dir
            .path()
            .join(format!("run/containers/{cid}/svcprovider.json"));
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        record["pid"].as_u64().map(|p| p as u32)
    }

    /// A container's svcprovider token and address, from its records.
    pub fn svc_endpoint(&self, cid: Uuid) -> (String, String) {
        let d = self.dir.path();
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.join(format!("run/containers/{cid}/svcprovider.json"))).unwrap(),
        )
        .unwrap();
        let hosts =
            std::fs::read_to_string(d.join(format!("state/containers/{cid}/etc/hosts"))).unwrap();
        let ip = hosts
            .lines()
            .find(|l| l.ends_with("bismuth-svc"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_owned();
        (
            record["token"].as_str().unwrap().to_owned(),
            format!("http://{ip}:9000"),
        )
    }

    /// K/V through a container's svcprovider, from the host: GET when
    /// `value` is None, else POST it. Status and body.
    pub async fn kv(&self, cid: Uuid, key: &str, value: Option<&str>) -> (u16, String) {
        let (token, base) = self.svc_endpoint(cid);
        let url = format!("{base}/kv/v1/{key}");
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(match value {
                Some(v) => vec!["--data-binary".to_owned(), v.to_owned()],
                None => vec![],
            })
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// svcprovider processes of this host's daemon.
    pub fn svcproviders(&self) -> Vec<u32> {
        bismuth_testkit::processes_mentioning(&self.dir.path().join("svc"))
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "svcprovider")
            })
            .collect()
    }

    /// Host-side veths of this host's containers.
    pub fn veths(&self) -> usize {
        let ids = self.cids.lock().unwrap().clone();
        ids.iter()
            .filter(|c| {
                let link = bismuthd::net::names(&self.instance(), **c).1;
                Path::new("/sys/class/net").join(link).exists()
            })
            .count()
    }

    /// bismuthd's /healthz as JSON.
    pub async fn health(&self) -> serde_json::Value {
        let (_, body) = http_get(&self.url("/healthz")).await.unwrap();
        serde_json::from_str(&body).unwrap()
    }

    pub fn log_path(&self, cid: Uuid) -> PathBuf {
        self.dir.path().join(format!("state/containers/{cid}/log"))
    }

    /// What of a container is still on the host (empty when nothing leaked).
    pub fn leftovers(&self, cid: Uuid) -> Vec<String> {
        let id = cid.to_string();
        let mut found = Vec::new();
        if self.ctr(&["containers", "ls", "-q"]).contains(&id) {
            found.push("container".into());
        }
        if self.ctr(&["tasks", "ls"]).contains(&id) {
            found.push("task".into());
        }
        if self
            .ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"])
            .contains(&id)
        {
            found.push("snapshot".into());
        }
        let (netns, link) = bismuthd::net::names(&self.instance(), cid);
        if Path::new("/run/netns").join(&netns).exists() {
            found.push(format!("netns {netns}"));
        }
        if Command::new("ip")
            .args(["link", "show", &link])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            found.push(format!("veth {link}"));
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if mounts.contains(&id) {
            found.push("mount".into());
        }
        if self
            .dir
            .path()
            .join(format!("state/containers/{id}"))
            .exists()
        {
            found.push("state dir".into());
        }
        if self
            .dir
            .path()
            .join(format!("run/containers/{id}"))
            .exists()
        {
            found.push("run dir".into());
        }
        found
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_daemon();
        // BISMUTH_KEEP_LOG=PATH keeps the daemon's log (benchmarks, debugging).
        if let Ok(keep) = std::env::var("BISMUTH_KEEP_LOG") {
            let _ = std::fs::write(keep, self.daemon_log());
        }
        if std::thread::panicking() {
            let log = self.daemon_log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- bismuthd log (last 60 lines) ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        // The test kit's containerd kills the tasks; networks, rules and
        // svcproviders are ours.
        let _ = Command::new("nft")
            .args([
                "delete",
                "table",
                "inet",
                &format!("bismuth_{}", self.instance()),
            ])
            .stderr(Stdio::null())
            .status();
        bismuth_testkit::kill_processes_mentioning(self.dir.path());
        bismuth_testkit::detach_mounts_under(self.dir.path());
        for cid in self.cids.lock().unwrap().iter() {
            let (netns, link) = bismuthd::net::names(&self.instance(), *cid);
            let _ = Command::new("ip")
                .args(["link", "del", &link])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", &netns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A busybox function definition.
pub fn busybox(mode: InvokeMode) -> FunctionDefinition {
    FunctionDefinition {
        image: images::BUSYBOX_REF.into(),
        repo: None,
        svc_group_id: None,
        cpu: 0.5,
        memory: 64 << 20,
        svc_quotas: None,
        invoke_mode: mode,
        max_instances: 1,
        min_instances: None,
        concurrency: None,
        idle_timeout: None,
        isolation: None,
        routes: vec![],
    }
}

pub fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The Python test image (built and cached by scripts/test-images.sh).
pub fn python_archive() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let out = Command::new(root.join("scripts/test-images.sh"))
        .arg("python")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A git repository with one commit on branch `main`.
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        "init",
    ]);
    format!("file://{}", dir.display())
}

/// GET → (status, body).
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    http_request("GET", url, "").await.map(|(s, _, b)| (s, b))
}

/// A request with curl-like simplicity → (status, headers, body).
pub async fn http_request(
    method: &str,
    url: &str,
    body: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let reply = bismuth_testkit::http::request(method, url, &[], body.to_owned())
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok((reply.status.as_u16(), reply.headers.clone(), reply.text()))
}
