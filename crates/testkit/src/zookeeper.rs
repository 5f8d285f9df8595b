//! A real standalone ZooKeeper server for one test.
//!
//! Started from the Debian package's jars (`/usr/share/java`) on a free
//! loopback port, with its data in a temporary directory. `restart` keeps or
//! wipes the data, which lets tests exercise connection loss and session expiry.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{die_with_parent, free_port};

/// Classpath of the Debian `zookeeper` package; override with `BISMUTH_ZK_CLASSPATH`.
const DEFAULT_CLASSPATH: &str = "/usr/share/java/*:/etc/zookeeper/conf";

/// A running ZooKeeper; stopped and its data removed on drop.
#[derive(Debug)]
pub struct ZooKeeper {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl ZooKeeper {
    /// Starts a server and waits until it serves sessions.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bismuth-zk-").tempdir()?;
        std::fs::create_dir(dir.path().join("data"))?;
        let mut last_err = None;
        // A free port can be taken between probing and binding; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            match spawn(dir.path(), port) {
                Ok(child) => {
                    return Ok(ZooKeeper {
                        child: Some(child),
                        dir,
                        port,
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("zookeeper did not start")))
    }

    /// `127.0.0.1:{port}`, for `--zookeeper`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file, for diagnosing a failed test.
    pub fn log_path(&self) -> PathBuf {
        log_path(self.dir.path())
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts on the same port. With `wipe`, the data directory is emptied
    /// first, so clients find their sessions expired and the tree empty.
    pub fn restart(&mut self, wipe: bool) -> anyhow::Result<()> {
        self.stop();
        if wipe {
            let data = self.dir.path().join("data");
            std::fs::remove_dir_all(&data)?;
            std::fs::create_dir(&data)?;
        }
        self.child = Some(spawn(self.dir.path(), self.port)?);
        Ok(())
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("zookeeper.log")
}

/// Starts java on `dir`'s config and waits until the server answers.
fn spawn(dir: &Path, port: u16) -> anyhow::Result<Child> {
    let cfg = dir.join("zoo.cfg");
    std::fs::write(&cfg, config(&dir.join("data"), port))?;
    let log = std::fs::File::create(log_path(dir))?;
    let classpath =
        std::env::var("BISMUTH_ZK_CLASSPATH").unwrap_or_else(|_| DEFAULT_CLASSPATH.into());
    let mut cmd = Command::new("java");
    cmd.args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .args(["-cp", &classpath])
        .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().context(
        "failed to run java for ZooKeeper (is the Debian 'zookeeper' package installed?)",
    )?;
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if serving(port) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "zookeeper exited with {status} on port {port}; log:\n{}",
                tail(&log_path(dir))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "zookeeper did not answer on port {port} within {timeout:?}; log:\n{}",
        tail(&log_path(dir))
    )
}

fn config(data: &Path, port: u16) -> String {
    format!(
        "tickTime=200\n\
         initLimit=10\n\
         syncLimit=5\n\
         dataDir={}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         maxClientCnxns=0\n\
         minSessionTimeout=400\n\
         maxSessionTimeout=60000\n\
         admin.enableServer=false\n\
         4lw.commands.whitelist=ruok,stat,srvr,cons\n\
         standaloneEnabled=true\n",
        data.display()
    )
}

/// Whether the server is serving sessions. `ruok` answers `imok` as soon as
/// the socket accepts, before the database is loaded; `srvr` reports "not
/// currently serving" until the server really is.
fn serving(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = String::new();
    s.write_all(b"srvr").is_ok()
        && s.read_to_string(&mut buf).is_ok()
        && buf.contains("Mode:")
        && !buf.contains("not currently serving")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
