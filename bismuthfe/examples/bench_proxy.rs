//! Benchmark: wrk straight to a backend versus through bismuthfe.
//!
//! Starts a real ZooKeeper (test kit), a minimal HTTP backend standing in
//! for bismuthd on 127.0.0.2, and the release `bismuthfe` binary three
//! times (as deployed, with `--no-metrics`, and with `--otlp-endpoint` to an
//! in-process OTLP receiver); then runs wrk with 1 and with 8 keep-alive
//! connections against each and prints Markdown tables: bismuthfe against a
//! direct call, and the cost of metrics and of span export from interleaved
//! rounds (`BENCH_ROUNDS`, default 5; the order rotates every round).
//! Run it with `bench/bismuthfe.sh` (builds first).

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bismuth_model::{paths, ContainerState, FunctionDefinition, InvokeMode, Route};
use bismuth_testkit::bench::{self, WrkStats};
use bismuth_testkit::{free_port, OtlpReceiver, ZooKeeper};
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
    let (cid, zk) = rt.block_on(async {
        let zk = Zk::connect(ZkConfig::new(&zookeeper.connect_string(), "bench")?).await?;
        zk.bootstrap().await?;
        nodes::provision(&zk, NODE).await?;
        // Alive, as its bismuthd would hold it (this session outlives the run).
        zk.create_ephemeral(
            &paths::node_alive(NODE),
            br#"{"cpu":4.0,"memory":1073741824}"#,
        )
        .await?;
        let def = FunctionDefinition {
            image: "busybox".into(),
            repo: None,
            svc_group_id: None,
            cpu: 1.0,
            memory: 64 << 20,
            svc_quotas: None,
            invoke_mode: InvokeMode::Server(vec!["/bin/httpd".into()], 8080),
            max_instances: 1,
            min_instances: None,
            concurrency: None,
            idle_timeout: None,
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
        anyhow::Ok((cid, zk))
    })?;
    // The session holds the node's liveness: keep it (and its runtime) going.
    std::thread::spawn(move || {
        let _zk = zk;
        rt.block_on(std::future::pending::<()>())
    });

    let (mut fe, fe_port) = start_fe(&zookeeper, backend_port, &[])?;
    let (mut bare, bare_port) = start_fe(&zookeeper, backend_port, &["--no-metrics"])?;
    let otlp_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let receiver = otlp_rt.block_on(OtlpReceiver::start())?;
    let endpoint = receiver.endpoint();
    std::thread::spawn(move || otlp_rt.block_on(std::future::pending::<()>()));
    let (mut traced, traced_port) =
        start_fe(&zookeeper, backend_port, &["--otlp-endpoint", &endpoint])?;
    for port in [fe_port, bare_port, traced_port] {
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
    let exporting = format!("http://127.0.0.1:{traced_port}/");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for (threads, conns) in [(1, 1), (2, 8)] {
        let d = wrk(&direct, "direct.test", threads, conns, seconds)?;
        let f = wrk(&through, "bench.test", threads, conns, seconds)?;
        // As deployed, --no-metrics and exporting spans, interleaved; the
        // order rotates so none always runs first.
        let urls = [&through, &without, &exporting];
        let mut rps = [vec![], vec![], vec![]];
        for round in 0..rounds {
            for k in 0..3 {
                let i = (round + k) % 3;
                rps[i].push(wrk(urls[i], "bench.test", threads, conns, seconds)?.rps);
            }
        }
        costs.push((conns, rps));
        rows.push((conns, d, f));
    }
    let loaded_rss = bench::rss_kib(fe.id()).0;
    let bare_rss = bench::rss_kib(bare.id()).0;
    let traced_rss = bench::rss_kib(traced.id()).0;
    for p in [&mut fe, &mut bare, &mut traced] {
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
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median_ratio = |a: &[f64], b: &[f64]| {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!("{rounds} interleaved rounds of {seconds} s each; ratios against --no-metrics (mean of rounds, and the median of per-round ratios):");
    println!();
    println!("| connections | --no-metrics | with metrics | ratio | median | + OTLP export | ratio | median |");
    println!("|---|---|---|---|---|---|---|---|");
    for (conns, [on, off, otlp]) in &costs {
        println!(
            "| {conns} | {:.0} req/s | {:.0} req/s | **{:.3}x** | {:.3}x | {:.0} req/s | **{:.3}x** | {:.3}x |",
            mean(off),
            mean(on),
            mean(on) / mean(off),
            median_ratio(on, off),
            mean(otlp),
            mean(otlp) / mean(off),
            median_ratio(otlp, off),
        );
    }
    println!();
    println!(
        "bismuthfe resident memory: idle {idle_rss} KiB, after load {loaded_rss} KiB \
         (--no-metrics: {bare_rss} KiB, exporting spans: {traced_rss} KiB); spans received: {}",
        receiver.count()
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
