//! Benchmark: svcprovider start-up time, idle memory, and K/V get/set
//! throughput on each backend (wrk, keep-alive). Run with `bench/svcprovider.sh`.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bismuth_testkit::{bench, free_port, Postgres};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let exe = std::env::current_exe()?;
    // The binary under test: SVCPROVIDER_BIN, else the one next to this example's profile.
    let bin = std::env::var_os("SVCPROVIDER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            exe.parent()
                .and_then(|p| p.parent())
                .unwrap()
                .join("svcprovider")
        });
    println!("binary: {}", bin.display());
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite:{}", dir.path().display());

    // Start-up: spawn to first accepted connection, 25 times; exec of /bin/true as a baseline.
    let mut startups = Vec::new();
    let mut baseline = Vec::new();
    for i in 0..25 {
        let t = Instant::now();
        Command::new("/bin/true").status()?;
        baseline.push(t.elapsed());
        let (mut child, addr, elapsed) = start(&bin, &sqlite, &format!("g{i}"))?;
        startups.push(elapsed);
        if i == 24 {
            std::thread::sleep(Duration::from_millis(300));
            let (rss, anon) = bench::rss_kib(child.id());
            println!("idle resident memory: VmRSS {rss} KiB, of which anonymous (private) {anon} KiB (SQLite store)");
            let _ = addr;
        }
        child.kill()?;
        child.wait()?;
    }
    startups.sort();
    baseline.sort();
    println!(
        "start-up to first accepted connection: median {:.1} ms, p90 {:.1} ms (exec of /bin/true: median {:.2} ms)",
        ms(startups[12]),
        ms(startups[22]),
        ms(baseline[12])
    );

    let pg = Postgres::start()?;
    println!();
    println!("| backend | operation | connections | ops/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for (name, store) in [("SQLite", sqlite.clone()), ("PostgreSQL", pg.url())] {
        let (mut child, addr, _) = start(&bin, &store, "kvbench")?;
        let script = dir.path().join("set.lua");
        std::fs::write(
            &script,
            format!(
                "counter = 0\nbody = string.rep('x', 100)\n\
                 request = function()\n  counter = counter + 1\n  \
                 return wrk.format('POST', '/kv/v1/k' .. (counter % 1000), {{['Authorization'] = 'Bearer {TOKEN}'}}, body)\nend\n"
            ),
        )?;
        // Seed the key the GET runs read.
        let seed = Command::new("wrk")
            .args(["-t1", "-c1", "-d1s", "-s"])
            .arg(&script)
            .arg(format!("http://{addr}/"))
            .output()?;
        anyhow::ensure!(seed.status.success(), "wrk failed");
        for conns in [1, 8] {
            let set = wrk(&addr, conns, seconds, Some(&script), "/")?;
            let get = wrk(&addr, conns, seconds, None, "/kv/v1/k1")?;
            println!(
                "| {name} | set (100 B) | {conns} | {:.0} | {:.3} ms | {:.3} ms |",
                set.0, set.1, set.2
            );
            println!(
                "| {name} | get (100 B) | {conns} | {:.0} | {:.3} ms | {:.3} ms |",
                get.0, get.1, get.2
            );
        }
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

fn start(
    bin: &std::path::Path,
    store: &str,
    group: &str,
) -> anyhow::Result<(Child, SocketAddr, Duration)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    let child = Command::new(bin)
        .args([
            "serve",
            "--group",
            group,
            "--store",
            store,
            "--listen",
            &addr.to_string(),
        ])
        .env("BISMUTH_AUTH", TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok((child, addr, t.elapsed()));
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(20),
            "svcprovider did not start"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn wrk(
    addr: &SocketAddr,
    conns: u32,
    seconds: u64,
    script: Option<&std::path::Path>,
    path: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut args = vec![
        "-t".to_owned(),
        conns.min(2).to_string(),
        "-c".into(),
        conns.to_string(),
        "-d".into(),
        format!("{seconds}s"),
        "-H".into(),
        format!("Authorization: Bearer {TOKEN}"),
    ];
    if let Some(s) = script {
        args.push("-s".into());
        args.push(s.display().to_string());
    }
    args.push(format!("http://{addr}{path}"));
    let stats = bench::wrk(&args)?;
    Ok((stats.rps, stats.p50_ms, stats.p99_ms))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
