//! Each container's own svcprovider: started on the container's host-side
//! address, port 9000, before the container's process, with a fresh random
//! token (handed to the container as `BISMUTH_AUTH`); restarted if it dies;
//! stopped with the container. Its output goes to `svcprovider.log` beside
//! the container's log; its pid to a file, so a crashed bismuthd's orphans
//! are found and stopped at the next start.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bismuth_model::SvcQuotas;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::files::Files;
use crate::firewall::SVC_PORT;

/// How the svcprovider processes are run.
#[derive(Clone, Debug)]
pub struct SvcConfig {
    pub binary: PathBuf,
    pub store: String,
    pub secret_key_file: Option<PathBuf>,
}

/// A new random token: 32 bytes as hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one container's svcprovider serves.
#[derive(Clone, Debug)]
pub struct SvcSpec {
    pub group: Uuid,
    pub quotas: Option<SvcQuotas>,
    pub host_ip: Ipv4Addr,
    pub token: String,
}

/// Runs the svcprovider until `stop`, restarting it when it exits; returns
/// once the first one listens (or after 5 s, the reason in its log).
pub async fn start(cfg: SvcConfig, files: Files, spec: SvcSpec, stop: CancellationToken) {
    stop_orphan(&files);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(supervise(cfg, files, spec, stop, ready_tx));
    let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
}

async fn supervise(
    cfg: SvcConfig,
    files: Files,
    spec: SvcSpec,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(200);
    let addr = SocketAddr::from((spec.host_ip, SVC_PORT));
    loop {
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
        let mut cmd = Command::new(&cfg.binary);
        cmd.arg("serve")
            .args(["--group", &spec.group.to_string()])
            .args(["--store", &cfg.store])
            .args(["--listen", &addr.to_string()])
            .args(["--quotas", &quotas])
            .env("BISMUTH_AUTH", &spec.token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        if let Some(key) = &cfg.secret_key_file {
            cmd.arg("--secret-key-file").arg(key);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                files.log_line(&format!(
                    "cannot start svcprovider {}: {e}",
                    cfg.binary.display()
                ));
                return;
            }
        };
        if let Some(pid) = child.id() {
            let _ = std::fs::write(files.run.join("svcprovider.pid"), pid.to_string());
        }
        // Ready once it accepts connections.
        if let Some(tx) = ready.take() {
            let until = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < until {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = tx.send(());
            info!(%addr, "svcprovider listening");
        }
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = child.kill().await;
                let _ = std::fs::remove_file(files.run.join("svcprovider.pid"));
                return;
            }
            status = child.wait() => {
                let why = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                warn!(%why, "svcprovider exited; restarting");
                files.log_line(&format!("svcprovider exited ({why}); restarting in {} ms", delay.as_millis()));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Stops an svcprovider a previous bismuthd left for this container.
pub fn stop_orphan(files: &Files) {
    let pidfile = files.run.join("svcprovider.pid");
    let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("svcprovider") {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(pidfile);
}
