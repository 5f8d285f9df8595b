//! Starting a container's process on its image (ensured by the caller, at
//! the same time as the network): a fresh container record with its spec
//! and snapshot, and the task, its output appended to the container's log.
//! A container or task left by an earlier attempt is removed first, so a
//! start can be retried at any point.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bismuth_containerd::ResolvedImage;
use bismuth_model::{FunctionDefinition, InvokeMode, Isolation};
use uuid::Uuid;

use super::Error;
use crate::node::{Node, Phases, Target};
use crate::runtime::{LABEL_FUNCTION, LABEL_SLOT};
use crate::spec::{self, SpecInput};
use crate::userns::IdMap;
use crate::{config::Config, rootfs};

/// The host ids of a container of `def` on network slot `slot`: a block of
/// its own, or the host's under gVisor (whose kernel stands in between).
pub fn ids(cfg: &Config, def: &FunctionDefinition, slot: u32) -> IdMap {
    match def.isolation() {
        Isolation::Container => IdMap::for_slot(cfg.uid_base, slot),
        Isolation::Sandbox => IdMap::HOST,
    }
}

/// Pulls the image if needed, (re)creates the container and starts its
/// task; returns the task's pid, and records the `image` and `create` phases.
pub async fn start(
    node: &Node,
    cid: Uuid,
    t: &Target,
    token: &str,
    image: &ResolvedImage,
    phases: &mut Phases,
) -> Result<u32, Error> {
    let cfg = &node.cfg;
    let files = crate::files::Files::new(&cfg.state_dir, &cfg.run_dir, cid);
    let id = cid.to_string();
    let fail = |reason: String| Error::Start { cid, reason };
    let began = Instant::now();
    // A container left by an earlier attempt goes first.
    let earlier = node
        .rt
        .container(&id)
        .await
        .map_err(|e| fail(format!("looking for an earlier attempt: {e}")))?;
    if earlier.is_some() {
        node.rt
            .remove(&id, Duration::ZERO)
            .await
            .map_err(|e| fail(format!("removing the previous attempt: {e}")))?;
    }

    let image_config = image.config.config.clone().unwrap_or_default();
    let mut env = image_config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env.push(format!("BISMUTH_CONTAINER_ID={cid}"));
    env.push(format!("BISMUTH_FUNCTION_ID={}", t.function_id));
    env.push(format!("BISMUTH_AUTH={token}"));
    env.push(format!(
        "BISMUTH_SVC_URL=http://{}:{}",
        t.net.host_ip(),
        crate::firewall::SVC_PORT
    ));
    // The runner is PID 1 in both modes: it forwards signals to the
    // function and reaps orphans (a server as PID 1 would ignore SIGTERM).
    let runner_dir = files.runner_dir();
    let (args, runner_dir) = match &t.def.invoke_mode {
        InvokeMode::Server(argv, _) => {
            let mut args = vec![spec::RUNNER_PATH.to_owned(), "--init".to_owned()];
            args.push("--".to_owned());
            args.extend(argv.iter().cloned());
            (args, None)
        }
        InvokeMode::Executable(argv) => {
            let mut args = vec![
                spec::RUNNER_PATH.to_owned(),
                spec::RUNNER_SOCKET.to_owned(),
                "--".to_owned(),
            ];
            args.extend(argv.iter().cloned());
            (args, Some(runner_dir.as_path()))
        }
    };
    let cwd = if t.def.repo.is_some() {
        "/repo".to_owned()
    } else {
        image_config
            .working_dir
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let netns = t.net.netns_path();
    let etc = files.etc();
    let hostname = hostname(cid);
    let ids = ids(cfg, &t.def, t.net.subnet.slot);
    let spec = spec::build(&SpecInput {
        args,
        env,
        cwd: &cwd,
        hostname: &hostname,
        cpu: t.def.cpu,
        memory: t.def.memory,
        pids_limit: cfg.pids_limit,
        cgroup: format!("/bismuth/{cid}"),
        netns: &netns,
        etc_dir: &etc,
        ids,
        runner: &cfg.runner,
        runner_dir,
    })
    .map_err(|e| fail(e.to_string()))?;
    let labels = HashMap::from([
        (LABEL_FUNCTION.to_owned(), t.function_id.to_string()),
        (LABEL_SLOT.to_owned(), t.net.subnet.slot.to_string()),
    ]);
    let options = match t.def.isolation() {
        Isolation::Container => None,
        Isolation::Sandbox => Some(node.sandbox().map_err(fail)?.runtime_options()),
    };
    let checked = began.elapsed();
    let view = node
        .rt
        .create_container(&id, image, &spec, labels, options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Its root: the repository over the image, under a fresh writable layer.
    rootfs::prepare_writable(&files, ids, cfg.writable_max_bytes)
        .map_err(|e| fail(e.to_string()))?;
    let mut layers = Vec::new();
    if t.def.repo.is_some() {
        layers.push(files.layer().to_string_lossy().into_owned());
    }
    layers.extend(rootfs::image_layers(&view).map_err(|e| fail(e.to_string()))?);
    let created = began.elapsed();
    let _ = std::fs::remove_file(files.runner_socket());
    let pid = node
        .rt
        .start_task(
            &id,
            rootfs::overlay(&files, &layers),
            &crate::logwriter::uri(
                &crate::logwriter::exe(),
                &files.log(),
                node.cfg.log_max_bytes,
            ),
        )
        .await
        .map_err(|e| fail(format!("starting the process: {e}")))?;
    phases.create = Some(began.elapsed());
    tracing::debug!(
        check_ms = checked.as_secs_f64() * 1e3,
        container_ms = (created - checked).as_secs_f64() * 1e3,
        task_ms = (began.elapsed() - created).as_secs_f64() * 1e3,
        "created"
    );
    files.log_line(&format!("started {} (pid {pid})", t.def.image));
    Ok(pid)
}

/// The container's hostname: `fn-` and the first 12 hex digits of its id.
pub fn hostname(cid: Uuid) -> String {
    format!("fn-{}", &cid.simple().to_string()[..12])
}

/// "exited with code 3" or "was killed by signal 9 (SIGKILL, or out of memory)".
pub fn describe_exit(status: u32) -> String {
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
