//! Recovery from a dead host (rerun with `bench/fleet.sh`): the fleet of
//! `bismuth_e2e::Fleet` (three namespaced hosts, each with containerd and
//! bismuthd, a three-server ZooKeeper ensemble, the api and bismuthfe).
//!
//! 1. Baseline: `BENCH_FUNCTIONS` (30) functions of one instance created at
//!    once onto one host, until every one answers through bismuthfe.
//! 2. That host is killed outright (every process of its namespace, as a
//!    power cut). From that moment a client calls every function in turn
//!    through bismuthfe; for each function, the time until it answers again;
//!    and the time until all are Running on the other hosts; and how many
//!    requests failed meanwhile.
//!
//! Anchors printed beside it: Kubernetes evicts pods from an unreachable
//! node after 40 s (node-monitor-grace-period) + 300 s (the default
//! not-ready toleration) = 5 min 40 s; OpenWhisk notices a dead invoker
//! after 10 s.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::http::Method;
use bismuth_e2e::Fleet;
use bismuth_testkit::bench::{env_n, ms, pct};
use bismuth_testkit::{http, images};
use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(300);

fn hello() -> serde_json::Value {
    json!({
        "image": images::BUSYBOX_REF,
        "cpu": 0.05,
        "memory": 33554432,
        "invoke_mode": {"Server": [["/bin/sh", "-c",
            "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"], 8080]},
    })
}

async fn answers(fleet: &Fleet, fid: Uuid) -> bool {
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));
    http::request(Method::GET, &url, &[], "")
        .await
        .is_ok_and(|r| r.status == 200)
}

async fn run() -> anyhow::Result<()> {
    let n = env_n("BENCH_FUNCTIONS", 30);
    let mut fleet = Fleet::start(3).await?;
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.ip.to_string()).collect();
    // Everything onto the first host: the others take nothing meanwhile.
    for h in &hosts[1..] {
        fleet.ctl(&["drain", h])?;
    }
    let t0 = Instant::now();
    let def = hello();
    let ids: Vec<Uuid> = join_all((0..n).map(|_| fleet.create(&def))).await;
    let mut created: HashMap<Uuid, Duration> = HashMap::new();
    while created.len() < ids.len() {
        anyhow::ensure!(t0.elapsed() < LIMIT, "not all functions answered");
        for id in &ids {
            if !created.contains_key(id) && answers(&fleet, *id).await {
                created.insert(*id, t0.elapsed());
            }
        }
    }
    let baseline = t0.elapsed();
    for h in &hosts[1..] {
        fleet.ctl(&["undrain", h])?;
    }

    // The power cut.
    let victim = 0;
    let killed = Instant::now();
    fleet.kill(victim)?;
    let mut back: HashMap<Uuid, Duration> = HashMap::new();
    let (mut requests, mut failed) = (0u64, 0u64);
    let mut all_replaced = None;
    while back.len() < ids.len() || all_replaced.is_none() {
        anyhow::ensure!(killed.elapsed() < LIMIT, "not all functions came back");
        for id in &ids {
            if back.contains_key(id) {
                continue;
            }
            requests += 1;
            if answers(&fleet, *id).await {
                back.insert(*id, killed.elapsed());
            } else {
                failed += 1;
            }
        }
        if all_replaced.is_none() {
            let mut running = 0;
            for id in &ids {
                let f = fleet.function(*id).await;
                running += f["backends"].as_array().map_or(0, |b| {
                    b.iter()
                        .filter(|b| {
                            b["status"] == "Running" && b["backend"]["ip"] != hosts[victim].as_str()
                        })
                        .count()
                });
            }
            if running == ids.len() {
                all_replaced = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times: Vec<f64> = back.values().map(|d| ms(*d)).collect();
    times.sort_by(f64::total_cmp);
    let (p50, max) = (pct(&times, 0.5), pct(&times, 1.0));
    let replaced = all_replaced.unwrap_or_default();
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| {n} functions created at once onto one host, until all answer (baseline) | {:.2} s |",
        baseline.as_secs_f64()
    );
    println!(
        "| host killed → each function answers again: p50 | {:.2} s |",
        p50 / 1000.0
    );
    println!(
        "| host killed → each function answers again: max | {:.2} s |",
        max / 1000.0
    );
    println!(
        "| host killed → all {n} Running on other hosts | {:.2} s |",
        replaced.as_secs_f64()
    );
    println!("| requests failed meanwhile (each function called in turn until it answered) | {failed} of {requests} |");
    println!(
        "| recovery (max) / creating the same from scratch | **{:.2}×** |",
        max / ms(baseline)
    );
    println!(
        "| anchors: Kubernetes default eviction / OpenWhisk invoker detection | 340 s / 10 s |"
    );
    fleet.boot(victim)?;
    for id in ids {
        let _ = fleet
            .api(Method::DELETE, &format!("/function/{id}"), "")
            .await;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
