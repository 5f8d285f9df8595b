//! End-to-end: the daemons as an operator runs them. A bismuthd restarted
//! under load (an upgrade) fails no request; a function writing a 64 MB
//! line without a newline leaves bismuthd and the api small.
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
    let sys = System::start().await.unwrap();
    let fid = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.5,
            "memory": 67108864,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "head -c 67108864 /dev/zero | tr '\\0' x >&2; echo written"]},
        }))
        .await;
    sys.wait_status(fid, "Running", RUNNING).await;
    // Once bismuthfe has seen it Running too.
    let url = sys.fe_url(&format!("/invoke/{fid}"));
    let r = eventually("the function to answer", RUNNING, || async {
        let r = http::request(Method::POST, &url, &[], "").await.ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "written\n");

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
