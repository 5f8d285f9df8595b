//! Elasticity end to end (DESIGN.md, "Elasticity"): the real daemons, a
//! function scaled to zero after its idle time and woken by the next
//! request (answered 200, never 503), load from four clients scaling a
//! `concurrency: 1` function up within its bounds with no failed request,
//! and scale-downs and removals that never cut a request in flight.
//!
//! The api runs with shorter autoscaler windows (stable 6 s, panic 2 s
//! instead of 60 s and 6 s) so a scale-down happens within a test.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::Method;
use bismuth_e2e::{Flags, Load, System};
use bismuth_testkit::http::{self, Reply};
use bismuth_testkit::{eventually, images};
use serde_json::{json, Value};
use uuid::Uuid;

const RUNNING: Duration = Duration::from_secs(60);
const API_FLAGS: &[&str] = &[
    "--autoscale-stable-window-ms",
    "6000",
    "--autoscale-panic-window-ms",
    "2000",
];

async fn start() -> System {
    System::start_flags(Flags {
        api: API_FLAGS,
        ..Flags::default()
    })
    .await
    .unwrap()
}

/// `instances` of `GET /function/{id}`, and how many backends it lists.
async fn instances(sys: &System, id: Uuid) -> (Value, usize) {
    let f = sys.function(id).await;
    let n = f["backends"].as_array().map_or(0, Vec::len);
    (f["instances"].clone(), n)
}

/// `GET /` of the function routed from `host`.
async fn invoke(sys: &System, host: &str) -> Reply {
    http::request(Method::GET, &sys.fe_url("/"), &[("host", host)], "")
        .await
        .unwrap_or_else(|e| panic!("invoke {host}: {e:#}"))
}

#[tokio::test]
async fn an_idle_function_goes_to_zero_and_a_request_wakes_it() {
    let sys = start().await;
    let id = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.1,
            "memory": 67108864,
            "invoke_mode": {"Server": [["/bin/sh", "-c",
                "echo warm > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"], 8080]},
            "max_instances": 2,
            "min_instances": 0,
            "idle_timeout": 2,
            "routes": [{"hostname": "zero.test"}],
        }))
        .await;
    // A new function starts with one instance (a bad image shows at once).
    sys.wait_status(id, "Running", RUNNING).await;
    let (i, _) = instances(&sys, id).await;
    assert_eq!((&i["min"], &i["max"]), (&json!(0), &json!(2)), "{i}");
    eventually("the function to answer", RUNNING, || async {
        let r = invoke(&sys, "zero.test").await;
        (r.status == 200).then_some(())
    })
    .await;

    // Idle for two seconds: down to zero, and no task is left in containerd.
    eventually("the function to go to zero", RUNNING, || async {
        let (i, backends) = instances(&sys, id).await;
        (i["desired"] == 0 && i["running"] == 0 && backends == 0).then_some(())
    })
    .await;
    eventually("its task to leave containerd", RUNNING, || async {
        sys.ctr(&["tasks", "ls", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    })
    .await;

    // The next request is held while an instance starts, then answered.
    let started = Instant::now();
    let r = invoke(&sys, "zero.test").await;
    let cold = started.elapsed();
    assert_eq!(r.status, 200, "a cold request: {}", r.text());
    assert_eq!(r.text().trim(), "warm");
    println!("scale from zero to the first response: {cold:?}");
    let (i, backends) = instances(&sys, id).await;
    assert_eq!(
        (&i["desired"], &i["running"], backends),
        (&json!(1), &json!(1), 1),
        "{i}"
    );

    // The wait shows in bismuthfe's cold-start histogram.
    let metrics = http::get(&sys.fe_url("/metrics")).await.unwrap().text();
    let held = metrics
        .lines()
        .find(|l| l.starts_with("bismuth_fe_cold_start_wait_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(held >= Some(1.0), "{metrics}");

    // And the api counted the scale events.
    let api = http::get(&sys.api_url("/metrics")).await.unwrap().text();
    for direction in ["up", "down"] {
        assert!(
            api.lines()
                .any(|l| l.starts_with("bismuth_scale_events_total")
                    && l.contains(&id.to_string())
                    && l.contains(&format!("direction=\"{direction}\""))),
            "no {direction} event in {api}"
        );
    }
}

#[tokio::test]
async fn load_scales_up_within_bounds_and_down_without_cutting_requests() {
    let sys = Arc::new(start().await);
    // One request at a time per instance, 200 ms each.
    let id = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.1,
            "memory": 33554432,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "sleep 0.2; echo ok"]},
            "max_instances": 4,
            "min_instances": 1,
            "concurrency": 1,
            "idle_timeout": 2,
            "routes": [{"hostname": "load.test"}],
        }))
        .await;
    sys.wait_status(id, "Running", RUNNING).await;
    eventually("the function to answer", RUNNING, || async {
        (invoke(&sys, "load.test").await.status == 200).then_some(())
    })
    .await;

    let three = Load::start(sys.fe_url("/"), Some("load.test"), 3);
    let last = Load::start(sys.fe_url("/"), Some("load.test"), 1);

    // Four clients: at least three instances, never more than four.
    let step = Instant::now();
    let mut most = 0;
    let deadline = Instant::now() + RUNNING;
    loop {
        let (i, backends) = instances(&sys, id).await;
        most = most.max(backends);
        assert!(
            backends <= 4,
            "max_instances exceeded: {backends} backends, {i}"
        );
        if i["running"].as_u64() >= Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "did not reach 3 instances: {i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "four clients: 3 instances Running after {:?}",
        step.elapsed()
    );
    // Keep the load a while: the count stays within bounds.
    for _ in 0..20 {
        let (i, backends) = instances(&sys, id).await;
        assert!(backends <= 4 && i["desired"].as_u64() <= Some(4), "{i}");
        most = most.max(backends);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Three clients stop; one keeps calling while the idle instances go.
    let (ok_three, failed_three) = three.stop().await;
    let down = Instant::now();
    eventually("idle instances to be removed", RUNNING, || async {
        let (i, backends) = instances(&sys, id).await;
        assert!(backends >= 1, "min_instances broken: {i}");
        (backends <= 2).then_some(())
    })
    .await;
    println!(
        "one client left: down to ≤ 2 instances after {:?}",
        down.elapsed()
    );
    let (ok_last, failed_last) = last.stop().await;
    // Idle: down to min_instances, never below.
    eventually(
        "the function to go down to its minimum",
        RUNNING,
        || async {
            let (i, backends) = instances(&sys, id).await;
            assert!(backends >= 1, "min_instances broken: {i}");
            (i["desired"] == 1 && backends == 1).then_some(())
        },
    )
    .await;
    let ok = ok_three + ok_last;
    let failed: Vec<String> = failed_three.into_iter().chain(failed_last).collect();
    println!(
        "{ok} requests answered, {} failed; at most {most} instances",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "no request may fail while scaling: {failed:?}"
    );
    assert!(ok > 20);

    // A request in flight when its instance is removed still completes:
    // bismuthd waits for it before stopping the container.
    let slow = sys
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.1,
            "memory": 33554432,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "sleep 3; echo finished"]},
            "routes": [{"hostname": "slow.test"}],
        }))
        .await;
    let cid = sys.wait_status(slow, "Running", RUNNING).await;
    eventually("the slow function to answer", RUNNING, || async {
        (invoke(&sys, "slow.test").await.status == 200).then_some(())
    })
    .await;
    let in_flight = {
        let sys = Arc::clone(&sys);
        tokio::spawn(async move { invoke(&sys, "slow.test").await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    sys.ctl(&["remove-backend", &slow.to_string(), &cid.to_string()])
        .unwrap();
    let r = in_flight.await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.text().trim()),
        (200, "finished"),
        "the request in flight was cut"
    );
}
