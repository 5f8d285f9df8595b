//! Benchmark: api create and status latency and throughput against a real
//! ZooKeeper, with the bare ZooKeeper transaction as the baseline, and the
//! api's resident memory. Run with `bench/api.sh`.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bismuth_model::{paths, FunctionDefinition, NodeCapacity};
use bismuth_testkit::{bench, free_port, ZooKeeper};
use bismuth_zk::store::{functions, nodes};
use bismuth_zk::{Zk, ZkConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const DEF: &str = r#"{"image": "busybox", "cpu": 0.01, "memory": 4194304, "invoke_mode": {"Executable": ["/bin/cat"]}, "max_instances": 1}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let zookeeper = ZooKeeper::start()?;
    let zk = Zk::connect(ZkConfig::new(&zookeeper.connect_string(), "bench")?).await?;
    zk.bootstrap().await?;
    for i in 1..=3u8 {
        let ip = Ipv4Addr::new(10, 9, 0, i);
        nodes::provision(&zk, ip).await?;
        let cap = serde_json::to_vec(&NodeCapacity {
            cpu: 10_000.0,
            memory: 1 << 50,
            sandbox: false,
        })?;
        zk.create_ephemeral(&paths::node_alive(ip), &cap).await?;
    }

    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(|p| p.parent()).unwrap().join("api");
    let mut api = Command::new(&bin)
        .args([
            "--zookeeper",
            &zookeeper.connect_string(),
            "--zookeeper-env",
            "bench",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = move |method: &'static str, path: String, body: &'static str| {
        let client = client.clone();
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}{path}"))
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(status.is_success(), "{status}: {body:?}");
            anyhow::Ok(body)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while call("GET", "/function".into(), "").await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "api did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = bench::rss_kib(api.id()).0;

    // Baseline: the same function written straight to ZooKeeper (no scheduling).
    let def: FunctionDefinition = serde_json::from_str(DEF)?;
    let mut direct = Vec::with_capacity(n);
    let mut written = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        written.push(functions::create_function(&zk, &def).await?);
        direct.push(t.elapsed());
    }
    // They have no instance, which the controller would now place while
    // the api's creates run (contending for the same node versions): go.
    for id in written {
        functions::delete_function(&zk, id).await?;
    }
    // Creates through the api, one at a time.
    let mut creates = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let body = call("POST", "/function".into(), DEF).await?;
        creates.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let sequential_rate = n as f64 / t0.elapsed().as_secs_f64();
    // Status reads.
    let mut statuses = Vec::with_capacity(n);
    for id in &ids {
        let t = Instant::now();
        call("GET", format!("/function/{id}"), "").await?;
        statuses.push(t.elapsed());
    }
    // Creates from 8 concurrent clients.
    let t0 = Instant::now();
    let call = Arc::new(call);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let call = Arc::clone(&call);
        let per = n / 8;
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                call("POST", "/function".into(), DEF).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let concurrent_rate = (n / 8 * 8) as f64 / t0.elapsed().as_secs_f64();
    let loaded = bench::rss_kib(api.id()).0;

    // Listing: BENCH_LIST (5000) functions, each with one backend.
    let total: usize = std::env::var("BENCH_LIST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let have = functions::list_function_ids(&zk).await?.len();
    for i in have..total {
        let id = functions::create_function(&zk, &def).await?;
        let ip = Ipv4Addr::new(10, 9, 0, 1 + (i % 3) as u8);
        bismuth_zk::store::backends::add_backend(&zk, id, ip).await?;
    }
    let mut page = Vec::new();
    let mut cursor = String::new();
    for _ in 0..20 {
        let t = Instant::now();
        let body = call("GET", format!("/function?limit=100{cursor}"), "").await?;
        page.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(v["functions"].as_array().map(Vec::len) == Some(100));
        cursor = format!("&cursor={}", v["next"].as_str().unwrap_or_default());
    }
    let mut full = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let body = call("GET", "/function".into(), "").await?;
        full.push(t.elapsed());
        size = body.len();
    }
    // Baseline: the same batched reads straight from ZooKeeper.
    let mut direct_list = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut ids = functions::list_function_ids(&zk).await?;
        ids.sort();
        let all = functions::describe_many(&zk, &ids).await?;
        anyhow::ensure!(all.len() == total);
        direct_list.push(t.elapsed());
    }
    let _ = api.kill();
    let _ = api.wait();

    let (dp50, dp99) = pct(&mut direct);
    let (cp50, cp99) = pct(&mut creates);
    let (sp50, sp99) = pct(&mut statuses);
    println!("| measure | p50 | p99 |");
    println!("|---|---|---|");
    println!("| baseline: create written straight to ZooKeeper (one multi) | {dp50:.2} ms | {dp99:.2} ms |");
    println!("| POST /function through the api | {cp50:.2} ms | {cp99:.2} ms |");
    println!(
        "| **ratio api / direct** | **{:.1}x** | {:.1}x |",
        cp50 / dp50,
        cp99 / dp99
    );
    println!("| GET /function/{{id}} | {sp50:.2} ms | {sp99:.2} ms |");
    println!();
    println!("creates/s: {sequential_rate:.0} one at a time, {concurrent_rate:.0} with 8 concurrent clients ({n} functions each, 3 nodes)");
    println!(
        "api resident memory: idle {idle} KiB, after {} creates {loaded} KiB",
        2 * n
    );
    let (pp50, pp99) = pct(&mut page);
    let (fp50, fp99) = pct(&mut full);
    let (lp50, lp99) = pct(&mut direct_list);
    println!();
    println!("| listing {total} functions | p50 | p99 |");
    println!("|---|---|---|");
    println!("| GET /function?limit=100 (20 pages in turn) | {pp50:.2} ms | {pp99:.2} ms |");
    println!(
        "| GET /function, all ({} KiB) | {fp50:.1} ms | {fp99:.1} ms |",
        size / 1024
    );
    println!("| baseline: the same batched reads straight from ZooKeeper | {lp50:.1} ms | {lp99:.1} ms |");
    Ok(())
}

fn pct(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[v.len() * 99 / 100]))
}
