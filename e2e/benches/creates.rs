//! Creates through the whole system (rerun with `bench/creates.sh`): the
//! real api, bismuthd and containerd of `bismuth_e2e::System` on one host.
//! 1. five functions created one at a time, each `POST /function` until the
//!    api reports it Running (the original Bismuth took 1.26 s for five);
//! 2. `BENCH_CREATES` (50) functions created at once, until all are Running;
//! 3. the baseline: the same number of bare `ctr run -d --net-host` of the
//!    same image and command at once, until every port answers;
//! 4. deleting them all at once, until containerd has nothing left.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bismuth_e2e::System;
use bismuth_testkit::bench::{env_n, ms, stats};
use bismuth_testkit::{http, images};
use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(300);

/// A busybox httpd function on `port`.
fn httpd(port: u16) -> serde_json::Value {
    json!({
        "image": images::BUSYBOX_REF,
        "cpu": 0.1,
        "memory": 33554432,
        "invoke_mode": {"Server": [["/bin/sh", "-c",
            format!("echo ok > /tmp/index.html && exec httpd -f -p {port} -h /tmp")], port]},
    })
}

/// `POST /function`, then polls until it is Running; ms from the POST.
async fn create_until_running(sys: &System, port: u16) -> (Uuid, f64) {
    let t0 = Instant::now();
    let id = sys.create(&httpd(port)).await;
    loop {
        if sys.backends(id).await.iter().any(|(_, s)| s == "Running") {
            return (id, ms(t0.elapsed()));
        }
        assert!(t0.elapsed() < LIMIT, "{id} not Running after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn answers(url: &str) {
    let t0 = Instant::now();
    while !http::get(url).await.is_ok_and(|r| r.status == 200) {
        assert!(t0.elapsed() < LIMIT, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let n = env_n("BENCH_CREATES", 50);
    // Room for every instance whatever this machine's size.
    let sys = System::start_with(&["--cpu", "64"]).await.unwrap();

    // 1. Five, one at a time.
    let t0 = Instant::now();
    let mut one = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (id, t) = create_until_running(&sys, 8080).await;
        one.push(t);
        ids.push(id);
    }
    let five = ms(t0.elapsed());
    println!("== five creates one at a time, each until Running");
    stats("POST /function -> Running", one);
    println!("total for five: {five:.0} ms (original Bismuth: 1260 ms)");
    for id in ids {
        sys.api(::http::Method::DELETE, &format!("/function/{id}"), "")
            .await;
    }

    // 2. n at once.
    let t0 = Instant::now();
    let runs = join_all((0..n).map(|_| create_until_running(&sys, 8080))).await;
    let all = ms(t0.elapsed());
    println!("== {n} creates at once, until all are Running");
    stats(
        "POST /function -> Running (each)",
        runs.iter().map(|r| r.1).collect(),
    );
    println!("all {n} Running after {all:.0} ms");

    // 4. Delete them at once.
    let t0 = Instant::now();
    let sys_ref = &sys;
    join_all(runs.iter().map(|(id, _)| async move {
        let path = format!("/function/{id}");
        sys_ref.api(::http::Method::DELETE, &path, "").await
    }))
    .await;
    while !sys.ctr(&["containers", "ls", "-q"]).trim().is_empty() {
        assert!(t0.elapsed() < LIMIT, "containers left after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "== {n} deletes at once: containerd empty after {:.0} ms",
        ms(t0.elapsed())
    );

    // 3. Baseline: n bare `ctr run` at once, each on its own host port.
    let t0 = Instant::now();
    let bare = (0..n).map(|i| {
        let sys = &sys;
        async move {
            let port = 20000 + i as u16;
            let id = format!("bare-{i}");
            let cmd = format!("echo ok > /tmp/index.html && exec httpd -f -p {port} -h /tmp");
            let ctd = sys.containerd.socket();
            let out = tokio::process::Command::new("ctr")
                .arg("--address")
                .arg(&ctd)
                .args([
                    "--namespace",
                    bismuth_e2e::NAMESPACE,
                    "run",
                    "-d",
                    "--net-host",
                ])
                .args([images::BUSYBOX_REF, &id, "/bin/sh", "-c", &cmd])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            answers(&format!("http://127.0.0.1:{port}/index.html")).await;
            ms(t0.elapsed())
        }
    });
    let bare = join_all(bare).await;
    let bare_all = ms(t0.elapsed());
    println!("== baseline: {n} bare `ctr run -d --net-host` at once, until every port answers");
    stats("ctr run -> first response (each)", bare);
    println!("all {n} answering after {bare_all:.0} ms");
    println!(
        "ratio all Running through the api / all bare ctr run: {:.2}x",
        all / bare_all
    );
}
