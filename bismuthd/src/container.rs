//! One container's life, as a task of its own (so a slow pull or stop never
//! holds up another container): set up its function, files and network;
//! start it (or adopt it after a bismuthd restart); report Starting, Running
//! when it serves, Failed when its process exits; restart it in place with
//! exponential backoff; and, once ZooKeeper no longer wants it, remove
//! everything it had.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bismuth_model::{paths, ContainerRecord, ContainerState, InvokeMode};
use bismuth_zk::store::functions::get_function;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::node::{Adopted, Exit, Handle, Node, Target};
use crate::runtime::{LABEL_FUNCTION, LABEL_SLOT};
use crate::spec::{self, SpecInput};

/// A container that ran this long before failing starts over at the first backoff step.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often readiness is probed while a container starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// How an attempt to run the container ended.
enum Ended {
    /// The process exited with this status.
    Exited(u32),
    /// It could not be started.
    Error(String),
}

/// The actor: runs until the handle's stop token fires, then tears down.
pub async fn run(
    node: Arc<Node>,
    h: Arc<Handle>,
    mut exits: mpsc::UnboundedReceiver<Exit>,
    mut adopted: Option<Adopted>,
) {
    let cfg = &node.cfg;
    let mut delay = cfg.restart_backoff;
    let mut target: Option<Arc<Target>> = None;
    loop {
        let mut running_since = None;
        let attempt = async {
            let t = match &target {
                Some(t) => Arc::clone(t),
                None => {
                    let t = prepare(&node, &h, adopted.as_ref())
                        .await
                        .map_err(Ended::Error)?;
                    target = Some(Arc::clone(&t));
                    t
                }
            };
            match adopted.take() {
                Some(a) => info!(pid = a.pid, "adopted a running container"),
                None => {
                    node.set_state(&h, ContainerState::Starting);
                    start(&node, &h, &t).await.map_err(Ended::Error)?;
                }
            }
            wait_ready(&node, &h, &t, &mut exits).await?;
            node.set_state(&h, ContainerState::Running);
            running_since = Some(Instant::now());
            info!("running");
            Err::<(), Ended>(Ended::Exited(next_exit(&h, &mut exits).await))
        };
        let ended = tokio::select! {
            _ = h.stop.cancelled() => break,
            r = attempt => r.err(),
        };
        let why = match ended {
            Some(Ended::Exited(status)) => format!("the process {}", describe_exit(status)),
            Some(Ended::Error(e)) => e,
            None => "stopped".into(),
        };
        if running_since.is_some_and(|t| t.elapsed() >= HEALTHY_RUN) {
            delay = cfg.restart_backoff;
        }
        warn!(reason = %why, retry_in_ms = delay.as_millis() as u64, "container failed");
        h.files.log_line(&format!(
            "failed: {why}; restarting in {} ms",
            delay.as_millis()
        ));
        h.pid.store(0, Ordering::SeqCst);
        node.set_state(&h, ContainerState::Failed);
        tokio::select! {
            _ = h.stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(cfg.restart_backoff_max);
    }
    teardown(&node, &h).await;
}

/// Reads the container's function, allocates and creates its network,
/// writes its files and clones its repository.
async fn prepare(
    node: &Node,
    h: &Handle,
    adopted: Option<&Adopted>,
) -> Result<Arc<Target>, String> {
    let cfg = &node.cfg;
    h.files
        .create_dirs()
        .map_err(|e| format!("cannot create {}: {e}", h.files.root.display()))?;
    let path = paths::container(cfg.node_ip, h.cid);
    let record = node
        .zk
        .get(&path)
        .await
        .map_err(|e| format!("reading {path}: {e}"))?;
    let function_id = ContainerRecord::decode(&record.value)
        .map_err(|e| format!("{path}: {e}"))?
        .function_id;
    let def = get_function(&node.zk, function_id)
        .await
        .map_err(|e| format!("reading function {function_id}: {e}"))?
        .value;

    let subnet = match adopted {
        Some(a) => a.subnet,
        None => cfg
            .pool
            .allocate()
            .ok_or("no free /30 left in --container-net")?,
    };
    let net = crate::net::Net::new(&cfg.instance, h.cid, subnet);
    *h.net.lock().unwrap_or_else(PoisonError::into_inner) = Some(net.clone());
    if adopted.is_none() {
        net.create().await.map_err(|e| e.to_string())?;
        h.files
            .write_etc(&hostname(h), net.container_ip(), net.host_ip())
            .map_err(|e| format!("writing /etc files: {e}"))?;
        if let Some(repo) = &def.repo {
            if repo.url().starts_with("file:") && !cfg.allow_file_repos {
                return Err(format!(
                    "repository {} is a host path; this node refuses those (--allow-file-repos)",
                    repo.url()
                ));
            }
            h.files
                .log_line(&format!("cloning {} ({})", repo.url(), repo.branch()));
            h.files.clone_repo(repo).await?;
        }
    }
    // Its svcprovider, reachable from the container alone, before its process.
    let token = adopted
        .and_then(|a| a.token.clone())
        .unwrap_or_else(crate::svc::new_token);
    node.firewall
        .allow(&net.host_if, net.host_ip())
        .await
        .map_err(|e| e.to_string())?;
    crate::svc::start(
        cfg.svc.clone(),
        h.files.clone(),
        crate::svc::SvcSpec {
            group: def.service_group(function_id),
            quotas: def.svc_quotas.clone(),
            host_ip: net.host_ip(),
            token: token.clone(),
        },
        h.stop.child_token(),
    )
    .await;
    let target = Arc::new(Target {
        function_id,
        def,
        net,
        runner_socket: h.files.runner_socket(),
        token,
    });
    let _ = h.target.set(Arc::clone(&target));
    Ok(target)
}

/// The container's hostname: `fn-` and the first 12 hex digits of its id.
fn hostname(h: &Handle) -> String {
    format!("fn-{}", &h.cid.simple().to_string()[..12])
}

/// Pulls the image if needed, (re)creates the container record with a
/// fresh spec and snapshot, and starts its task.
async fn start(node: &Node, h: &Handle, t: &Target) -> Result<(), String> {
    let cfg = &node.cfg;
    let id = h.cid.to_string();
    let image = node
        .puller
        .ensure(&node.rt.ctd, &t.def.image)
        .await
        .map_err(|e| e.to_string())?;
    // A task or container left from an earlier attempt goes first.
    node.rt
        .remove(&id, Duration::ZERO)
        .await
        .map_err(|e| format!("removing the previous attempt: {e}"))?;

    let image_config = image.config.config.clone().unwrap_or_default();
    let mut env = image_config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env.push(format!("BISMUTH_CONTAINER_ID={}", h.cid));
    env.push(format!("BISMUTH_FUNCTION_ID={}", t.function_id));
    env.push(format!("BISMUTH_AUTH={}", t.token));
    env.push(format!(
        "BISMUTH_SVC_URL=http://{}:{}",
        t.net.host_ip(),
        crate::firewall::SVC_PORT
    ));
    let (args, runner) = match &t.def.invoke_mode {
        InvokeMode::Server(argv, _) => (argv.clone(), None),
        InvokeMode::Executable(argv) => {
            let mut args = vec![
                spec::RUNNER_PATH.to_owned(),
                spec::RUNNER_SOCKET.to_owned(),
                "--".to_owned(),
            ];
            args.extend(argv.iter().cloned());
            (args, Some((cfg.runner.as_path(), h.files.run.as_path())))
        }
    };
    let repo_dir = h.files.repo();
    let cwd = if t.def.repo.is_some() {
        "/repo".to_owned()
    } else {
        image_config
            .working_dir
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let netns = t.net.netns_path();
    let etc = h.files.etc();
    let hostname = hostname(h);
    let spec = spec::build(&SpecInput {
        args,
        env,
        cwd: &cwd,
        hostname: &hostname,
        cpu: t.def.cpu,
        memory: t.def.memory,
        pids_limit: cfg.pids_limit,
        cgroup: format!("/bismuth/{}", h.cid),
        netns: &netns,
        etc_dir: &etc,
        repo_dir: t.def.repo.is_some().then_some(repo_dir.as_path()),
        runner,
    });
    let labels = HashMap::from([
        (LABEL_FUNCTION.to_owned(), t.function_id.to_string()),
        (LABEL_SLOT.to_owned(), t.net.subnet.slot.to_string()),
    ]);
    node.rt
        .create_container(&id, &image, &spec, labels)
        .await
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(h.files.runner_socket());
    let pid = node
        .rt
        .start_task(&id, &h.files.log())
        .await
        .map_err(|e| format!("starting the process: {e}"))?;
    h.pid.store(pid, Ordering::SeqCst);
    h.files
        .log_line(&format!("started {} (pid {pid})", t.def.image));
    Ok(())
}

/// Waits until the container serves: a Server's port accepts connections,
/// an Executable's runner listens. An exit meanwhile ends the attempt.
async fn wait_ready(
    node: &Node,
    h: &Handle,
    t: &Target,
    exits: &mut mpsc::UnboundedReceiver<Exit>,
) -> Result<(), Ended> {
    let _ = node;
    let started = Instant::now();
    let mut logged = false;
    loop {
        let ready = match &t.def.invoke_mode {
            InvokeMode::Server(_, port) => {
                let addr = (t.net.container_ip(), *port);
                matches!(
                    tokio::time::timeout(
                        Duration::from_millis(200),
                        tokio::net::TcpStream::connect(addr)
                    )
                    .await,
                    Ok(Ok(_))
                )
            }
            InvokeMode::Executable(_) => tokio::net::UnixStream::connect(&t.runner_socket)
                .await
                .is_ok(),
        };
        if ready {
            return Ok(());
        }
        if !logged && started.elapsed() > Duration::from_secs(10) {
            h.files.log_line("still waiting for the function to listen");
            logged = true;
        }
        let pid = h.pid.load(Ordering::SeqCst);
        tokio::select! {
            Some((exited, status)) = exits.recv() => {
                if exited == pid {
                    return Err(Ended::Exited(status));
                }
            }
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// The next exit of the current process (older processes' exits are skipped).
async fn next_exit(h: &Handle, exits: &mut mpsc::UnboundedReceiver<Exit>) -> u32 {
    loop {
        match exits.recv().await {
            Some((pid, status)) if pid == h.pid.load(Ordering::SeqCst) => return status,
            Some(_) => {}
            // The node dropped the handle's sender: nothing will ever come.
            None => std::future::pending::<()>().await,
        }
    }
}

/// "exited with code 3" or "was killed by signal 9 (SIGKILL)".
fn describe_exit(status: u32) -> String {
    if status > 128 && status < 128 + 65 {
        let sig = status - 128;
        let name = match sig {
            9 => " (SIGKILL, or out of memory)",
            15 => " (SIGTERM)",
            11 => " (SIGSEGV)",
            6 => " (SIGABRT)",
            _ => "",
        };
        format!("was killed by signal {sig}{name}")
    } else {
        format!("exited with code {status}")
    }
}

/// Removes task, container, snapshot, network and files, then forgets the handle.
async fn teardown(node: &Node, h: &Handle) {
    let id = h.cid.to_string();
    let mut attempt = 0u32;
    while let Err(e) = node.rt.remove(&id, node.cfg.stop_grace).await {
        attempt += 1;
        warn!(error = %e, attempt, "cannot remove the container yet");
        if attempt >= 20 {
            // Startup reconciliation removes it after the next restart.
            break;
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8)))).await;
    }
    let net = h.net.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(net) = net {
        node.firewall.forget(&net.host_if, net.host_ip()).await;
        net.destroy().await;
        node.cfg.pool.release(net.subnet.slot);
    }
    crate::svc::stop_orphan(&h.files);
    h.files.remove();
    node.forget(h.cid);
    info!("removed");
}

#[cfg(test)]
mod tests {
    use super::describe_exit;

    #[test]
    fn exits_are_described_for_people() {
        assert_eq!(describe_exit(3), "exited with code 3");
        assert_eq!(
            describe_exit(137),
            "was killed by signal 9 (SIGKILL, or out of memory)"
        );
        assert_eq!(describe_exit(0), "exited with code 0");
    }
}
