//! End-to-end: the daemons as an operator runs them. A bismuthd restarted
//! under load (an upgrade) fails no request; a function writing a 64 MB
//! line without a newline leaves bismuthd and the api small; one writing
//! 300 MB to stderr leaves no more than its log cap on the host's disk.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::http::Method;
use bismuth_e2e::System;
use bismuth_testkit::{eventually, http, images};
use serde_json::json;

const RUNNING: Duration = Duration::from_secs(60);

/// `VmHWM` (peak resident memory) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn a_bismuthd_restart_under_load_fails_no_request() {
    let mut sys = System::start().await.unwrap();
    let fid = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.25,
            "memory": 67108864,
            "invoke_mode": {"Server": [["/bin/sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"], 8080]},
        }))
        .await;
    sys.wait_status(fid, "Running", RUNNING).await;
    let url = sys.fe_url(&format!("/invoke/{fid}/"));
    eventually("the function served", RUNNING, || async {
        let r = http::get(&url).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http::get(&url).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{:?}", other.map(|r| (r.status, r.text()))));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    sys.restart("bismuthd").await.unwrap();
    let restarted = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for c in clients {
        errors.extend(c.await.unwrap());
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{errors:?}");
    assert!(before > 0 && ok.load(Ordering::Relaxed) > restarted);
    println!(
        "{} requests, none failed, across a bismuthd restart",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn a_64_mb_line_leaves_bismuthd_and_the_api_small() {
    // A cap above the line, so that all of it is there to read.
    let sys = System::start_with(&["--log-max-bytes", "134217728"])
        .await
        .unwrap();
    let fid = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.5,
            "memory": 67108864,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "head -c 67108864 /dev/zero | tr '\\0' x >&2; echo written"]},
        }))
        .await;
    sys.wait_status(fid, "Running", RUNNING).await;
    invoke_written(&sys, fid, "").await;

    // Plain logs, then followed for a while, through the api.
    let logs = sys
        .api(Method::GET, &format!("/function/{fid}/logs"), "")
        .await;
    assert_eq!(logs.status, 200);
    assert!(logs.body.len() >= 16 << 20, "{}", logs.body.len());
    let followed = Command::new("curl")
        .args([
            "-s",
            "-N",
            "--max-time",
            "8",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ])
        .arg(sys.api_url(&format!("/function/{fid}/logs?follow=true")))
        .output()
        .unwrap();
    let size: u64 = String::from_utf8_lossy(&followed.stdout)
        .trim()
        .parse()
        .unwrap();
    println!("followed {size} bytes of the log");
    assert!(size > 16 << 20, "followed only {size} bytes");

    let limit = 64 << 20;
    for daemon in ["bismuthd", "api"] {
        let peak = peak_rss(sys.pid(daemon).unwrap());
        println!("{daemon} peak resident: {} MiB", peak >> 20);
        assert!(peak < limit, "{daemon} peaked at {} MiB", peak >> 20);
    }
}

/// Invokes `fid` through bismuthfe (once it routes there) and checks it
/// answered `written`.
async fn invoke_written(sys: &System, fid: uuid::Uuid, body: &str) {
    let url = sys.fe_url(&format!("/invoke/{fid}"));
    let r = eventually("the function to answer", RUNNING, || async {
        let r = http::request(Method::POST, &url, &[], body.to_owned())
            .await
            .ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "written\n");
}

#[tokio::test]
async fn a_tenant_writing_300_mb_to_stderr_leaves_its_log_cap_on_disk() {
    const CAP: u64 = 4 << 20;
    let cap = CAP.to_string();
    let sys = System::start_with(&["--log-max-bytes", &cap])
        .await
        .unwrap();
    let fid = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 1.0,
            "memory": 67108864,
            "invoke_mode": {"Executable": ["/bin/sh", "-c",
                "n=$(cat); yes 'a line a tenant writes to stderr, again and again' | head -c $n >&2; \
                 for i in 1 2 3 4 5; do echo \"last line $i\" >&2; done; echo written"]},
        }))
        .await;
    let cid = sys.wait_status(fid, "Running", RUNNING).await;
    let log = sys
        .dir
        .path()
        .join("state/containers")
        .join(cid.to_string())
        .join("log");
    // What the system's directory holds on disk (its containers' writable
    // layers are tmpfs), not the whole filesystem other tests write to.
    let before = bismuth_testkit::disk_use(sys.dir.path());
    invoke_written(&sys, fid, "314572800").await;
    let grown = bismuth_testkit::disk_use(sys.dir.path()).saturating_sub(before);
    let kept: u64 = [log.clone(), log.with_file_name("log.1")]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    println!("300 MB written to stderr: {kept} bytes of log kept, disk grew by {grown} bytes");
    // Two halves, each passing its half by at most one 64 KiB read, and
    // bismuthd's own lines.
    assert!(kept <= CAP + (256 << 10), "{kept} bytes of log kept");
    assert!(grown <= CAP + (32 << 20), "the disk grew by {grown} bytes");

    // A follower goes on across rotations (10 MB: several).
    let followed = sys.dir.path().join("followed");
    let mut follower = Command::new("curl")
        .args(["-s", "-N", "--max-time", "60", "-o"])
        .arg(&followed)
        .arg(sys.api_url(&format!("/function/{fid}/logs?follow=true&tail=0")))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    invoke_written(&sys, fid, "10000000").await;
    eventually("the follower to see the last line", RUNNING, || async {
        let text = std::fs::read(&followed).unwrap_or_default();
        text.ends_with(b"data: last line 5\n\n").then_some(())
    })
    .await;
    let _ = follower.kill();
    let _ = follower.wait();

    // The newest lines are what the api returns.
    let tail = sys
        .api(Method::GET, &format!("/function/{fid}/logs?tail=3"), "")
        .await;
    assert_eq!(tail.status, 200);
    assert_eq!(
        tail.text(),
        "last line 3\nlast line 4\nlast line 5\n",
        "tail=3"
    );
    let all = sys
        .api(Method::GET, &format!("/function/{fid}/logs"), "")
        .await;
    assert_eq!(all.status, 200);
    assert!(
        all.body.len() as u64 <= CAP + (256 << 10),
        "{} bytes",
        all.body.len()
    );
    assert!(all.text().ends_with("last line 5\n"));
    let bad = sys
        .api(Method::GET, &format!("/function/{fid}/logs?tail=many"), "")
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("tail"), "{}", bad.text());
}
