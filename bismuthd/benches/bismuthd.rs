//! bismuthd benchmark (rerun with `bench/bismuthd.sh`):
//! 1. start-up: container znode created → Running in ZooKeeper, and → first
//!    HTTP response through bismuthd, next to a bare `ctr run -d --net-host`
//!    of the same image and command (→ first response);
//! 2. Executable-mode latency per request, next to one `ctr tasks exec` per
//!    request and a plain fork/exec on the host;
//! 3. bismuthd's resident memory idle and with 50 containers;
//! 4. adoption: `kill -9` of bismuthd with 51 containers running, then the
//!    time from its start until it serves (every container adopted: same
//!    task, same svcprovider, Running);
//! 5. the CPU cost of one resync of 200 containers (bismuthd's user +
//!    system time over ten resyncs at `--resync-ms 1000`, idle otherwise),
//!    and the adoption of 200.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bismuth_model::{ContainerState, InvokeMode};
use bismuth_testkit::bench::{env_n, ms, rss_kib, stats};
use bismuth_testkit::images;
use support::{argv, busybox, http_get, Host};

async fn first_response(url: &str, deadline: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(url).await {
            return Instant::now();
        }
        assert!(start.elapsed() < deadline, "no response from {url}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() {
    let runs = env_n("BENCH_STARTS", 15);
    let requests = env_n("BENCH_REQUESTS", 500);
    let many = env_n("BENCH_CONTAINERS", 50);
    let resyncs = env_n("BENCH_RESYNC_CONTAINERS", 200);
    let mut host = Host::start().await;
    let pid = host.daemon_pid().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = rss_kib(pid);

    // 1. Start-up, bismuthd.
    let server = |port: u16| {
        busybox(InvokeMode::Server(
            argv(&[
                "/bin/sh",
                "-c",
                &format!("echo ok > /tmp/index.html && exec httpd -f -p {port} -h /tmp"),
            ]),
            port,
        ))
    };
    let (mut to_running, mut to_response) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let def = server(8080);
        let fid = bismuth_zk::store::functions::create_function(&host.zk, &def)
            .await
            .unwrap();
        let t0 = Instant::now();
        let cid = bismuth_zk::store::backends::add_backend(&host.zk, fid, support::NODE)
            .await
            .unwrap();
        loop {
            if host.state(cid).await == Some(ContainerState::Running) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        to_running.push(ms(t0.elapsed()));
        let url = host.url(&format!("/invoke/{cid}/index.html"));
        let t1 = first_response(&url, Duration::from_secs(30)).await;
        to_response.push(ms(t1 - t0));
        bismuth_zk::store::functions::delete_function(&host.zk, fid)
            .await
            .unwrap();
    }
    // 1b. Start-up, bare ctr run of the same image and command.
    let mut bare = Vec::new();
    for i in 0..runs {
        let port = 18080 + i as u16;
        let id = format!("bare-{i}");
        let cmd = format!("echo ok > /tmp/index.html && exec httpd -f -p {port} -h /tmp");
        let t0 = Instant::now();
        let out = host
            .ctd
            .ctr(
                support::NS,
                &[
                    "run",
                    "-d",
                    "--net-host",
                    images::BUSYBOX_REF,
                    &id,
                    "/bin/sh",
                    "-c",
                    &cmd,
                ],
            )
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t1 = first_response(
            &format!("http://127.0.0.1:{port}/index.html"),
            Duration::from_secs(30),
        )
        .await;
        bare.push(ms(t1 - t0));
        let _ = host
            .ctd
            .ctr(support::NS, &["tasks", "kill", "-s", "SIGKILL", &id]);
        let _ = host.ctd.ctr(support::NS, &["tasks", "delete", "-f", &id]);
        let _ = host.ctd.ctr(support::NS, &["containers", "delete", &id]);
    }
    println!("== start-up (busybox httpd), {runs} runs each");
    let r = stats("bismuthd: znode created -> Running", to_running);
    let f = stats("bismuthd: znode created -> first response", to_response);
    let b = stats("bare `ctr run -d --net-host` -> first response", bare);
    println!(
        "ratio first response bismuthd / ctr run: {:.2}x (Running: {:.2}x)",
        f / b,
        r / b
    );

    // 2. Executable-mode latency.
    let (_, cid) = host
        .deploy(&busybox(InvokeMode::Executable(argv(&["/bin/cat"]))))
        .await;
    host.wait_state(cid, ContainerState::Running, Duration::from_secs(30))
        .await;
    let url = host.url(&format!("/invoke/{cid}"));
    for _ in 0..20 {
        support::http_request("POST", &url, "warm").await.unwrap();
    }
    let mut exec = Vec::new();
    for _ in 0..requests {
        let t = Instant::now();
        let (status, _, body) = support::http_request("POST", &url, "hello").await.unwrap();
        exec.push(ms(t.elapsed()));
        assert_eq!((status, body.as_str()), (200, "hello"));
    }
    let task = cid.to_string();
    let mut ctr_exec = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let out = host
            .ctd
            .ctr(
                support::NS,
                &[
                    "tasks",
                    "exec",
                    "--exec-id",
                    &format!("e{i}"),
                    &task,
                    "/bin/true",
                ],
            )
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ctr_exec.push(ms(t.elapsed()));
    }
    let mut fork = Vec::new();
    for _ in 0..requests {
        let t = Instant::now();
        let out = std::process::Command::new("/bin/busybox")
            .arg("true")
            .output()
            .unwrap();
        assert!(out.status.success());
        fork.push(ms(t.elapsed()));
    }
    println!("== Executable mode (/bin/cat, 5-byte body)");
    stats("bismuthd /invoke, one process per request", exec);
    stats("`ctr tasks exec` per request (the old way)", ctr_exec);
    stats("fork/exec of busybox on the host", fork);

    // 3. Memory.
    let mut ids = Vec::new();
    for _ in 0..many {
        ids.push(
            host.deploy(&busybox(InvokeMode::Executable(argv(&["/bin/cat"]))))
                .await
                .1,
        );
    }
    for cid in &ids {
        host.wait_state(*cid, ContainerState::Running, Duration::from_secs(120))
            .await;
    }
    let (loaded_rss, _) = rss_kib(pid);
    println!("== bismuthd resident memory");
    println!(
        "idle (no containers):        {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "with {} containers:          {:.1} MiB",
        many + 1,
        loaded_rss as f64 / 1024.0
    );

    // 4. Adoption after kill -9.
    let adopted = adopt(&mut host).await;
    println!("== adoption after kill -9");
    println!(
        "{} containers: start -> serving with all adopted: {:.0} ms",
        many + 1,
        adopted
    );

    // 5. One resync of many containers.
    while ids.len() + 1 < resyncs {
        ids.push(
            host.deploy(&busybox(InvokeMode::Executable(argv(&["/bin/cat"]))))
                .await
                .1,
        );
    }
    for cid in &ids {
        host.wait_state(*cid, ContainerState::Running, Duration::from_secs(300))
            .await;
    }
    host.extra_args = vec!["--resync-ms".into(), "1000".into()];
    let adopted = adopt(&mut host).await;
    let pid = host.daemon_pid().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = cpu_ms(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let per_resync = (cpu_ms(pid) - before) / 10.0;
    let (rss, _) = rss_kib(pid);
    println!("== {resyncs} containers");
    println!("adoption: start -> serving with all adopted: {adopted:.0} ms");
    println!(
        "CPU per resync (user+system, incl. idle): {per_resync:.1} ms = {:.0} us per container",
        per_resync * 1000.0 / resyncs as f64
    );
    println!("resident memory: {:.1} MiB", rss as f64 / 1024.0);
}

/// `kill -9` of bismuthd, then its start until it serves; milliseconds.
async fn adopt(host: &mut Host) -> f64 {
    host.kill_daemon();
    let t = Instant::now();
    host.start_daemon().await;
    ms(t.elapsed())
}

/// User + system CPU time of a process, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks * 10.0
}
