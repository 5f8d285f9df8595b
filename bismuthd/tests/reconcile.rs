//! bismuthd's reconcile loop against real ZooKeeper and containerd: drift
//! repaired within one resync, failed starts that never take a second
//! address, adoption of containers *and* svcproviders after `kill -9`,
//! exits seen at once after containerd was away, and what a hostile or
//! slow-to-stop container can no longer do.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bismuth_model::{ContainerState, FunctionDefinition, GitRepo, InvokeMode};
use bismuth_testkit::eventually;
use bismuth_zk::store::backends;
use support::{argv, busybox, http_get, Host};

const START: Duration = Duration::from_secs(30);
const RESYNC_MS: &str = "500";

fn httpd() -> FunctionDefinition {
    busybox(InvokeMode::Server(
        argv(&[
            "/bin/sh",
            "-c",
            "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
        ]),
        8080,
    ))
}

async fn invoke_status(host: &Host, cid: uuid::Uuid) -> u16 {
    http_get(&host.url(&format!("/invoke/{cid}/")))
        .await
        .map_or(0, |(s, _)| s)
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn drift_is_repaired_within_one_resync() {
    let mut host = Host::prepare().await;
    host.extra_args = vec!["--resync-ms".into(), RESYNC_MS.into()];
    host.start_daemon().await;
    let (_, cid) = host.deploy(&httpd()).await;
    host.wait_state(cid, ContainerState::Running, START).await;
    assert_eq!(invoke_status(&host, cid).await, 200);
    assert_eq!(host.kv(cid, "k", Some("kept")).await.0, 200);

    // The veth deleted by hand: the function is cut off, then served again.
    let link = bismuthd::net::names(&host.instance(), cid).1;
    run("ip", &["link", "del", &link]);
    eventually("the veth back and serving", START, || async {
        (invoke_status(&host, cid).await == 200).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(host.log_path(cid)).unwrap();
    assert!(log.contains("network repaired"), "{log}");

    // The rules table deleted: installed again with this container's element.
    let table = format!("bismuth_{}", host.instance());
    run("nft", &["delete", "table", "inet", &table]);
    eventually("the rules table back", START, || async {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains(&format!("\"{link}\""))).then_some(())
    })
    .await;
    // Flushed (chains kept, rules gone): also put back.
    run("nft", &["flush", "table", "inet", &table]);
    eventually("the rules back after a flush", START, || async {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .contains("@svc accept")
            .then_some(())
    })
    .await;

    // The svcprovider killed: a new one, same token, the data intact.
    let pid = host.svc_pid(cid).unwrap();
    run("kill", &["-9", &pid.to_string()]);
    eventually("a new svcprovider with the data", START, || async {
        let (status, body) = host.kv(cid, "k", None).await;
        (host.svc_pid(cid) != Some(pid) && status == 200 && body == "kept").then_some(())
    })
    .await;
    assert_eq!(invoke_status(&host, cid).await, 200);
}

#[tokio::test]
async fn failing_starts_hold_one_address_each_and_retry_spread_out() {
    let mut host = Host::prepare().await;
    host.extra_args = vec![
        "--restart-backoff-ms".into(),
        "1".into(),
        "--restart-backoff-max-ms".into(),
        "40".into(),
    ];
    host.start_daemon().await;
    // Three functions whose repository branch does not exist (the start
    // fails before the process), one whose process exits at once.
    let repo = support::git_repo(&host.dir.path().join("repo"), &[("a", "b")]);
    let mut bad_branch = busybox(InvokeMode::Executable(argv(&["/bin/cat"])));
    bad_branch.repo = Some(GitRepo(repo, "no-such-branch".into()));
    let mut clones = Vec::new();
    let mut all = Vec::new();
    for _ in 0..3 {
        let (fid, cid) = host.deploy(&bad_branch).await;
        clones.push(cid);
        all.push((fid, cid));
    }
    let (exits_fid, exits) = host
        .deploy(&busybox(InvokeMode::Server(argv(&["/bin/false"]), 8080)))
        .await;
    let failures = |cid| {
        std::fs::read_to_string(host.log_path(cid))
            .unwrap_or_default()
            .matches("failed:")
            .count()
    };
    eventually(
        "50 failed starts of each",
        Duration::from_secs(120),
        || async { clones.iter().all(|c| failures(*c) >= 50).then_some(()) },
    )
    .await;
    eventually("20 exits", Duration::from_secs(120), || async {
        (failures(exits) >= 20).then_some(())
    })
    .await;
    let svc = host.svc_pid(exits).unwrap();

    // One /30 and one veth per container however often it failed; the
    // exiting one kept its one svcprovider (the cloning ones never got one).
    assert_eq!(host.health().await["addresses_in_use"], 4);
    assert_eq!(host.veths(), 4);
    assert_eq!(host.svcproviders(), vec![svc]);
    assert_eq!(host.svc_pid(exits), Some(svc));

    // Failing together, they do not retry in lockstep: the delays drawn for
    // the same attempt differ.
    let delays: Vec<u64> = clones
        .iter()
        .map(|c| {
            let log = std::fs::read_to_string(host.log_path(*c)).unwrap();
            let line = log
                .lines()
                .filter(|l| l.contains("restarting in"))
                .nth(20)
                .unwrap();
            let ms = line.rsplit("restarting in ").next().unwrap();
            ms.trim_end_matches(" ms").parse().unwrap()
        })
        .collect();
    assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");

    // Removed: nothing is left, the pool is empty again.
    all.push((exits_fid, exits));
    for (fid, cid) in &all {
        backends::remove_backend(&host.zk, *fid, *cid)
            .await
            .unwrap();
    }
    eventually("everything removed", START, || async {
        let h = host.health().await;
        (h["addresses_in_use"] == 0 && host.veths() == 0 && host.svcproviders().is_empty())
            .then_some(())
    })
    .await;
    for cid in clones.iter().chain([&exits]) {
        assert_eq!(host.leftovers(*cid), Vec::<String>::new());
    }
}

#[tokio::test]
async fn kill_9_and_restart_adopt_containers_and_svcproviders() {
    let mut host = Host::start().await;
    let mut cids = Vec::new();
    for i in 0..3 {
        let (_, cid) = host.deploy(&httpd()).await;
        host.wait_state(cid, ContainerState::Running, START).await;
        assert_eq!(host.kv(cid, "n", Some(&i.to_string())).await.0, 200);
        cids.push(cid);
    }
    let tasks: Vec<_> = cids.iter().map(|c| host.task_pid(*c).unwrap()).collect();
    let svcs: Vec<_> = cids.iter().map(|c| host.svc_pid(*c).unwrap()).collect();

    host.kill_daemon();
    // While bismuthd is away, every function's K/V keeps answering.
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(host.kv(*cid, "n", None).await, (200, i.to_string()));
    }
    host.start_daemon().await;
    // Adopted, not restarted: same containers, same svcproviders.
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(host.state(*cid).await, Some(ContainerState::Running));
        assert_eq!(invoke_status(&host, *cid).await, 200);
        assert_eq!(host.task_pid(*cid), Some(tasks[i]));
        assert_eq!(host.svc_pid(*cid), Some(svcs[i]));
        assert_eq!(host.kv(*cid, "n", None).await, (200, i.to_string()));
    }
    assert_eq!(host.health().await["addresses_in_use"], 3);
}

#[tokio::test]
async fn an_exit_while_containerd_is_away_is_seen_when_it_returns() {
    let mut host = Host::prepare().await;
    // No resync to help: only the re-read after containerd returns can see it.
    host.extra_args = vec!["--resync-ms".into(), "3600000".into()];
    host.start_daemon().await;
    let (_, cid) = host
        .deploy(&busybox(InvokeMode::Executable(argv(&["/bin/cat"]))))
        .await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let pid = host.task_pid(cid).unwrap();
    host.ctd.crash();
    run("kill", &["-9", &pid.to_string()]);
    host.ctd.revive().unwrap();
    eventually("a new process", START, || async {
        let state = host.state(cid).await;
        let new_pid = host.task_pid(cid);
        (state == Some(ContainerState::Running) && new_pid.is_some() && new_pid != Some(pid))
            .then_some(())
    })
    .await;
    let log = std::fs::read_to_string(host.log_path(cid)).unwrap();
    assert!(log.contains("failed: the process"), "{log}");
}

#[tokio::test]
async fn the_runner_socket_cannot_be_swapped_from_inside() {
    let host = Host::start().await;
    // A socket on the host that root bismuthd must never be steered to.
    let bait = host.dir.path().join("bait.sock");
    let listener = std::os::unix::net::UnixListener::bind(&bait).unwrap();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "if [ \"$QUERY_STRING\" = attack ]; then rm -f /.bismuth/run/runner.sock && \
         ln -s {} /.bismuth/run/runner.sock && echo planted; else echo normal; fi",
        bait.display()
    );
    let (_, cid) = host
        .deploy(&busybox(InvokeMode::Executable(argv(&[
            "/bin/sh", "-c", &script,
        ]))))
        .await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let (status, body) = http_get(&host.url(&format!("/invoke/{cid}?attack")))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "planted\n"));
    let (status, body) = http_get(&host.url(&format!("/invoke/{cid}")))
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "bismuthd connected to the planted socket"
    );
}

#[tokio::test]
async fn an_image_imported_under_a_short_name_runs() {
    let host = Host::start().await;
    let archive = host.dir.path().join("busybox.tar");
    bismuth_containerd::Containerd::connect(&host.ctd.socket(), support::NS)
        .await
        .unwrap()
        .import_archive(&archive, Some("local/busybox:latest"))
        .await
        .unwrap();
    let mut def = busybox(InvokeMode::Executable(argv(&["/bin/echo", "short name"])));
    def.image = "local/busybox:latest".into();
    let (_, cid) = host.deploy(&def).await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let (status, body) = http_get(&host.url(&format!("/invoke/{cid}")))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "short name\n"));
}

#[tokio::test]
async fn servers_and_executables_stop_on_sigterm_without_waiting_the_grace() {
    let mut host = Host::prepare().await;
    // A minute of grace: only a PID 1 that really stops on SIGTERM is gone
    // within the poll below.
    host.extra_args = vec!["--stop-grace-ms".into(), "60000".into()];
    host.start_daemon().await;
    host.import(&support::python_archive()).await;
    let python = FunctionDefinition {
        image: "docker.io/bismuth/python:test".into(),
        invoke_mode: InvokeMode::Server(
            argv(&["/usr/local/bin/python3", "-m", "http.server", "8000"]),
            8000,
        ),
        ..busybox(InvokeMode::Executable(vec![]))
    };
    // An Executable's PID 1 is the runner itself.
    let executable = busybox(InvokeMode::Executable(argv(&["/bin/cat"])));
    for def in [python, executable] {
        let (fid, cid) = host.deploy(&def).await;
        host.wait_state(cid, ContainerState::Running, START).await;
        let started = Instant::now();
        backends::remove_backend(&host.zk, fid, cid).await.unwrap();
        eventually("the container removed", Duration::from_secs(20), || async {
            host.leftovers(cid).is_empty().then_some(())
        })
        .await;
        println!("removal took {:?}", started.elapsed());
        let log = host.daemon_log();
        let took: u64 = log
            .lines()
            .filter(|l| l.contains("removed") && l.contains(&cid.to_string()))
            .find_map(|l| {
                l.split("took_ms=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap();
        assert!(
            took < 20_000,
            "removal of {:?} took {took} ms: the grace period was waited",
            def.invoke_mode
        );
    }
}
