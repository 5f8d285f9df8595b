//! Each container's own svcprovider: a process on the container's host-side
//! address, port 9000, with a random token (the container's `BISMUTH_AUTH`).
//! It is *not* tied to bismuthd's life: it runs in its own process group,
//! its pid, start time and token are kept in `svcprovider.json` in the
//! container's root-only run directory, and the next bismuthd adopts it
//! (same process, same token, same data) so an upgrade of bismuthd never
//! cuts a function off its K/V, blobs and secrets. A dead one is started
//! again by the container's reconcile; one bismuthd started itself is also
//! watched, so its exit enqueues the container at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bismuth_controller::Controller;
use bismuth_model::SvcQuotas;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tracing::{info, warn};
use uuid::Uuid;

use crate::files::Files;
use crate::firewall::SVC_PORT;
use crate::reconcile::Key;

/// How long a new svcprovider gets to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the svcprovider processes are run.
#[derive(Clone, Debug)]
pub struct SvcConfig {
    pub binary: PathBuf,
    pub store: String,
    pub secret_key_file: Option<PathBuf>,
}

/// What one container's svcprovider serves.
#[derive(Clone, Debug)]
pub struct SvcSpec {
    pub group: Uuid,
    pub quotas: Option<SvcQuotas>,
    pub host_ip: Ipv4Addr,
}

/// Why an svcprovider could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SvcError {
    #[error("cannot start svcprovider {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("svcprovider exited before it listened on {addr} ({status}); see svcprovider.log")]
    Exited { addr: SocketAddr, status: String },
    #[error("svcprovider did not listen on {addr} within {READY_TIMEOUT:?}; see svcprovider.log")]
    NotListening { addr: SocketAddr },
    #[error("cannot write {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The record kept beside the container.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// 0 while none was started.
    pid: u32,
    /// The process's start time (clock ticks since boot), against pid reuse.
    start_time: u64,
    token: String,
}

/// Starts, adopts, checks and stops svcproviders.
#[derive(Clone, Debug)]
pub struct Supervisor {
    cfg: SvcConfig,
    ctl: Controller<Key>,
}

impl Supervisor {
    pub fn new(cfg: SvcConfig, ctl: Controller<Key>) -> Supervisor {
        Supervisor { cfg, ctl }
    }

    /// The container's token: the one recorded, else `fallback` (an older
    /// bismuthd's container, from its spec), else a new one; recorded.
    pub fn token(&self, files: &Files, fallback: Option<String>) -> Result<String, SvcError> {
        if let Some(s) = read_state(files) {
            return Ok(s.token);
        }
        let token = fallback.unwrap_or_else(new_token);
        write_state(
            files,
            &State {
                token: token.clone(),
                ..State::default()
            },
        )?;
        Ok(token)
    }

    /// The pid of the container's svcprovider if it runs.
    pub fn running_pid(&self, files: &Files) -> Option<u32> {
        let s = read_state(files)?;
        (s.pid != 0 && alive(s.pid, s.start_time)).then_some(s.pid)
    }

    /// Makes sure the container's svcprovider runs: adopts a live one,
    /// starts one otherwise and waits until it listens. Returns whether it
    /// had to start one.
    pub async fn ensure(&self, cid: Uuid, files: &Files, spec: &SvcSpec) -> Result<bool, SvcError> {
        let mut state = read_state(files).unwrap_or_default();
        if state.pid != 0 && alive(state.pid, state.start_time) {
            return Ok(false);
        }
        if state.token.is_empty() {
            state.token = new_token();
        }
        let addr = SocketAddr::from((spec.host_ip, SVC_PORT));
        let mut child = self.spawn(files, spec, &state.token, addr)?;
        state.pid = child.id().unwrap_or(0);
        state.start_time = start_time(state.pid).unwrap_or(0);
        write_state(files, &state)?;
        // Ready once it accepts connections.
        let until = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SvcError::Exited {
                    addr,
                    status: status.to_string(),
                });
            }
            if tokio::time::Instant::now() >= until {
                return Err(SvcError::NotListening { addr });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        info!(%addr, pid = state.pid, "svcprovider listening");
        // Reap it when it exits, and have the container looked at at once.
        let ctl = self.ctl.clone();
        let log = files.clone();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                warn!(container = %cid, %status, "svcprovider exited");
                log.log_line(&format!("svcprovider exited ({status}); starting it again"));
                ctl.enqueue(Key::Container(cid));
            }
        });
        Ok(true)
    }

    fn spawn(
        &self,
        files: &Files,
        spec: &SvcSpec,
        token: &str,
        addr: SocketAddr,
    ) -> Result<tokio::process::Child, SvcError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(files.root.join("svcprovider.log"));
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let quotas = spec
            .quotas
            .as_ref()
            .and_then(|q| serde_json::to_string(q).ok())
            .unwrap_or_else(|| "{}".into());
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.arg("serve")
            .args(["--group", &spec.group.to_string()])
            .args(["--store", &self.cfg.store])
            .args(["--listen", &addr.to_string()])
            .args(["--quotas", &quotas])
            .env("BISMUTH_AUTH", token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a signal to bismuthd's group (Ctrl-C,
            // a service manager stopping bismuthd) does not reach it.
            .process_group(0)
            .kill_on_drop(false);
        if let Some(key) = &self.cfg.secret_key_file {
            cmd.arg("--secret-key-file").arg(key);
        }
        cmd.spawn().map_err(|source| SvcError::Spawn {
            binary: self.cfg.binary.clone(),
            source,
        })
    }

    /// Stops the container's svcprovider (if it runs) and forgets its record.
    pub fn stop(&self, files: &Files) {
        if let Some(s) = read_state(files) {
            if s.pid != 0 && alive(s.pid, s.start_time) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(s.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(files.svc_state());
    }
}

/// A new random token: 32 bytes as hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_state(files: &Files) -> Option<State> {
    serde_json::from_slice(&std::fs::read(files.svc_state()).ok()?).ok()
}

fn write_state(files: &Files, state: &State) -> Result<(), SvcError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = files.svc_state();
    let tmp = path.with_extension("json.tmp");
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(state).unwrap_or_default())?;
        std::fs::rename(&tmp, &path)
    })();
    result.map_err(|source| SvcError::State { path, source })
}

/// Whether `pid` is still the svcprovider started at `start_time` (not a
/// zombie, not a reused pid).
fn alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state_ok = fields.first().is_some_and(|s| *s != "Z" && *s != "X");
    let started = fields.get(19).and_then(|s| s.parse::<u64>().ok());
    state_ok && (start_time == 0 || started == Some(start_time))
}

/// A process's start time in clock ticks since boot (`/proc/{pid}/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(alive(me, t));
        assert!(!alive(me, t + 1), "a reused pid must not count");
        assert!(!alive(u32::MAX - 1, 0));
    }
}
