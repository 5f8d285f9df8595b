//! The invocation path hop by hop (rerun with `bench/path.sh`): a busybox
//! `httpd` function in `bismuth_e2e::System` (release builds), and wrk with
//! one connection for `BENCH_SECONDS` (10) each, in interleaved rounds
//! (`BENCH_ROUNDS`, 3), against: the container's own address and port from
//! the host (the baseline: what any proxy must reach), bismuthd's
//! `/invoke/{cid}/`, and bismuthfe by `Host`. Each hop's added p50 is the
//! difference to the previous step.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bismuth_e2e::System;
use bismuth_testkit::bench::{env_n, wrk, WrkStats};
use bismuth_testkit::{http, images};
use serde_json::json;

#[tokio::main]
async fn main() {
    let seconds = env_n("BENCH_SECONDS", 10);
    let rounds = env_n("BENCH_ROUNDS", 3);
    let sys = System::start().await.unwrap();
    let id = sys
        .create(&json!({
            "image": images::BUSYBOX_REF, "cpu": 1.0, "memory": 67108864,
            "invoke_mode": {"Server": [["/bin/sh", "-c",
                "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"], 8080]},
            "routes": [{"hostname": "path.bench"}],
        }))
        .await;
    let cid = sys
        .wait_status(id, "Running", Duration::from_secs(60))
        .await;
    let fe = sys.fe_url("/index.html");
    let t0 = Instant::now();
    while !http::request(::http::Method::GET, &fe, &[("host", "path.bench")], "")
        .await
        .is_ok_and(|r| r.status == 200)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "bismuthfe never routed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let node = format!("http://127.0.0.1:{}", sys.bismuthd_port);
    let info = http::get(&format!("{node}/containers/{cid}"))
        .await
        .unwrap()
        .json();
    let address = info["address"].as_str().unwrap().to_owned();
    let steps = [
        (
            "the container itself",
            format!("http://{address}:8080/index.html"),
            "x",
        ),
        (
            "through bismuthd",
            format!("{node}/invoke/{cid}/index.html"),
            "x",
        ),
        ("through bismuthfe and bismuthd", fe.clone(), "path.bench"),
    ];
    let mut runs: Vec<Vec<WrkStats>> = vec![Vec::new(); steps.len()];
    for round in 0..rounds {
        for k in 0..steps.len() {
            let i = (round + k) % steps.len();
            let (_, url, host) = &steps[i];
            let stats = tokio::task::block_in_place(|| {
                wrk(&[
                    "-t1".into(),
                    "-c1".into(),
                    format!("-d{seconds}s"),
                    "-H".into(),
                    format!("Host: {host}"),
                    url.clone(),
                ])
            })
            .unwrap();
            runs[i].push(stats);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("{rounds} interleaved rounds of {seconds} s, 1 connection; medians of the rounds");
    println!();
    println!("| path | requests/s | p50 | p99 | added p50 (this hop) |");
    println!("|---|---|---|---|---|");
    let mut previous = None;
    for (i, (name, _, _)) in steps.iter().enumerate() {
        let rps = median(runs[i].iter().map(|s| s.rps).collect());
        let p50 = median(runs[i].iter().map(|s| s.p50_ms).collect());
        let p99 = median(runs[i].iter().map(|s| s.p99_ms).collect());
        let added = previous.map_or("—".to_owned(), |p: f64| format!("+{:.3} ms", p50 - p));
        println!("| {name} | {rps:.0} | {p50:.3} ms | {p99:.3} ms | {added} |");
        previous = Some(p50);
    }
}
