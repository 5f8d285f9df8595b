//! bismuthd against real ZooKeeper and containerd: containers started from
//! znodes, invoked through port 8001, reported, restarted, removed and
//! adopted across daemon crashes.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bismuth_model::{ContainerState, InvokeMode};
use bismuth_testkit::eventually;
use bismuth_zk::store::backends;
use support::{argv, busybox, http_get, http_request, Host, NODE};

const START: Duration = Duration::from_secs(30);

#[tokio::test]
async fn executable_function_answers_one_process_per_request() {
    let host = Host::start().await;
    let (_, cid) = host
        .deploy(&busybox(InvokeMode::Executable(argv(&[
            "/bin/sh",
            "-c",
            "echo \"method=$REQUEST_METHOD path=$PATH_INFO q=$QUERY_STRING uid=$(id -u)\"; cat; \
             [ \"$QUERY_STRING\" = fail ] && { echo oops >&2; exit 3; }; true",
        ]))))
        .await;
    host.wait_state(cid, ContainerState::Running, START).await;

    let url = host.url(&format!("/invoke/{cid}/a/b?x=1"));
    let (status, headers, body) = http_request("POST", &url, "the body").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "method=POST path=/a/b q=x=1 uid=1000\nthe body");
    assert_eq!(headers["x-bismuth-container-id"], cid.to_string());
    assert!(headers.contains_key("traceparent"));

    // A non-zero exit is a 500, its stderr in the container's log.
    let (status, _, body) = http_request("POST", &host.url(&format!("/invoke/{cid}?fail")), "")
        .await
        .unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("exited with code 3"), "{body}");
    let (status, log) = http_get(&host.url(&format!("/logs/{cid}"))).await.unwrap();
    assert_eq!(status, 200);
    assert!(log.contains("oops"), "{log}");

    // Unknown containers and bad ids are JSON 404s.
    let (status, body) = http_get(&host.url(&format!("/invoke/{}", uuid::Uuid::new_v4())))
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "{body}");
}

#[tokio::test]
async fn server_function_is_proxied_and_removed_without_leftovers() {
    let host = Host::start().await;
    let (fid, cid) = host
        .deploy(&busybox(InvokeMode::Server(
            argv(&[
                "/bin/sh",
                "-c",
                "echo hi from $(hostname) > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
            ]),
            8080,
        )))
        .await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let (status, body) = http_get(&host.url(&format!("/invoke/{cid}/index.html")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("hi from fn-"), "{body}");

    // Removing the znode removes everything the container had.
    backends::remove_backend(&host.zk, fid, cid).await.unwrap();
    eventually("container removed", Duration::from_secs(20), || async {
        let left = host.leftovers(cid);
        left.is_empty().then_some(())
    })
    .await;
    let (status, _) = http_get(&host.url(&format!("/invoke/{cid}/")))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_killed_process_is_failed_then_restarted_in_place() {
    let host = Host::start().await;
    let (_, cid) = host
        .deploy(&busybox(InvokeMode::Server(
            argv(&[
                "/bin/sh",
                "-c",
                "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
            ]),
            8080,
        )))
        .await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let pid = host.kill_task(cid);

    host.wait_state(cid, ContainerState::Failed, Duration::from_secs(10))
        .await;
    // Back after the backoff, same id, new process.
    host.wait_state(cid, ContainerState::Running, START).await;
    let again = host.task_pid(cid).unwrap();
    assert_ne!(pid, again);
    let log = std::fs::read_to_string(host.log_path(cid)).unwrap();
    assert!(log.contains("killed by signal 9"), "{log}");
}

#[tokio::test]
async fn a_missing_image_fails_quickly_with_the_reason_in_the_log() {
    let host = Host::start().await;
    let mut def = busybox(InvokeMode::Executable(argv(&["/bin/true"])));
    // A loopback registry port nothing listens on: the pull fails at once.
    def.image = format!(
        "127.0.0.1:{}/nope/missing:1",
        bismuth_testkit::free_port().unwrap()
    );
    let (_, cid) = host.deploy(&def).await;
    host.wait_state(cid, ContainerState::Failed, Duration::from_secs(10))
        .await;
    let (_, log) = http_get(&host.url(&format!("/logs/{cid}"))).await.unwrap();
    assert!(
        log.contains("pulling") && log.contains("nope/missing"),
        "{log}"
    );
}

#[tokio::test]
async fn crash_and_restart_adopts_running_containers_and_cleans_the_rest() {
    let mut host = Host::start().await;
    let (_, keep) = host
        .deploy(&busybox(InvokeMode::Server(
            argv(&[
                "/bin/sh",
                "-c",
                "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
            ]),
            8080,
        )))
        .await;
    let (gone_fid, gone) = host
        .deploy(&busybox(InvokeMode::Executable(argv(&["/bin/cat"]))))
        .await;
    host.wait_state(keep, ContainerState::Running, START).await;
    host.wait_state(gone, ContainerState::Running, START).await;
    let pid = host.task_pid(keep).unwrap();
    let writer = log_writer(&host, keep);
    assert!(
        writer.is_some(),
        "no log writer named bismuth-logs for {keep}"
    );

    host.kill_daemon();
    // While bismuthd is down, one container is deleted in ZooKeeper.
    backends::remove_backend(&host.zk, gone_fid, gone)
        .await
        .unwrap();
    host.start_daemon().await;

    eventually(
        "the deleted container cleaned up",
        Duration::from_secs(20),
        || async { host.leftovers(gone).is_empty().then_some(()) },
    )
    .await;
    // Adopted, not restarted: same process, still Running, still answering.
    assert_eq!(host.task_pid(keep), Some(pid));
    assert_eq!(
        log_writer(&host, keep),
        writer,
        "its log writer outlived bismuthd"
    );
    assert_eq!(host.state(keep).await, Some(ContainerState::Running));
    let (status, _) = http_get(&host.url(&format!("/invoke/{keep}/")))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        host.daemon_log().contains("adopted"),
        "{}",
        host.daemon_log()
    );
}

/// The pid of `cid`'s log writer, found by the process name it takes
/// (not bismuthd's, so that `pkill bismuthd` leaves it be).
fn log_writer(host: &Host, cid: uuid::Uuid) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-x", bismuthd::logwriter::COMM])
        .output()
        .unwrap();
    let log = host.log_path(cid);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|line| line.contains(&*log.to_string_lossy()))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn one_daemon_per_namespace() {
    let host = Host::start().await;
    let out = host.command_on(0).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already manages containerd namespace"),
        "{err}"
    );
    let _ = NODE;
}

#[tokio::test]
async fn python_server_serves_its_cloned_repository() {
    let host = Host::start().await;
    host.import(&support::python_archive()).await;
    let url = support::git_repo(
        &host.dir.path().join("src"),
        &[("hello.txt", "hello from the repo\n")],
    );
    let mut def = busybox(InvokeMode::Server(
        argv(&["/usr/local/bin/python3", "-m", "http.server", "8000"]),
        8000,
    ));
    def.image = "docker.io/bismuth/python:test".into();
    def.memory = 128 << 20;
    def.repo = Some(bismuth_model::GitRepo(url, "main".into()));
    let (_, cid) = host.deploy(&def).await;
    host.wait_state(cid, ContainerState::Running, Duration::from_secs(60))
        .await;

    let (status, body) = http_get(&host.url(&format!("/invoke/{cid}/hello.txt")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello from the repo\n");

    // Its access log reaches a follower of the log as server-sent events.
    let follow = host.url(&format!("/logs/{cid}?follow=true"));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(follow.parse().unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("GET /hello.txt") {
        use http_body_util::BodyExt;
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("data: "), "{seen}");
}

#[tokio::test]
async fn pulls_its_image_from_a_registry() {
    let registry = bismuth_testkit::Registry::start().unwrap();
    let mut host = Host::prepare().await;
    host.extra_args = vec!["--insecure-registry".into(), registry.host()];
    host.start_daemon().await;
    let archive = host.dir.path().join("busybox.tar");
    let image = registry
        .push_oci_archive(&archive, "team/busybox:v1")
        .unwrap();
    let mut def = busybox(InvokeMode::Executable(argv(&["/bin/echo", "pulled"])));
    def.image = image;
    let (_, cid) = host.deploy(&def).await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let (status, body) = http_get(&host.url(&format!("/invoke/{cid}")))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "pulled\n"));
}

/// Echoes `body` through an Executable container's `/invoke`.
async fn echo(host: &Host, cid: uuid::Uuid, body: &str) -> String {
    let (status, _, reply) = http_request("POST", &host.url(&format!("/invoke/{cid}")), body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test]
async fn survives_restarts_of_containerd_and_zookeeper() {
    let mut host = Host::start().await;
    let cat = busybox(InvokeMode::Executable(argv(&["/bin/cat"])));
    let (_, a) = host.deploy(&cat).await;
    host.wait_state(a, ContainerState::Running, START).await;
    let pid = host.task_pid(a).unwrap();

    // containerd crashes and comes back: the container keeps serving (its
    // shim and process never stopped), and bismuthd still sees its exits.
    host.ctd.restart().unwrap();
    assert_eq!(echo(&host, a, "after containerd").await, "after containerd");
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    host.wait_state(a, ContainerState::Failed, Duration::from_secs(10))
        .await;
    host.wait_state(a, ContainerState::Running, START).await;
    assert_ne!(host.task_pid(a), Some(pid));
    // New containers start on the restarted containerd.
    let (_, b) = host.deploy(&cat).await;
    host.wait_state(b, ContainerState::Running, START).await;

    // ZooKeeper restarts: bismuthd keeps serving meanwhile, then follows
    // the tree again (new containers start, removed ones go) and holds its
    // liveness znode.
    host.zk_server.stop();
    assert_eq!(echo(&host, b, "zookeeper down").await, "zookeeper down");
    host.zk_server.restart(false).unwrap();
    let (fc, c) = host.deploy(&cat).await;
    host.wait_state(c, ContainerState::Running, START).await;
    assert_eq!(echo(&host, c, "after zookeeper").await, "after zookeeper");
    backends::remove_backend(&host.zk, fc, c).await.unwrap();
    eventually("c removed", Duration::from_secs(20), || async {
        host.leftovers(c).is_empty().then_some(())
    })
    .await;
    eventually("the node alive again", Duration::from_secs(30), || async {
        host.zk
            .exists(&bismuth_model::paths::node_alive(NODE))
            .await
            .ok()
            .filter(|e| *e)
    })
    .await;
    assert_eq!(host.state(a).await, Some(ContainerState::Running));
    assert_eq!(echo(&host, a, "still here").await, "still here");
}

#[tokio::test]
async fn clean_up_removes_everything_and_the_next_start_recreates() {
    let mut host = Host::start().await;
    let (_, a) = host
        .deploy(&busybox(InvokeMode::Executable(argv(&["/bin/cat"]))))
        .await;
    host.wait_state(a, ContainerState::Running, START).await;

    // Refused while bismuthd runs; after SIGTERM (which leaves a running) it removes all.
    let out = host.command().arg("--clean-up").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already"),
        "{out:?}"
    );
    assert!(host.stop_daemon().success());
    assert!(
        host.task_pid(a).is_some(),
        "SIGTERM leaves containers running"
    );
    let out = host.command().arg("--clean-up").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 1 containers"),
        "{out:?}"
    );
    assert_eq!(host.leftovers(a), Vec::<String>::new());
    let table = format!("bismuth_{}", host.instance());
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains(&table));
    let svc = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("svcprovider serve .*{}", host.dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(svc.stdout.is_empty(), "an svcprovider survived");
    // Nothing routes to it meanwhile: no bismuthd has it.
    assert_eq!(host.state(a).await, Some(ContainerState::Invalid));

    // ZooKeeper still wants it: the next bismuthd starts it afresh.
    host.start_daemon().await;
    host.wait_state(a, ContainerState::Running, START).await;
    assert_eq!(echo(&host, a, "again").await, "again");
}

#[tokio::test]
async fn writes_to_the_root_filesystem_and_repo_are_bounded_and_off_the_disk() {
    let mut host = Host::prepare().await;
    host.extra_args = vec!["--writable-max-bytes".into(), (8u64 << 20).to_string()];
    host.start_daemon().await;
    let url = support::git_repo(&host.dir.path().join("src"), &[("hello.txt", "hello\n")]);
    let mut def = busybox(InvokeMode::Executable(argv(&[
        "/bin/sh",
        "-c",
        "eval \"$(cat)\"",
    ])));
    def.repo = Some(bismuth_model::GitRepo(url, "main".into()));
    let (fid, cid) = host.deploy(&def).await;
    host.wait_state(cid, ContainerState::Running, START).await;
    let sh = |script: &'static str| {
        let url = host.url(&format!("/invoke/{cid}"));
        async move {
            let (status, _, body) = http_request("POST", &url, script).await.unwrap();
            assert_eq!(status, 200, "{body}");
            body
        }
    };

    // The clone is the function's to change; the change stays in the
    // container's writable layer, not in the clone on disk.
    let out =
        sh("cd /repo && echo changed > hello.txt && cat hello.txt && stat -c %u hello.txt").await;
    assert_eq!(out, "changed\n1000\n");
    let clone = host
        .dir
        .path()
        .join(format!("state/containers/{cid}/layer/repo/hello.txt"));
    assert_eq!(std::fs::read_to_string(&clone).unwrap(), "hello\n");

    // Writing past the limit fails inside, and the host's disk does not grow.
    let before = bismuth_testkit::disk_use(host.dir.path());
    let out = sh("dd if=/dev/zero of=/repo/big bs=1M count=32 2>&1; echo status=$?").await;
    assert!(
        out.contains("No space left on device") && !out.trim_end().ends_with("status=0"),
        "{out}"
    );
    let grown = bismuth_testkit::disk_use(host.dir.path()).saturating_sub(before);
    assert!(grown < 1 << 20, "the disk grew by {grown} bytes");

    // Each start begins with an empty writable layer.
    let pid = host.kill_task(cid);
    eventually("the container to restart", START, || async {
        host.task_pid(cid)
            .filter(|p| *p != pid)
            .and((host.state(cid).await == Some(ContainerState::Running)).then_some(()))
    })
    .await;
    assert_eq!(
        sh("ls /repo; cat /repo/hello.txt").await,
        "hello.txt\nhello\n"
    );

    // Removed: nothing left, the writable layer's mount included.
    backends::remove_backend(&host.zk, fid, cid).await.unwrap();
    eventually("container removed", Duration::from_secs(20), || async {
        host.leftovers(cid).is_empty().then_some(())
    })
    .await;
}
