//! A real ZooKeeper for one test: a standalone server ([`ZooKeeper`]) or a
//! three-server ensemble ([`ZkEnsemble`]).
//!
//! Started from the Debian package's jars (`/usr/share/java`) on free ports,
//! with their data in a temporary directory. `restart` keeps or wipes the
//! data, which lets tests exercise connection loss and session expiry; an
//! ensemble's servers are killed and started one by one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
            let server = Server::standalone(dir.path(), port);
            match server
                .spawn()
                .and_then(|child| wait_serving(&server, child, Duration::from_secs(30)))
            {
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
        let server = Server::standalone(self.dir.path(), self.port);
        let child = server.spawn()?;
        self.child = Some(wait_serving(&server, child, Duration::from_secs(30))?);
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

/// One server's place: its directory, client address and (in an ensemble)
/// its id and every member's ports.
#[derive(Clone, Debug)]
struct Server {
    dir: PathBuf,
    client: SocketAddr,
    /// `(myid, [(peer port, election port)] of every member)`.
    ensemble: Option<(usize, Vec<(u16, u16)>)>,
}

impl Server {
    fn standalone(dir: &Path, port: u16) -> Server {
        Server {
            dir: dir.to_owned(),
            client: SocketAddr::from(([127, 0, 0, 1], port)),
            ensemble: None,
        }
    }

    /// Writes the config and starts java; does not wait.
    fn spawn(&self) -> anyhow::Result<Child> {
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data)?;
        let mut cfg = format!(
            "tickTime=200\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress={}\n\
             maxClientCnxns=0\n\
             minSessionTimeout=400\n\
             maxSessionTimeout=60000\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,stat,srvr,cons\n",
            data.display(),
            self.client.port(),
            self.client.ip(),
        );
        match &self.ensemble {
            None => cfg.push_str("standaloneEnabled=true\n"),
            Some((id, members)) => {
                std::fs::write(data.join("myid"), format!("{id}\n"))?;
                cfg.push_str("standaloneEnabled=false\n");
                for (i, (peer, election)) in members.iter().enumerate() {
                    cfg.push_str(&format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1));
                }
            }
        }
        let file = self.dir.join("zoo.cfg");
        std::fs::write(&file, cfg)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&self.dir))?;
        let classpath =
            std::env::var("BISMUTH_ZK_CLASSPATH").unwrap_or_else(|_| DEFAULT_CLASSPATH.into());
        let mut cmd = Command::new("java");
        cmd.args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .args(["-cp", &classpath])
            .arg(if self.ensemble.is_some() {
                "org.apache.zookeeper.server.quorum.QuorumPeerMain"
            } else {
                "org.apache.zookeeper.server.ZooKeeperServerMain"
            })
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        cmd.spawn().context(
            "failed to run java for ZooKeeper (is the Debian 'zookeeper' package installed?)",
        )
    }
}

/// Waits until `child` serves sessions; kills it and says why otherwise.
fn wait_serving(server: &Server, mut child: Child, timeout: Duration) -> anyhow::Result<Child> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if serving(server.client) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "zookeeper exited with {status} on {}; log:\n{}",
                server.client,
                tail(&log_path(&server.dir))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "zookeeper did not serve on {} within {timeout:?}; log:\n{}",
        server.client,
        tail(&log_path(&server.dir))
    )
}

/// A ZooKeeper ensemble (three servers make a quorum of two); every server
/// is stopped and its data removed on drop.
#[derive(Debug)]
pub struct ZkEnsemble {
    servers: Vec<(Server, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl ZkEnsemble {
    /// Starts `n` servers whose clients connect on `client_ip` (an address of
    /// this machine: loopback, or a bridge that network namespaces reach)
    /// and waits until every one serves.
    pub fn start(n: usize, client_ip: std::net::Ipv4Addr) -> anyhow::Result<ZkEnsemble> {
        let dir = tempfile::Builder::new().prefix("bismuth-zks-").tempdir()?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push((free_port()?, free_port()?));
        }
        let mut servers = Vec::with_capacity(n);
        for id in 1..=n {
            let server = Server {
                dir: dir.path().join(format!("zk{id}")),
                client: SocketAddr::from((client_ip, free_port()?)),
                ensemble: Some((id, members.clone())),
            };
            std::fs::create_dir_all(&server.dir)?;
            let child = server.spawn()?;
            servers.push((server, Some(child)));
        }
        let mut ensemble = ZkEnsemble { servers, _dir: dir };
        for i in 0..n {
            ensemble.wait(i)?;
        }
        Ok(ensemble)
    }

    fn wait(&mut self, i: usize) -> anyhow::Result<()> {
        let (server, child) = &mut self.servers[i];
        if let Some(c) = child.take() {
            *child = Some(wait_serving(server, c, Duration::from_secs(60))?);
        }
        Ok(())
    }

    /// `host:port,host:port,…`, for `--zookeeper`.
    pub fn connect_string(&self) -> String {
        self.servers
            .iter()
            .map(|(s, _)| s.client.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `k` (0-based) outright.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut child) = self.servers[k].1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `k` again and waits until it serves (it rejoins the quorum).
    pub fn start_server(&mut self, k: usize) -> anyhow::Result<()> {
        if self.servers[k].1.is_none() {
            let child = self.servers[k].0.spawn()?;
            self.servers[k].1 = Some(child);
            self.wait(k)?;
        }
        Ok(())
    }

    /// Server `k`'s log file.
    pub fn log_path(&self, k: usize) -> PathBuf {
        log_path(&self.servers[k].0.dir)
    }
}

impl Drop for ZkEnsemble {
    fn drop(&mut self) {
        for k in 0..self.servers.len() {
            self.kill(k);
        }
    }
}

/// Whether the server is serving sessions. `ruok` answers `imok` as soon as
/// the socket accepts, before the database is loaded; `srvr` reports "not
/// currently serving" until the server really is.
fn serving(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
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
