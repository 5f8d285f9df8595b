//! Benchmark: wrk straight to a backend versus through bismuthfe.
//!
//! Starts a real ZooKeeper (test kit), a minimal HTTP backend standing in
//! for bismuthd on 127.0.0.2, and the release `bismuthfe` binary twice
//! (with request metrics, and with `--no-metrics`); then runs wrk with 1 and
//! with 8 keep-alive connections against each and prints a Markdown table,
//! and the cost of the metrics from interleaved rounds of the two.
//! Run it with `bench/bismuthfe.sh` (builds first).

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bismuth_model::{paths, ContainerState, FunctionDefinition, InvokeMode, Route};
use bismuth_testkit::bench::{self, WrkStats};
use bismuth_testkit::{free_port, ZooKeeper};
use bismuth_zk::store::{backends, functions, nodes};
use bismuth_zk::{Zk, ZkConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const NODE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let zookeeper = ZooKeeper::start()?;
    let backend_port = free_port()?;
    start_backend(SocketAddr::from((NODE, backend_port)));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cid = rt.block_on(async {
        let zk = Zk::connect(ZkConfig::new(&zookeeper.connect_string(), "bench")?).await?;
        zk.bootstrap().await?;
        nodes::provision(&zk, NODE).await?;
        let def = FunctionDefinition {
            image: "busybox".into(),
            repo: None,
            svc_group_id: None,
            cpu: 1.0,
            memory: 64 << 20,
            svc_quotas: None,
            invoke_mode: InvokeMode::Server(vec!["/bin/httpd".into()], 8080),
            max_instances: 1,
            routes: vec![Route {
                hostname: "bench.test".into(),
            }],
        };
        let f = functions::create_function(&zk, &def).await?;
        let cid = backends::add_backend(&zk, f, NODE).await?;
        zk.set(
            &paths::container_status(NODE, cid),
            &[ContainerState::Running.to_byte()],
            None,
        )
        .await?;
        anyhow::Ok(cid)
    })?;

    let (mut fe, fe_port) = start_fe(&zookeeper, backend_port, &[])?;
    let (mut bare, bare_port) = start_fe(&zookeeper, backend_port, &["--no-metrics"])?;
    for port in [fe_port, bare_port] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(addr, "bench.test", "/") != Some(200) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "bismuthfe did not route within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let idle_rss = bench::rss_kib(fe.id()).0;

    let direct = format!("http://{NODE}:{backend_port}/invoke/{cid}/");
    let through = format!("http://127.0.0.1:{fe_port}/");
    let without = format!("http://127.0.0.1:{bare_port}/");
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for (threads, conns) in [(1, 1), (2, 8)] {
        let d = wrk(&direct, "direct.test", threads, conns, seconds)?;
        let f = wrk(&through, "bench.test", threads, conns, seconds)?;
        // Metrics on and off, interleaved, three rounds each.
        let (mut on, mut off) = (0.0, 0.0);
        for _ in 0..3 {
            on += wrk(&through, "bench.test", threads, conns, seconds)?.rps;
            off += wrk(&without, "bench.test", threads, conns, seconds)?.rps;
        }
        costs.push((conns, on / 3.0, off / 3.0));
        rows.push((conns, d, f));
    }
    let loaded_rss = bench::rss_kib(fe.id()).0;
    let bare_rss = bench::rss_kib(bare.id()).0;
    for p in [&mut fe, &mut bare] {
        let _ = p.kill();
        let _ = p.wait();
    }

    println!("| connections | path | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (conns, d, f) in &rows {
        println!(
            "| {conns} | direct to backend | {:.0} | {:.3} ms | {:.3} ms |",
            d.rps, d.p50_ms, d.p99_ms
        );
        println!(
            "| {conns} | through bismuthfe | {:.0} | {:.3} ms | {:.3} ms |",
            f.rps, f.p50_ms, f.p99_ms
        );
        println!(
            "| {conns} | **ratio / added** | **{:.2}x** throughput | **+{:.3} ms** | +{:.3} ms |",
            f.rps / d.rps,
            f.p50_ms - d.p50_ms,
            f.p99_ms - d.p99_ms
        );
    }
    println!();
    println!("| connections | with metrics | --no-metrics | ratio |");
    println!("|---|---|---|---|");
    for (conns, on, off) in &costs {
        println!(
            "| {conns} | {on:.0} req/s | {off:.0} req/s | **{:.3}x** |",
            on / off
        );
    }
    println!();
    println!(
        "bismuthfe resident memory: idle {} KiB, after load {} KiB (without metrics: {} KiB)",
        idle_rss, loaded_rss, bare_rss
    );
    Ok(())
}

/// Starts the release bismuthfe with `extra` flags; the child and its port.
fn start_fe(
    zookeeper: &ZooKeeper,
    backend_port: u16,
    extra: &[&str],
) -> anyhow::Result<(std::process::Child, u16)> {
    let fe_port = free_port()?;
    let exe = std::env::current_exe()?;
    let fe_bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("bismuthfe");
    let fe = Command::new(&fe_bin)
        .args([
            "--zookeeper",
            &zookeeper.connect_string(),
            "--zookeeper-env",
            "bench",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{fe_port}"),
            "--backend-port",
            &backend_port.to_string(),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .envs(
            std::env::var("FE_WORKERS")
                .ok()
                .map(|w| ("TOKIO_WORKER_THREADS", w)),
        )
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e} (build with --release first)",
                fe_bin.display()
            )
        })?;
    Ok((fe, fe_port))
}

fn wrk(url: &str, host: &str, threads: u32, conns: u32, seconds: u64) -> anyhow::Result<WrkStats> {
    bench::wrk(&[
        "-t".into(),
        threads.to_string(),
        "-c".into(),
        conns.to_string(),
        "-d".into(),
        format!("{seconds}s"),
        "-H".into(),
        format!("Host: {host}"),
        url.to_owned(),
    ])
}

fn status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// A minimal keep-alive HTTP server answering "ok", on its own thread.
fn start_backend(addr: SocketAddr) {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
}
