//! A container ZooKeeper wants here, converged one step at a time: its
//! function (read once), files, /30, network (a deleted veth is put back; a
//! vanished namespace means a restart), rules element, svcprovider (adopted
//! or started), then its process: adopted when it runs, probed until it
//! serves, restarted with jittered backoff when it exits or fails to start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bismuth_controller::{Action, Backoff};
use bismuth_model::{paths, ContainerRecord, ContainerState, InvokeMode};
use bismuth_zk::store::functions::get_function;
use bismuth_zk::ZkError;
use tracing::{info, warn};
use uuid::Uuid;

use super::start::{describe_exit, hostname, start};
use super::Error;
use crate::net::{Net, NetState};
use crate::node::{Actual, Handle, Node, Phases, Target};
use crate::runtime::{TaskState, LABEL_SLOT};

/// A container that ran this long before failing starts over at the first backoff step.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often readiness is probed while a container starts (a connect to
/// its port in its own namespace, refused in microseconds until it
/// listens): often, as every interval is up to that much added to a cold
/// start.
const PROBE_INTERVAL: Duration = Duration::from_millis(2);
/// How long a start waits for readiness in place before handing the key back.
const PROBE_INLINE: Duration = Duration::from_millis(500);
/// After this long without readiness, a line in the log says so.
const SLOW_START: Duration = Duration::from_secs(10);

pub async fn converge(node: &Arc<Node>, cid: Uuid) -> Result<Action, Error> {
    let h = node.get_or_insert(cid);
    let mut a = h.actual.lock().await;
    let id = cid.to_string();
    let ctd = |what| move |source| Error::Containerd { cid, what, source };

    let task = node
        .rt
        .task_state(&id)
        .await
        .map_err(ctd("reading the task"))?;
    let running = match task {
        Some(TaskState::Running { pid }) => Some(pid),
        _ => None,
    };

    if running.is_none() && a.phases.began.is_none() {
        a.phases.began = Some(Instant::now());
    }
    // A start is coming: nothing runs, no exit to record, no backoff to wait.
    let will_start = running.is_none()
        && a.pid == 0
        && !matches!(task, Some(TaskState::Stopped { .. }))
        && a.next_start.map_or(true, |t| t <= Instant::now());
    if a.function.is_none() {
        match read_function(node, cid).await {
            Ok(f) => a.function = Some(f),
            Err(e) if running.is_some() => return Err(e),
            Err(e) => return Ok(failed(node, &h, &mut a, e.reason())),
        }
    }
    let image_name = a.function.as_ref().map(|(_, d)| d.image.clone());
    // Everything the process needs (while it runs, a failure here is an
    // error to retry; before it runs, a failed start), and the image for a
    // start at the same time: a pull or an unpack overlaps the network and
    // the svcprovider.
    let image = async {
        let name = image_name.filter(|_| will_start)?;
        let began = Instant::now();
        let image = node.puller.ensure(&node.rt.ctd, &name).await;
        Some((image, began.elapsed()))
    };
    let (prepared, image) = tokio::join!(
        prepare(node, &h, &mut a, running.is_some(), will_start),
        image
    );
    let (target, token) = match prepared {
        Ok(p) => p,
        Err(e) if running.is_some() => return Err(e),
        Err(e) => return Ok(failed(node, &h, &mut a, e.reason())),
    };
    // A process that lost its namespace cannot be reached: start it anew.
    let running = match (running, target.net.check()) {
        (Some(_), NetState::NamespaceMissing) => None,
        (r, _) => r,
    };

    if let Some(pid) = running {
        if a.pid != pid {
            if a.pid == 0 && h.state() == ContainerState::Invalid {
                info!(pid, "adopted a running container");
            }
            a.pid = pid;
            a.started_at.get_or_insert_with(Instant::now);
        }
        if h.state() == ContainerState::Running {
            return Ok(Action::done());
        }
        return Ok(wait_ready(node, &h, &mut a, &target).await);
    }

    // No process: it exited (or never started, or died while we were away).
    if a.pid != 0 || matches!(task, Some(TaskState::Stopped { .. })) {
        let why = match task {
            Some(TaskState::Stopped { exit }) => format!("the process {}", describe_exit(exit)),
            _ => "the process is gone".to_owned(),
        };
        let healthy = a.running_since.is_some_and(|t| t.elapsed() >= HEALTHY_RUN);
        if healthy {
            a.failures = 0;
        }
        a.pid = 0;
        // Remove the dead task now, so the next check does not see it again.
        node.rt
            .remove(&id, Duration::ZERO)
            .await
            .map_err(ctd("removing the exited task"))?;
        return Ok(failed(node, &h, &mut a, why));
    }
    if let Some(at) = a.next_start {
        let now = Instant::now();
        if at > now {
            return Ok(Action::requeue(at - now));
        }
    }

    node.set_state(&h, ContainerState::Starting);
    let image = match image {
        Some((image, took)) => {
            a.phases.image = Some(took);
            image
        }
        None => node.puller.ensure(&node.rt.ctd, &target.def.image).await,
    };
    let image = match image {
        Ok(i) => i,
        Err(e) => return Ok(failed(node, &h, &mut a, e.to_string())),
    };
    // The svcprovider starts beside the task (both must be up before the
    // container counts as Running; the svcprovider is up long before).
    let mut phases = std::mem::take(&mut a.phases);
    let (svc, started) = tokio::join!(
        ensure_svc(node, &h, &target),
        start(node, cid, &target, &token, &image, &mut phases)
    );
    match svc {
        Ok(took) => phases.svcprovider = took,
        Err(e) => {
            a.phases = phases;
            if let Ok(pid) = started {
                a.pid = pid;
            }
            return Ok(failed(node, &h, &mut a, e.reason()));
        }
    }
    a.phases = phases;
    match started {
        Ok(pid) => {
            a.pid = pid;
            h.served.store(false, std::sync::atomic::Ordering::Relaxed);
            a.started_at = Some(Instant::now());
            a.running_since = None;
            a.waiting_logged = false;
            Ok(wait_ready(node, &h, &mut a, &target).await)
        }
        Err(e) => Ok(failed(node, &h, &mut a, e.reason())),
    }
}

/// Reads the function, makes the files, address, network, rules element
/// and svcprovider the container needs; returns its target and token.
/// With `defer_svc` (a start follows) the svcprovider is left to
/// [`ensure_svc`], which runs beside the task's start.
async fn prepare(
    node: &Node,
    h: &Arc<Handle>,
    a: &mut Actual,
    running: bool,
    defer_svc: bool,
) -> Result<(Arc<Target>, String), Error> {
    let cfg = &node.cfg;
    let cid = h.cid;
    // Read by `converge` before this runs.
    let (function_id, def) = a.function.clone().ok_or(Error::NotSynced)?;
    if !h.files.exist() {
        h.files.create_dirs().map_err(|source| Error::Files {
            cid,
            path: h.files.root.clone(),
            source,
        })?;
    }

    // The /30: the adopted container's (from its label), else the pool's.
    let net = match &a.net {
        Some(n) => n.clone(),
        None => {
            let label = match node.rt.container(&cid.to_string()).await {
                Ok(Some(c)) => c.labels.get(LABEL_SLOT).and_then(|s| s.parse().ok()),
                Ok(None) => None,
                Err(source) => {
                    return Err(Error::Containerd {
                        cid,
                        what: "reading the container",
                        source,
                    })
                }
            };
            let subnet = label
                .filter(|slot| cfg.pool.reserve(cid, *slot))
                .and_then(|slot| cfg.pool.subnet(slot))
                .or_else(|| cfg.pool.allocate(cid))
                .ok_or_else(|| Error::NoAddress {
                    cid,
                    range: cfg.pool.cidr(),
                })?;
            let n = Net::new(&cfg.instance, cid, subnet);
            a.net = Some(n.clone());
            n
        }
    };
    let net_err = |source| Error::Net { cid, source };
    match net.check() {
        NetState::Intact => {}
        NetState::VethMissing => {
            warn!(container = %cid, "the veth is gone; re-creating it");
            net.repair_veth().await.map_err(net_err)?;
            h.files.log_line("network repaired (the veth was gone)");
        }
        NetState::NamespaceMissing => {
            let began = Instant::now();
            if running {
                warn!(container = %cid, "the network namespace is gone; restarting the container");
                h.files
                    .log_line("the network namespace was gone; restarting the container");
                let _ = node.rt.remove(&cid.to_string(), Duration::ZERO).await;
            }
            net.create().await.map_err(net_err)?;
            a.phases.network = Some(began.elapsed());
        }
    }
    let files_err = |source| Error::Files {
        cid,
        path: h.files.etc(),
        source,
    };
    if !h.files.etc().join("hosts").exists() {
        h.files
            .write_etc(&hostname(cid), net.container_ip(), net.host_ip())
            .map_err(files_err)?;
    }
    let ids = super::start::ids(cfg, &def, net.subnet.slot);
    h.files.own(ids).map_err(files_err)?;
    if let Some(repo) = &def.repo {
        if !running && !h.files.repo().join(".git").is_dir() {
            if repo.url().starts_with("file:") && !cfg.allow_file_repos {
                return Err(Error::Start {
                    cid,
                    reason: format!(
                        "repository {} is a host path; this node refuses those (--allow-file-repos)",
                        repo.url()
                    ),
                });
            }
            h.files
                .log_line(&format!("cloning {} ({})", repo.url(), repo.branch()));
            h.files
                .clone_repo(repo, ids)
                .await
                .map_err(|reason| Error::Start { cid, reason })?;
        }
    }

    // Its svcprovider, reachable from this container alone, before its process.
    if !node.firewall.has(&net.host_if, net.host_ip()) {
        node.firewall
            .allow(&net.host_if, net.host_ip())
            .await
            .map_err(|source| Error::Firewall {
                cid: Some(cid),
                source,
            })?;
    }
    let token = node
        .svc
        .token(&h.files, None)
        .map_err(|source| Error::Svc { cid, source })?;
    let target = h
        .target
        .get_or_init(|| Arc::new(Target::new(function_id, def, net, h.files.runner_socket())))
        .clone();
    if !defer_svc {
        let started = ensure_svc(node, h, &target).await?;
        if started.is_some() && running {
            h.files.log_line("svcprovider was not running; started it");
        }
    }
    Ok((target, token))
}

/// Makes sure the container's svcprovider runs (adopted or started);
/// how long a start took, if it had to start one.
async fn ensure_svc(node: &Node, h: &Handle, t: &Target) -> Result<Option<Duration>, Error> {
    let spec = crate::svc::SvcSpec {
        group: t.def.service_group(t.function_id),
        quotas: t.def.svc_quotas.clone(),
        host_ip: t.net.host_ip(),
    };
    let began = Instant::now();
    let started = node
        .svc
        .ensure(h.cid, &h.files, &spec)
        .await
        .map_err(|source| Error::Svc { cid: h.cid, source })?;
    Ok(started.then(|| began.elapsed()))
}

async fn read_function(
    node: &Node,
    cid: Uuid,
) -> Result<(bismuth_model::FunctionId, bismuth_model::FunctionDefinition), Error> {
    let path = paths::container(node.cfg.node_ip, cid);
    let zk_err = |path: String| move |source: ZkError| Error::Zk { cid, path, source };
    let record = node.zk.get(&path).await.map_err(zk_err(path.clone()))?;
    let function_id = ContainerRecord::decode(&record.value)
        .map_err(|e| Error::Start {
            cid,
            reason: format!("{path}: {e}"),
        })?
        .function_id;
    let fpath = paths::function(function_id);
    let def = get_function(&node.zk, function_id)
        .await
        .map_err(|e| match e {
            bismuth_zk::store::StoreError::Zk(source) => Error::Zk {
                cid,
                path: fpath.clone(),
                source,
            },
            other => Error::Start {
                cid,
                reason: format!("reading function {function_id}: {other}"),
            },
        })?
        .value;
    Ok((function_id, def))
}

/// Probes readiness for a short while in place; Running when it serves,
/// else the key comes back shortly.
/// An adopted process (state still Invalid here, Running in ZooKeeper) is
/// probed before anything is reported, so a bismuthd restart never flips a
/// serving container to Starting.
async fn wait_ready(node: &Node, h: &Handle, a: &mut Actual, t: &Target) -> Action {
    let until = Instant::now() + PROBE_INLINE;
    loop {
        if ready(t).await {
            node.set_state(h, ContainerState::Running);
            a.running_since = Some(Instant::now());
            *h.reason_lock() = None;
            let p = std::mem::take(&mut a.phases);
            let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            let ready = a.started_at.map(|t| t.elapsed());
            let total = p.began.map(|t| t.elapsed());
            // Only starts this daemon made (an adopted process has no phases).
            if p.began.is_some() && p.create.is_some() {
                node.metrics.started(&p, ready, total);
                if let (Some(tracer), Some(total)) = (&node.tracer, total) {
                    start_span(tracer, h.cid, t, &p, ready, total);
                }
            }
            info!(
                image_ms = ms(p.image),
                network_ms = ms(p.network),
                svcprovider_ms = ms(p.svcprovider),
                create_ms = ms(p.create),
                ready_ms = ms(ready),
                total_ms = ms(total),
                "running"
            );
            return Action::done();
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    if h.state() == ContainerState::Invalid {
        node.set_state(h, ContainerState::Starting);
    }
    if !a.waiting_logged && a.started_at.is_some_and(|t| t.elapsed() > SLOW_START) {
        h.files.log_line("still waiting for the function to listen");
        a.waiting_logged = true;
    }
    Action::requeue(Duration::from_millis(50))
}

/// Exports a finished start as one span, its phases as attributes (they
/// overlap: the image and the network are prepared at once).
fn start_span(
    tracer: &bismuth_daemon::otel::Tracer,
    cid: Uuid,
    t: &Target,
    p: &Phases,
    ready: Option<Duration>,
    total: Duration,
) {
    use opentelemetry::KeyValue;
    let end = std::time::SystemTime::now();
    let mut attributes = vec![
        KeyValue::new("bismuth.container_id", cid.to_string()),
        KeyValue::new("bismuth.function_id", t.function_id.to_string()),
    ];
    for (phase, d) in p.named(ready, None) {
        if let Some(d) = d {
            attributes.push(KeyValue::new(
                format!("bismuth.start.{phase}_ms"),
                d.as_secs_f64() * 1000.0,
            ));
        }
    }
    tracer.record("container start", end - total, end, attributes);
}

/// Whether the function serves: a Server's port accepts, an Executable's runner listens.
async fn ready(t: &Target) -> bool {
    match &t.def.invoke_mode {
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
        InvokeMode::Executable(_) => crate::files::connect_runner(&t.runner_socket).await.is_ok(),
    }
}

/// Records a failed start or an exit: Failed, a line in the log, and the
/// next start after a jittered, growing delay.
fn failed(node: &Node, h: &Handle, a: &mut Actual, why: String) -> Action {
    let backoff = Backoff::new(node.cfg.restart_backoff, node.cfg.restart_backoff_max);
    let delay = backoff.delay(a.failures);
    a.failures = a.failures.saturating_add(1);
    a.next_start = Some(Instant::now() + delay);
    a.pid = 0;
    a.running_since = None;
    a.phases = Default::default();
    if let Some((function, _)) = &a.function {
        node.metrics.restarted(*function);
    }
    warn!(container = %h.cid, reason = %why, failures = a.failures, retry_in_ms = delay.as_millis() as u64, "container failed");
    h.files.log_line(&format!(
        "failed: {why}; restarting in {} ms",
        delay.as_millis()
    ));
    node.status.report_failures(
        h.cid,
        bismuth_model::ContainerReport {
            failures: a.failures,
            reason: Some(why.clone()),
        },
    );
    *h.reason_lock() = Some(why);
    node.set_state(h, ContainerState::Failed);
    Action::requeue(delay)
}
