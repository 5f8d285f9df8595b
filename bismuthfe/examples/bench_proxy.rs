//! Benchmark: wrk straight to a backend versus through bismuthfe, HAProxy
//! and nginx.
//!
//! Starts a real ZooKeeper (test kit), a minimal HTTP backend standing in
//! for bismuthd on 127.0.0.2, the release `bismuthfe` binary three times
//! (as deployed, with `--no-metrics`, and with `--otlp-endpoint` to an
//! in-process OTLP receiver), and HAProxy and nginx from Debian with the
//! configs in `deploy/bench/` (one thread or worker, keep-alive to the
//! backend, the same Host-to-`/invoke` rewrite); then runs wrk with 1 and
//! with 8 keep-alive connections against each in interleaved rounds
//! (`BENCH_ROUNDS`, default 5; the order rotates every round) and prints
//! Markdown tables: each against a direct call, bismuthfe against the two
//! peers, and the cost of metrics and of span export.
//! Run it with `bench/bismuthfe.sh` (builds and installs first).

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
            isolation: None,
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

    let (fe, fe_port) = start_fe(&zookeeper, backend_port, &[])?;
    let (bare, bare_port) = start_fe(&zookeeper, backend_port, &["--no-metrics"])?;
    let otlp_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let receiver = otlp_rt.block_on(OtlpReceiver::start())?;
    let endpoint = receiver.endpoint();
    std::thread::spawn(move || otlp_rt.block_on(std::future::pending::<()>()));
    let (traced, traced_port) =
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

    let dir = tempfile::tempdir()?;
    let backend = format!("{NODE}:{backend_port}");
    let (haproxy, haproxy_port) = start_peer("haproxy", dir.path(), &backend, cid)?;
    let (nginx, nginx_port) = start_peer("nginx", dir.path(), &backend, cid)?;
    for port in [haproxy_port, nginx_port] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(addr, "bench.test", "/") != Some(200) {
            anyhow::ensure!(Instant::now() < deadline, "a peer proxy did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let targets = [
        (
            "direct to backend",
            format!("http://{backend}/invoke/{cid}/"),
        ),
        ("bismuthfe", format!("http://127.0.0.1:{fe_port}/")),
        (
            "bismuthfe --no-metrics",
            format!("http://127.0.0.1:{bare_port}/"),
        ),
        (
            "bismuthfe exporting spans",
            format!("http://127.0.0.1:{traced_port}/"),
        ),
        (
            "HAProxy 2.6 (1 thread)",
            format!("http://127.0.0.1:{haproxy_port}/"),
        ),
        (
            "nginx 1.22 (1 worker)",
            format!("http://127.0.0.1:{nginx_port}/"),
        ),
    ];
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // Every target in every round, the order rotating so none always runs
    // first (or right after the same neighbour).
    let mut runs: Vec<(u32, Vec<Vec<WrkStats>>)> = Vec::new();
    for (threads, conns) in [(1, 1), (2, 8)] {
        let mut per: Vec<Vec<WrkStats>> = vec![Vec::new(); targets.len()];
        for round in 0..rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                per[i].push(wrk(&targets[i].1, "bench.test", threads, conns, seconds)?);
            }
        }
        runs.push((conns, per));
    }
    let loaded_rss = bench::rss_kib(fe.id()).0;
    let bare_rss = bench::rss_kib(bare.id()).0;
    let traced_rss = bench::rss_kib(traced.id()).0;
    drop((fe, bare, traced, haproxy, nginx));

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("{rounds} interleaved rounds of {seconds} s per target; requests/s is the mean of the rounds, p50 and p99 their medians.");
    println!();
    println!("| connections | path | requests/s | p50 | p99 | throughput / direct |");
    println!("|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for (conns, per) in &runs {
        let rps: Vec<f64> = per
            .iter()
            .map(|r| mean(&r.iter().map(|s| s.rps).collect::<Vec<_>>()))
            .collect();
        let p50: Vec<f64> = per
            .iter()
            .map(|r| median(r.iter().map(|s| s.p50_ms).collect()))
            .collect();
        let p99: Vec<f64> = per
            .iter()
            .map(|r| median(r.iter().map(|s| s.p99_ms).collect()))
            .collect();
        for (i, (name, _)) in targets.iter().enumerate() {
            println!(
                "| {conns} | {name} | {:.0} | {:.3} ms | {:.3} ms | {:.2}x |",
                rps[i],
                p50[i],
                p99[i],
                rps[i] / rps[0]
            );
        }
        summary.push((*conns, rps, p50, p99));
    }
    println!();
    println!("| connections | bismuthfe / HAProxy req/s | bismuthfe / nginx req/s | p99 bismuthfe / nginx | added p50 over direct: bismuthfe, HAProxy, nginx | metrics cost (vs --no-metrics) | span export cost |");
    println!("|---|---|---|---|---|---|---|");
    for (conns, rps, p50, p99) in &summary {
        println!(
            "| {conns} | **{:.2}x** | **{:.2}x** | **{:.2}x** | +{:.3} / +{:.3} / +{:.3} ms | {:.3}x | {:.3}x |",
            rps[1] / rps[4],
            rps[1] / rps[5],
            p99[1] / p99[5],
            p50[1] - p50[0],
            p50[4] - p50[0],
            p50[5] - p50[0],
            rps[1] / rps[2],
            rps[3] / rps[2],
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

/// Starts HAProxy or nginx (`name`) from its config in `deploy/bench/`,
/// listening on a free loopback port and forwarding to `backend`.
/// A child process stopped when dropped, on every way out of `main` (an
/// error included): nginx's master with SIGTERM, so that it stops its
/// worker (killed, it would leave the worker serving), the rest killed.
struct Reaped(std::process::Child);

impl Reaped {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer(
    name: &str,
    dir: &std::path::Path,
    backend: &str,
    cid: uuid::Uuid,
) -> anyhow::Result<(Reaped, u16)> {
    let port = free_port()?;
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/bench")
        .join(if name == "haproxy" {
            "haproxy.cfg"
        } else {
            "nginx.conf"
        });
    let config = std::fs::read_to_string(&template)?
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@BACKEND@", backend)
        .replace("@CONTAINER@", &cid.to_string())
        .replace("@DIR@", &dir.to_string_lossy());
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(name);
    if name == "haproxy" {
        cmd.args(["-db", "-f"]).arg(&path);
    } else {
        cmd.arg("-c").arg(&path).arg("-p").arg(dir);
    }
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {name}: {e} (apt-get install {name})"))?;
    Ok((Reaped(child), port))
}

/// Starts the release bismuthfe with `extra` flags; the child and its port.
fn start_fe(
    zookeeper: &ZooKeeper,
    backend_port: u16,
    extra: &[&str],
) -> anyhow::Result<(Reaped, u16)> {
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
            std::env::var("FE_THREADS")
                .ok()
                .map(|w| ("BISMUTH_FE_THREADS", w)),
        )
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e} (build with --release first)",
                fe_bin.display()
            )
        })?;
    Ok((Reaped(fe), fe_port))
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
