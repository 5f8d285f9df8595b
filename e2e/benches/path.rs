//! The invocation path hop by hop (rerun with `bench/path.sh`): a busybox
//! `httpd` function in `bismuth_e2e::System` (release builds), and wrk with
//! one connection for `BENCH_SECONDS` (10) each, in interleaved rounds
//! (`BENCH_ROUNDS`, 3), against: the container's own address and port from
//! the host (the baseline: what any proxy must reach), bismuthd's
//! `/invoke/{cid}/`, and bismuthfe by `Host`. Each hop's added p50 is the
//! difference to the previous step.
//!
//! busybox `httpd` closes every connection after one response, so bismuthd
//! must connect (and the container fork a handler) for every request, and
//! wrk does not count its own connects. So the program also times
//! `BENCH_REQUESTS` (2000) sequential requests itself, in rounds: to the
//! container with a new connection each (what bismuthd does), and to
//! bismuthd and bismuthfe over one kept-alive connection each (what their
//! clients do). Those are the fair per-hop figures.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bismuth_e2e::System;
use bismuth_testkit::bench::{env_n, ms, pct, wrk, WrkStats};
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
    // Timed here, connects included where the hop must make them.
    let requests = env_n("BENCH_REQUESTS", 2000);
    let per_round = requests / rounds.max(1);
    let direct = format!("{address}:8080");
    let node_addr = format!("127.0.0.1:{}", sys.bismuthd_port);
    let fe_addr = format!("127.0.0.1:{}", sys.endpoints.fe_port);
    let timed = [
        (
            "the container, a new connection each",
            direct,
            "/index.html".to_owned(),
            "x",
            false,
        ),
        (
            "through bismuthd, kept alive",
            node_addr,
            format!("/invoke/{cid}/index.html"),
            "x",
            true,
        ),
        (
            "through bismuthfe and bismuthd, kept alive",
            fe_addr,
            "/index.html".to_owned(),
            "path.bench",
            true,
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); timed.len()];
    for round in 0..rounds {
        for k in 0..timed.len() {
            let i = (round + k) % timed.len();
            let (_, addr, path, host, keep) = timed[i].clone();
            let got = tokio::task::spawn_blocking(move || {
                sequential(&addr, &path, host, keep, per_round)
            })
            .await
            .unwrap();
            samples[i].extend(got);
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
    println!();
    println!("{requests} sequential requests per path in {rounds} interleaved rounds, timed by this program (connects included where the hop makes them):");
    println!();
    println!("| path | p50 | p90 | p99 | added p50 (this hop) |");
    println!("|---|---|---|---|---|");
    let mut previous = None;
    for (i, (name, ..)) in timed.iter().enumerate() {
        let mut v = samples[i].clone();
        v.sort_by(f64::total_cmp);
        let p50 = pct(&v, 0.5);
        let added = previous.map_or("—".to_owned(), |p: f64| format!("+{:.3} ms", p50 - p));
        println!(
            "| {name} | {p50:.3} ms | {:.3} ms | {:.3} ms | {added} |",
            pct(&v, 0.9),
            pct(&v, 0.99)
        );
        previous = Some(p50);
    }
}

/// `n` sequential `GET path` to `addr`, each timed to the last byte of its
/// response, in milliseconds: over one kept-alive connection (`keep`), or
/// a new connection per request (timed from the connect).
fn sequential(addr: &str, path: &str, host: &str, keep: bool, n: usize) -> Vec<f64> {
    use std::io::{Read, Write};
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        if keep { "" } else { "Connection: close\r\n" }
    );
    let connect = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s
    };
    let mut conn = keep.then(connect);
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..n {
        let t = Instant::now();
        let mut s = match conn.take() {
            Some(s) => s,
            None => connect(),
        };
        s.write_all(request.as_bytes()).unwrap();
        // Read the head, then the body by Content-Length (or to the end).
        let mut got = Vec::new();
        let (head_end, length) = loop {
            let k = s.read(&mut buf).unwrap();
            assert!(k > 0, "{addr} closed before a whole head");
            got.extend_from_slice(&buf[..k]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                assert!(
                    head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"),
                    "{head}"
                );
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                break (end + 4, length);
            }
        };
        match length {
            Some(len) => {
                while got.len() < head_end + len {
                    let k = s.read(&mut buf).unwrap();
                    assert!(k > 0, "{addr} closed inside a body");
                    got.extend_from_slice(&buf[..k]);
                }
            }
            None => while s.read(&mut buf).unwrap() > 0 {},
        }
        out.push(ms(t.elapsed()));
        if keep {
            conn = Some(s);
        }
    }
    out
}
