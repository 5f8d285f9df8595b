//! Elasticity through the whole system (rerun with `bench/autoscale.sh`):
//! the real api, bismuthfe, bismuthd and containerd of `bismuth_e2e::System`
//! on one host, release builds.
//! 1. Scale from zero: a `min_instances: 0` function with a short
//!    `idle_timeout`, `BENCH_COLD` (20) times: wait until it has no instance
//!    and containerd no task, then one `GET` through bismuthfe, timed to the
//!    first response. Busybox `httpd` and Python's `http.server`, each beside
//!    its baseline, interleaved: a bare `ctr run -d --net-host` of the same
//!    image and command until its port answers.
//! 2. A load step: `BENCH_CLIENTS` (6) clients start at once on a
//!    `concurrency: 1` function (100 ms per request) at one instance; the
//!    time until `BENCH_CLIENTS` instances run, and the latency of the
//!    requests meanwhile (p50, p99).
//! 3. From the last request to zero: the time until the api shows no
//!    instance, and until containerd has no task (`idle_timeout` 2 s).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bismuth_e2e::{Flags, System};
use bismuth_testkit::bench::{env_n, ms, pct, stats};
use bismuth_testkit::{http, images};
use serde_json::{json, Value};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(120);
const PYTHON: &str = "docker.io/bismuth/python:test";

/// The busybox httpd and Python servers: (name, image, command, port).
const SERVERS: [(&str, &str, &str, u16); 2] = [
    (
        "busybox httpd",
        images::BUSYBOX_REF,
        "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
        8080,
    ),
    (
        "python http.server",
        PYTHON,
        "cd /tmp && echo ok > index.html && exec /usr/local/bin/python3 -m http.server 8080",
        8080,
    ),
];

async fn get_ok(url: &str, host: Option<&str>) -> bool {
    let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
    http::request(::http::Method::GET, url, &headers, "")
        .await
        .is_ok_and(|r| r.status == 200)
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn backends(sys: &System, id: Uuid) -> usize {
    sys.function(id).await["backends"]
        .as_array()
        .map_or(0, Vec::len)
}

fn no_task(sys: &System) -> bool {
    sys.ctr(&["tasks", "ls", "-q"]).trim().is_empty()
}

/// One bare `ctr run` of `image` and `cmd` to its first response, in ms.
async fn bare(sys: &System, image: &str, cmd: &str, port: u16, i: usize) -> f64 {
    let id = format!("bare-{i}");
    let ctd = sys.containerd.socket();
    let ctr = |args: Vec<String>| {
        let ctd = ctd.clone();
        async move {
            tokio::process::Command::new("ctr")
                .arg("--address")
                .arg(&ctd)
                .args(["--namespace", bismuth_e2e::NAMESPACE])
                .args(args)
                .output()
                .await
                .unwrap()
        }
    };
    let t0 = Instant::now();
    let out = ctr(
        ["run", "-d", "--net-host", image, &id, "/bin/sh", "-c", cmd]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let url = format!("http://127.0.0.1:{port}/index.html");
    until("the bare container to answer", async || {
        get_ok(&url, None).await
    })
    .await;
    let took = ms(t0.elapsed());
    let out = ctr(["tasks", "delete", "--force", &id]
        .map(String::from)
        .to_vec())
    .await;
    assert!(out.status.success(), "{out:?}");
    let out = ctr(["containers", "delete", &id].map(String::from).to_vec()).await;
    assert!(out.status.success(), "{out:?}");
    took
}

#[tokio::main]
async fn main() {
    let cold_n = env_n("BENCH_COLD", 20);
    let clients = env_n("BENCH_CLIENTS", 6);
    let sys = Arc::new(
        System::start_flags(Flags {
            bismuthd: &["--cpu", "64"],
            ..Flags::default()
        })
        .await
        .unwrap(),
    );

    // 1. Scale from zero, beside bare `ctr run`, interleaved.
    for (i, (name, image, cmd, port)) in SERVERS.iter().enumerate() {
        let host = format!("cold{i}.bench");
        let id = sys
            .create(&json!({
                "image": image, "cpu": 1.0, "memory": 134217728,
                "invoke_mode": {"Server": [["/bin/sh", "-c", cmd], port]},
                "max_instances": 1, "min_instances": 0, "idle_timeout": 0.3,
                "routes": [{"hostname": host}],
            }))
            .await;
        let (mut cold, mut base) = (Vec::new(), Vec::new());
        for round in 0..cold_n {
            until("the function to go to zero", async || {
                backends(&sys, id).await == 0 && no_task(&sys)
            })
            .await;
            let t0 = Instant::now();
            let fe = sys.fe_url("/");
            assert!(
                get_ok(&fe, Some(&host)).await,
                "{name}: cold request failed"
            );
            cold.push(ms(t0.elapsed()));
            // While it idles back to zero, the baseline (nothing else runs:
            // the function's instance is stopped first).
            until("the function to go to zero", async || {
                backends(&sys, id).await == 0 && no_task(&sys)
            })
            .await;
            base.push(bare(&sys, image, cmd, *port, round).await);
        }
        println!("== {name}: scale from zero, {cold_n} times");
        let c = stats("zero -> first response through bismuthfe", cold.clone());
        let b = stats("bare `ctr run` -> first response", base.clone());
        cold.sort_by(f64::total_cmp);
        base.sort_by(f64::total_cmp);
        println!(
            "ratio p50 {:.2}x, p90 {:.2}x",
            c / b,
            pct(&cold, 0.9) / pct(&base, 0.9)
        );
        sys.api(::http::Method::DELETE, &format!("/function/{id}"), "")
            .await;
    }

    // 2. A load step on a concurrency-1 function.
    let id = sys
        .create(&json!({
            "image": images::BUSYBOX_REF, "cpu": 0.1, "memory": 33554432,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "sleep 0.1; echo ok"]},
            "max_instances": clients, "min_instances": 0, "concurrency": 1,
            "idle_timeout": 2, "routes": [{"hostname": "step.bench"}],
        }))
        .await;
    until("one instance", async || {
        sys.function(id).await["instances"]["running"] == 1
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let step = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (sys, stop, latencies, failed) = (
                Arc::clone(&sys),
                Arc::clone(&stop),
                Arc::clone(&latencies),
                Arc::clone(&failed),
            );
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let t0 = Instant::now();
                    if get_ok(&sys.fe_url("/"), Some("step.bench")).await {
                        latencies.lock().unwrap().push(ms(t0.elapsed()));
                    } else {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    until("every instance running", async || {
        sys.function(id).await["instances"]["running"].as_u64() >= Some(clients as u64)
    })
    .await;
    let reached = step.elapsed();
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let last = Instant::now();
    println!("== load step: {clients} clients on a concurrency-1 function (100 ms per request)");
    println!(
        "1 -> {clients} instances Running after {:.0} ms; {} requests failed",
        ms(reached),
        failed.load(Relaxed)
    );
    stats(
        "request latency during the step",
        latencies.lock().unwrap().clone(),
    );

    // 3. From the last request to zero.
    until("the api to show zero", async || {
        let f: Value = sys.function(id).await;
        f["instances"]["running"] == 0 && backends(&sys, id).await == 0
    })
    .await;
    let api_zero = last.elapsed();
    until("containerd to have no task", async || no_task(&sys)).await;
    println!("== last request -> zero (idle_timeout 2 s)");
    println!(
        "no instance in the api after {:.0} ms, no task in containerd after {:.0} ms",
        ms(api_zero),
        ms(last.elapsed())
    );
}
