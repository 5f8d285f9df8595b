//! A container's files on the host: `{state}/containers/{cid}/` holds its
//! log, the `/etc` files bound into it and its repository clone (in
//! `layer/repo`, a read-only layer of its root filesystem);
//! `{run}/containers/{cid}/` (root's, not listable) holds its svcprovider's
//! state, its writable layer (`writable/`, see `rootfs`), and its `runner/`
//! subdirectory, the only one shared with the container (the runner's
//! socket, bound at `/.bismuth/run`). Everything the container can write is
//! treated as hostile: the socket is opened without following links and
//! must be a socket ([`connect_runner`]). What the container must own is
//! owned by its user namespace's ids ([`IdMap`]).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bismuth_model::GitRepo;
use tokio::process::Command;
use uuid::Uuid;

use crate::spec::{GID, UID};
use crate::userns::IdMap;

/// How long a repository clone may take.
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

/// Paths of one container's files.
#[derive(Clone, Debug)]
pub struct Files {
    pub root: PathBuf,
    pub run: PathBuf,
}

impl Files {
    pub fn new(state_dir: &Path, run_dir: &Path, cid: Uuid) -> Files {
        Files {
            root: state_dir.join("containers").join(cid.to_string()),
            run: run_dir.join("containers").join(cid.to_string()),
        }
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// The repository's layer of the root filesystem: `repo/` in it is
    /// the clone, `/repo` inside.
    pub fn layer(&self) -> PathBuf {
        self.root.join("layer")
    }

    pub fn repo(&self) -> PathBuf {
        self.layer().join("repo")
    }

    /// Where the container's writable layer (a tmpfs) is mounted.
    pub fn writable(&self) -> PathBuf {
        self.run.join("writable")
    }

    /// The directory shared with the container for the runner's socket.
    pub fn runner_dir(&self) -> PathBuf {
        self.run.join("runner")
    }

    pub fn runner_socket(&self) -> PathBuf {
        self.runner_dir().join("runner.sock")
    }

    /// The svcprovider's pid, start time and token (root only).
    pub fn svc_state(&self) -> PathBuf {
        self.run.join("svcprovider.json")
    }

    /// Whether [`Files::create_dirs`] has run (the log exists).
    pub fn exist(&self) -> bool {
        self.log().exists() && self.runner_dir().is_dir()
    }

    /// Creates the directories and the log file (kept across restarts of the container).
    pub fn create_dirs(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.etc())?;
        std::fs::create_dir_all(&self.run)?;
        // Searchable, so the container's runtime (as the container's root)
        // reaches the runner directory; not listable.
        std::fs::set_permissions(&self.run, std::fs::Permissions::from_mode(0o711))?;
        std::fs::create_dir_all(self.runner_dir())?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        Ok(())
    }

    /// Gives the runner directory to the container's user and its `/etc`
    /// files to its root (read-only inside either way).
    pub fn own(&self, ids: IdMap) -> std::io::Result<()> {
        use std::os::unix::fs::chown;
        chown(self.runner_dir(), Some(ids.host(UID)), Some(ids.host(GID)))?;
        for file in crate::spec::ETC_FILES {
            chown(self.etc().join(file), Some(ids.host(0)), Some(ids.host(0)))?;
        }
        Ok(())
    }

    /// Writes `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
    pub fn write_etc(
        &self,
        hostname: &str,
        container_ip: Ipv4Addr,
        host_ip: Ipv4Addr,
    ) -> std::io::Result<()> {
        let etc = self.etc();
        std::fs::write(
            etc.join("hosts"),
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 {container_ip}\t{hostname}\n{host_ip}\tbismuth-svc\n"
            ),
        )?;
        std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
        std::fs::write(etc.join("resolv.conf"), resolv_conf())?;
        Ok(())
    }

    /// Clones `repo` into the repository directory (shallow, one branch),
    /// owned by the function's user. A clone left by an earlier start is reused.
    pub async fn clone_repo(&self, repo: &GitRepo, ids: IdMap) -> Result<(), String> {
        let dest = self.repo();
        if dest.join(".git").is_dir() {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&dest);
        let mut cmd = Command::new("git");
        cmd.args([
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--single-branch",
            "--branch",
        ])
        .arg(repo.branch())
        .arg("--")
        .arg(repo.url())
        .arg(&dest)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
        let out = tokio::time::timeout(CLONE_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("git clone of {} took over {CLONE_TIMEOUT:?}", repo.url()))?
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(format!(
                "git clone of {} (branch {}) failed: {}",
                repo.url(),
                repo.branch(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        chown_tree(&dest, ids.host(UID), ids.host(GID))
            .map_err(|e| format!("chown of the clone failed: {e}"))
    }

    /// Appends a line from bismuthd to the container's log.
    pub fn log_line(&self, line: &str) {
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .and_then(|mut f| writeln!(f, "[bismuthd] {line}"));
        if let Err(e) = result {
            tracing::warn!(path = %self.log().display(), error = %e, "cannot write to a container log");
        }
    }

    /// Removes everything (the writable layer unmounted first).
    pub fn remove(&self) {
        crate::rootfs::unmount(self);
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// Connects to a container's runner socket without trusting the path: the
/// directory is the container's to write, so the last component is opened
/// with `O_PATH | O_NOFOLLOW` (a symlink planted there fails), checked to be
/// a socket, and connected to through `/proc/self/fd` (no second lookup a
/// swap could race).
pub async fn connect_runner(path: &Path) -> std::io::Result<tokio::net::UnixStream> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    if !handle.metadata()?.file_type().is_socket() {
        return Err(std::io::Error::other(format!(
            "{} is not a socket",
            path.display()
        )));
    }
    let via = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let stream = tokio::net::UnixStream::connect(&via).await;
    drop(handle);
    stream
}

/// The host's nameservers minus loopback ones (unreachable from a container).
fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    for line in host.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("nameserver") {
            let loopback = addr
                .trim()
                .parse::<std::net::IpAddr>()
                .map_or(true, |a| a.is_loopback());
            if loopback {
                continue;
            }
        }
        if t.starts_with("nameserver") || t.starts_with("search") || t.starts_with("options") {
            out.push_str(t);
            out.push('\n');
        }
    }
    out
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
