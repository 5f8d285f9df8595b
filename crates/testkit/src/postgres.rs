//! A real PostgreSQL server for one test, from the Debian `postgresql`
//! package: `initdb` into a temporary directory, then `postgres` on a free
//! loopback port with trust authentication. PostgreSQL refuses to run as
//! root, so as root both run as the `postgres` system user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{die_with_parent, free_port};

/// A running PostgreSQL; stopped and its data removed on drop.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    /// Initializes a cluster and starts it; waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("bismuth-pg-").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let as_root = is_root();
        if as_root {
            chown_to_postgres(dir.path())?;
            chown_to_postgres(&data)?;
        }
        let out = user_command(as_root, &bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "bismuth", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .context("failed to run initdb (is the Debian 'postgresql' package installed?)")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if as_root {
            chown_to_postgres(&dir.path().join("postgres.log"))?;
        }
        let mut cmd = user_command(as_root, &bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("failed to start postgres")?;
        let mut pg = Postgres {
            child: Some(child),
            dir,
            port,
        };
        pg.wait_ready(&bin, Duration::from_secs(30))?;
        Ok(pg)
    }

    /// A `postgres://` URL for the `postgres` database as superuser `bismuth`.
    pub fn url(&self) -> String {
        format!("postgres://bismuth@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn wait_ready(&mut self, bin: &Path, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = Command::new(bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "bismuth",
                    "-q",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "postgres exited with {status}: {}",
                        std::fs::read_to_string(self.log_path()).unwrap_or_default()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("postgres did not accept connections within {timeout:?}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn user_command(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()?;
    anyhow::ensure!(status.success(), "chown postgres {} failed", path.display());
    Ok(())
}
