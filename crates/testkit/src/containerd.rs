//! A real containerd for one test: its own root, state, socket and config
//! in a temporary directory (the CRI plugin off). Dropping it kills every
//! task it ran, containerd and its shims, and unmounts what it mounted, so
//! nothing outlives the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{die_with_parent, kill_processes_mentioning};

/// A running containerd; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The network namespace (under /run/netns) it runs in, if not this one.
    netns: Option<String>,
}

impl Containerd {
    /// Starts containerd and waits until it answers `ctr version`.
    pub fn start() -> anyhow::Result<Self> {
        Containerd::start_in(None)
    }

    /// [`start`](Self::start) inside network namespace `netns` (a host of a
    /// simulated fleet); its shims and containers' processes start there too.
    pub fn start_in_netns(netns: &str) -> anyhow::Result<Self> {
        Containerd::start_in(Some(netns.to_owned()))
    }

    fn start_in(netns: Option<String>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bismuth-ctd-").tempdir()?;
        let d = dir.path();
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{root}\"\n\
                 state = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n\
                 [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n\
                 [metrics]\n  address = \"\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("containerd.sock").display(),
            ),
        )?;
        let mut ctd = Containerd {
            child: None,
            dir,
            netns,
        };
        ctd.spawn()?;
        Ok(ctd)
    }

    /// Runs containerd on this directory's config and waits until it answers.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))?;
        let mut cmd = match &self.netns {
            // Only the network namespace: mounts stay in this one.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        self.child =
            Some(cmd.spawn().context(
                "failed to run containerd (is the Debian 'containerd' package installed?)",
            )?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .ctr("default", &["version"])
                .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("containerd exited with {status}: {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer within 30 s: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills containerd alone (SIGKILL, like a crash: the shims and the
    /// containers keep running) and starts it again on the same root, state
    /// and socket.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.crash();
        self.revive()
    }

    /// Kills containerd alone (SIGKILL); shims and containers keep running.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts containerd again after [`Containerd::crash`].
    pub fn revive(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    /// The gRPC socket, for `--containerd`.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The directory holding root, state and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `ctr --address SOCKET --namespace NS ARGS…`.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> std::io::Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .output()
    }

    /// The host pid of container `id`'s task, from `ctr tasks ls`.
    pub fn task_pid(&self, namespace: &str, id: &str) -> Option<u32> {
        let out = self.ctr(namespace, &["tasks", "ls"]).ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills every task in every namespace, then containerd and its shims,
    /// then unmounts anything left under the directory.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            let stdout = |o: std::io::Result<Output>| {
                o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            };
            for ns in stdout(self.ctr("default", &["namespaces", "ls", "-q"])).lines() {
                for task in stdout(self.ctr(ns, &["tasks", "ls", "-q"])).lines() {
                    let _ = self.ctr(ns, &["tasks", "kill", "-s", "SIGKILL", task]);
                    let _ = self.ctr(ns, &["tasks", "delete", "--force", task]);
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_processes_mentioning(&self.socket());
        unmount_below(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}
