//! bismuthd benchmark (rerun with `bench/bismuthd.sh`):
//! 1. start-up: container znode created → Running in ZooKeeper, and → first
//!    HTTP response through bismuthd, next to a bare `ctr run -d --net-host`
//!    of the same image and command (→ first response); the same under
//!    gVisor (`"isolation": "sandbox"`) when runsc is installed;
//! 2. Executable-mode latency per request, next to one `ctr tasks exec` per
//!    request and a plain fork/exec on the host; Server and Executable
//!    requests under gVisor next to runc;
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

use bismuth_model::{ContainerState, FunctionDefinition, InvokeMode, Isolation};
use bismuth_testkit::bench::{env_n, ms, rss_kib, stats};
use bismuth_testkit::images;
use support::{argv, busybox, http_get, Host};

/// `runs` starts of `def`: znode created → Running, and → first response.
async fn start_up(host: &Host, def: &FunctionDefinition, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut to_running, mut to_response) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let fid = bismuth_zk::store::functions::create_function(&host.zk, def)
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
    (to_running, to_response)
}

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
    let (to_running, to_response) = start_up(&host, &server(8080), runs).await;
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

    // 1c. The same under gVisor ("isolation": "sandbox"), when runsc is here.
    let gvisor = std::path::Path::new("/usr/bin/runsc").exists();
    if gvisor {
        let mut def = server(8080);
        def.isolation = Some(Isolation::Sandbox);
        def.memory = 128 << 20;
        let (running, response) = start_up(&host, &def, runs).await;
        println!("== start-up under gVisor (runsc, ptrace platform), {runs} runs");
        let rs = stats("sandbox: znode created -> Running", running);
        let fs = stats("sandbox: znode created -> first response", response);
        println!(
            "ratio first response sandbox / runc: {:.2}x; sandbox / ctr run: {:.2}x (Running: {:.2}x of runc)",
            fs / f,
            fs / b,
            rs / r
        );
    }

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
    let e = stats("bismuthd /invoke, one process per request", exec);
    stats("`ctr tasks exec` per request (the old way)", ctr_exec);
    stats("fork/exec of busybox on the host", fork);

    // 2b. Requests under gVisor next to runc: Server (httpd) and Executable.
    if gvisor {
        let mut lat = Vec::new();
        for isolation in [None, Some(Isolation::Sandbox)] {
            let mut srv = server(8080);
            srv.isolation = isolation;
            srv.memory = 128 << 20;
            let mut cat = busybox(InvokeMode::Executable(argv(&["/bin/cat"])));
            cat.isolation = isolation;
            cat.memory = 128 << 20;
            let mut both = Vec::new();
            for def in [srv, cat] {
                let (_, cid) = host.deploy(&def).await;
                host.wait_state(cid, ContainerState::Running, Duration::from_secs(60))
                    .await;
                both.push(cid);
            }
            let get = host.url(&format!("/invoke/{}/index.html", both[0]));
            let post = host.url(&format!("/invoke/{}", both[1]));
            first_response(&get, Duration::from_secs(30)).await;
            let (mut g, mut p) = (Vec::new(), Vec::new());
            for i in 0..requests + 20 {
                let t = Instant::now();
                let (status, _) = http_get(&get).await.unwrap();
                let dg = ms(t.elapsed());
                let t = Instant::now();
                let (s2, _, body) = support::http_request("POST", &post, "hello").await.unwrap();
                let dp = ms(t.elapsed());
                assert_eq!((status, s2, body.as_str()), (200, 200, "hello"));
                if i >= 20 {
                    g.push(dg);
                    p.push(dp);
                }
            }
            lat.push((g, p));
        }
        let (runc, sandbox) = (lat.remove(0), lat.remove(0));
        println!("== requests under gVisor next to runc ({requests} each, sequential)");
        let gr = stats("runc: Server (httpd) GET /index.html", runc.0);
        let gs = stats("sandbox: Server (httpd) GET /index.html", sandbox.0);
        let pr = stats("runc: Executable /bin/cat", runc.1);
        let ps = stats("sandbox: Executable /bin/cat", sandbox.1);
        println!(
            "ratio sandbox / runc: Server {:.2}x, Executable {:.2}x (Executable alone above: {e:.2} ms)",
            gs / gr,
            ps / pr
        );
    }

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
