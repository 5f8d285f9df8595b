//! The fleet suite: three hosts, each a network namespace with its own
//! containerd and bismuthd, a three-server ZooKeeper ensemble, the api and
//! bismuthfe (see `bismuth_e2e::fleet`). Starting a fleet is heavy, so one
//! fleet serves every scenario, run in order in one test; each scenario
//! leaves the fleet as it found it (three hosts up, every ZooKeeper server
//! running, no functions).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ::http::Method;
use bismuth_e2e::{Fleet, Load};
use bismuth_testkit::{eventually, http, images};
use serde_json::json;
use uuid::Uuid;

const RUNNING: Duration = Duration::from_secs(60);

/// A busybox httpd answering with its hostname (the container id).
fn hello(instances: u32) -> serde_json::Value {
    json!({
        "image": images::BUSYBOX_REF,
        "cpu": 0.1,
        "memory": 33554432,
        "invoke_mode": {"Server": [["/bin/sh", "-c",
            "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"], 8080]},
        "max_instances": instances,
    })
}

/// The nodes (by address) of a function's Running backends.
async fn running_on(fleet: &Fleet, fid: Uuid) -> Vec<String> {
    let f = fleet.function(fid).await;
    f["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"] == "Running")
        .map(|b| b["backend"]["ip"].as_str().unwrap().to_owned())
        .collect()
}

/// A function's backends as (container id, node address).
async fn backends_on(fleet: &Fleet, fid: Uuid) -> Vec<(Uuid, String)> {
    let f = fleet.function(fid).await;
    f["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backend"]["container_id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                b["backend"]["ip"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `n` instances run, and bismuthfe answers from them.
async fn serving(fleet: &Fleet, fid: Uuid, n: usize) -> Vec<String> {
    let nodes = eventually(
        &format!("{n} Running instances of {fid}"),
        RUNNING,
        || async {
            let nodes = running_on(fleet, fid).await;
            (nodes.len() == n).then_some(nodes)
        },
    )
    .await;
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));
    eventually("bismuthfe to answer", RUNNING, || async {
        let r = http::request(Method::GET, &url, &[], "").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    nodes
}

async fn delete(fleet: &Fleet, fid: Uuid) {
    let r = fleet
        .api(Method::DELETE, &format!("/function/{fid}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Instances spread over the hosts, and bismuthfe reaches every host.
async fn spreads_and_serves(fleet: &Fleet) {
    let fid = fleet.create(&hello(3)).await;
    let nodes = serving(fleet, fid, 3).await;
    let distinct: HashSet<&String> = nodes.iter().collect();
    assert_eq!(distinct.len(), 3, "one instance per host: {nodes:?}");
    // Requests from several clients (addresses) reach several containers.
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));
    let mut answered = HashSet::new();
    for _ in 0..30 {
        let r = http::request(Method::GET, &url, &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        answered.insert(r.header("x-bismuth-container-id"));
    }
    assert!(!answered.is_empty());
    delete(fleet, fid).await;
}

/// One ZooKeeper server of three killed: serving and deploying go on.
async fn survives_a_zookeeper_server(fleet: &mut Fleet) {
    let fid = fleet.create(&hello(1)).await;
    serving(fleet, fid, 1).await;
    fleet.zookeeper.kill(0);
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));
    for _ in 0..20 {
        let r = http::request(Method::GET, &url, &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Deploying needs a quorum only: two of three.
    let second = eventually("a create with one server down", RUNNING, || async {
        let r = http::request(
            Method::POST,
            &fleet.api_url("/function"),
            &[],
            hello(1).to_string(),
        )
        .await
        .ok()?;
        (r.status == 200)
            .then(|| r.json()["id"].as_str()?.parse::<Uuid>().ok())
            .flatten()
    })
    .await;
    serving(fleet, second, 1).await;
    fleet.zookeeper.start_server(0).unwrap();
    delete(fleet, fid).await;
    delete(fleet, second).await;
}

/// A host killed outright: requests succeed again at once from the other
/// instance, its instance runs elsewhere within seconds; booted again, it
/// removes the stale instance before anything routes to it.
async fn replaces_a_dead_host(fleet: &mut Fleet) {
    let fid = fleet.create(&hello(2)).await;
    let nodes = serving(fleet, fid, 2).await;
    let victim = fleet.host(nodes[0].parse().unwrap());
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));

    let killed = Instant::now();
    fleet.kill(victim).unwrap();
    // Requests: every one after the first success must succeed.
    let served_again = eventually("a request to succeed after the kill", RUNNING, || async {
        let r = http::request(Method::GET, &url, &[], "").await.ok()?;
        (r.status == 200).then(|| killed.elapsed())
    })
    .await;
    let replaced = eventually("two Running instances on alive hosts", RUNNING, || async {
        let now = running_on(fleet, fid).await;
        let victim_ip = fleet.hosts[victim].ip.to_string();
        (now.len() == 2 && !now.contains(&victim_ip)).then(|| killed.elapsed())
    })
    .await;
    for _ in 0..20 {
        let r = http::request(Method::GET, &url, &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    println!("host killed: requests served again after {served_again:?}, instance replaced after {replaced:?}");
    assert!(served_again < Duration::from_secs(5), "{served_again:?}");
    assert!(replaced < Duration::from_secs(10), "{replaced:?}");

    // It boots again: its stale instance goes; exactly two run.
    fleet.boot(victim).unwrap();
    fleet.endpoints.eventually_alive(3, RUNNING).await.unwrap();
    eventually("the stale instance gone from the host", RUNNING, || async {
        fleet.hosts[victim].tasks().is_empty().then_some(())
    })
    .await;
    assert_eq!(running_on(fleet, fid).await.len(), 2);
    delete(fleet, fid).await;
}

/// `GET /controller` on the api at `port`: (leader id, whether this one leads).
async fn controller(port: u16) -> Option<(String, bool)> {
    let r = http::get(&format!("http://127.0.0.1:{port}/controller"))
        .await
        .ok()?;
    let v = r.json();
    Some((
        v["leader"]["id"].as_str()?.to_owned(),
        v["this_process_leads"].as_bool()?,
    ))
}

/// Two api processes: exactly one leads; killed, the other takes over
/// within the session timeout, and a redeploy asked of the survivor while
/// the leader dies mid-rollout is completed.
async fn one_leader_and_failover(fleet: &mut Fleet) {
    let main = fleet.api_port;
    let second = fleet.start_api().await.unwrap();
    let (leader, _) = eventually("a leader", RUNNING, || controller(main)).await;
    let views = [
        controller(main).await.unwrap(),
        controller(second).await.unwrap(),
    ];
    assert!(views.iter().all(|(l, _)| *l == leader), "{views:?}");
    assert_eq!(
        views.iter().filter(|(_, leads)| *leads).count(),
        1,
        "{views:?}"
    );
    let (leading, other) = if views[0].1 {
        (main, second)
    } else {
        (second, main)
    };

    // A redeploy through the other api; the leader dies as it starts.
    let fid = fleet.create(&hello(1)).await;
    let before = serving(fleet, fid, 1).await;
    let old = fleet.backends(fid).await[0].0;
    let put_url = format!("http://127.0.0.1:{other}/function/{fid}");
    let put = tokio::spawn(async move { http::request(Method::PUT, &put_url, &[], "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Instant::now();
    fleet.kill_api(leading);
    let took_over = eventually("the other api to lead", RUNNING, || async {
        let (_, leads) = controller(other).await?;
        leads.then(|| killed.elapsed())
    })
    .await;
    let r = put.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let backends = v["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "{v}");
    assert_eq!(backends[0]["status"], "Running");
    assert_ne!(backends[0]["backend"]["container_id"], old.to_string());
    println!("leader killed: the other api led after {took_over:?}; the rollout completed ({before:?} → {})", backends[0]["backend"]["ip"]);
    assert!(took_over < Duration::from_secs(10), "{took_over:?}");

    // Back to one api on the main port.
    if leading == main {
        fleet.restart_api_on(main).await.unwrap();
    }
    fleet.kill_api(second);
    eventually("the main api to lead", RUNNING, || async {
        controller(main).await?.1.then_some(())
    })
    .await;
    delete(fleet, fid).await;
}

/// `drain --evacuate` under load: replacements first, no failed request;
/// unknown nodes and no room elsewhere are clear errors that change nothing.
async fn evacuates_without_a_failed_request(fleet: &mut Fleet) {
    let fid = fleet.create(&hello(2)).await;
    let nodes = serving(fleet, fid, 2).await;
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));
    let load = Load::start(url, None, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let out = fleet
        .ctl_output(&["drain", &nodes[0], "--evacuate", "--timeout-s", "60"])
        .await
        .unwrap();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is empty"), "{stdout}");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    let now = running_on(fleet, fid).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(!now.contains(&nodes[0]), "{now:?}");
    let drained = fleet.host(nodes[0].parse().unwrap());
    eventually("the drained host's containers stopped", RUNNING, || async {
        fleet.hosts[drained].tasks().is_empty().then_some(())
    })
    .await;
    println!("drain --evacuate: {ok} requests, none failed; the node was empty after {took:?}");
    fleet.ctl(&["undrain", &nodes[0]]).unwrap();
    delete(fleet, fid).await;

    // Bad input: an unknown node; no room elsewhere (one big instance per host).
    let out = fleet
        .ctl_output(&["drain", "10.255.255.1", "--evacuate"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10.255.255.1"),
        "{out:?}"
    );
    let mut big = hello(3);
    big["cpu"] = json!(1.5);
    let fid = fleet.create(&big).await;
    let nodes = serving(fleet, fid, 3).await;
    let out = fleet
        .ctl_output(&["drain", &nodes[0], "--evacuate"])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no other alive, enabled node has room"),
        "{stderr}"
    );
    let listed = fleet.ctl(&["list-nodes"]).unwrap();
    assert!(!listed.contains("drained"), "nothing changed: {listed}");
    assert_eq!(running_on(fleet, fid).await.len(), 3);
    delete(fleet, fid).await;
}

/// A host cut off the network: its instance runs elsewhere, requests go on
/// succeeding, the cut-off host stops its stale instance on its own; healed,
/// exactly the wanted instances run.
async fn partition_and_heal(fleet: &mut Fleet) {
    let fid = fleet.create(&hello(2)).await;
    serving(fleet, fid, 2).await;
    let url = fleet.fe_url(&format!("/invoke/{fid}/"));
    // Cut the host this client's requests go to (rendezvous hashing of its
    // address ranks it first), with bismuthfe's connection to it pooled.
    let r = http::request(Method::GET, &url, &[], "").await.unwrap();
    let serving_cid: Uuid = r.header("x-bismuth-container-id").parse().unwrap();
    let victim_ip = backends_on(fleet, fid)
        .await
        .into_iter()
        .find(|(cid, _)| *cid == serving_cid)
        .map(|(_, ip)| ip)
        .unwrap();
    let victim = fleet.host(victim_ip.parse().unwrap());
    let cut = Instant::now();
    fleet.partition(victim).unwrap();
    let served = eventually("a request to succeed after the cut", RUNNING, || async {
        let r = http::request(Method::GET, &url, &[], "").await.ok()?;
        (r.status == 200).then(|| cut.elapsed())
    })
    .await;
    let replaced = eventually(
        "two Running instances off the cut host",
        RUNNING,
        || async {
            let now = running_on(fleet, fid).await;
            (now.len() == 2 && !now.contains(&victim_ip)).then(|| cut.elapsed())
        },
    )
    .await;
    let stopped = eventually("the cut-off host to stop its instance", RUNNING, || async {
        fleet.hosts[victim]
            .tasks()
            .is_empty()
            .then(|| cut.elapsed())
    })
    .await;
    for _ in 0..10 {
        let r = http::request(Method::GET, &url, &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    fleet.heal(victim).unwrap();
    fleet.endpoints.eventually_alive(3, RUNNING).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running_on(fleet, fid).await.len(), 2);
    assert!(
        fleet.hosts[victim].tasks().is_empty(),
        "the stale instance came back"
    );
    println!("partition: served again after {served:?}, replaced after {replaced:?}, the cut-off host stopped its instance after {stopped:?}");
    delete(fleet, fid).await;
}

/// An instance that fails five times in a row on a host (its image is gone
/// there) moves to another host, where it runs.
async fn moves_a_failing_instance(fleet: &mut Fleet) {
    let bad = 0;
    let bad_ip = fleet.hosts[bad].ip.to_string();
    fleet.set_image(bad, false).unwrap();
    // Place it on the bad host: the others take nothing meanwhile.
    let others: Vec<String> = fleet.hosts[1..].iter().map(|h| h.ip.to_string()).collect();
    for ip in &others {
        fleet.ctl(&["drain", ip]).unwrap();
    }
    let fid = fleet.create(&hello(1)).await;
    assert_eq!(fleet.backends(fid).await.len(), 1);
    for ip in &others {
        fleet.ctl(&["undrain", ip]).unwrap();
    }
    let moved = eventually("the instance to run on another host", RUNNING, || async {
        let now = running_on(fleet, fid).await;
        (now.len() == 1 && now[0] != bad_ip).then(|| now[0].clone())
    })
    .await;
    assert_eq!(
        fleet.backends(fid).await.len(),
        1,
        "the failing one is gone"
    );
    println!("failing instance on {bad_ip} moved to {moved}");
    fleet.set_image(bad, true).unwrap();
    delete(fleet, fid).await;
}

/// Elasticity with two api processes and two frontends: a function at zero
/// woken through the second frontend (whichever api leads), then load
/// through both frontends summed by the leader's autoscaler.
async fn scales_across_frontends(fleet: &mut Fleet) {
    let second_api = fleet.start_api().await.unwrap();
    let second_fe = fleet.start_fe().await.unwrap();
    let fid = fleet
        .create(&json!({
            "image": images::BUSYBOX_REF,
            "cpu": 0.1,
            "memory": 33554432,
            "invoke_mode": {"Executable": ["/bin/sh", "-c", "sleep 0.2; echo ok"]},
            "max_instances": 4,
            "min_instances": 0,
            "concurrency": 1,
            "idle_timeout": 1,
        }))
        .await;
    serving(fleet, fid, 1).await;
    eventually("the function to go to zero", RUNNING, || async {
        fleet.backends(fid).await.is_empty().then_some(())
    })
    .await;
    let other = format!("http://127.0.0.1:{second_fe}/invoke/{fid}/");
    let woke = Instant::now();
    let r = http::request(Method::GET, &other, &[], "").await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().trim()), (200, "ok"));
    println!(
        "woken from zero through the second frontend in {:?}",
        woke.elapsed()
    );

    let a = Load::start(fleet.fe_url(&format!("/invoke/{fid}/")), None, 2);
    let b = Load::start(other, None, 2);
    let step = Instant::now();
    let nodes = eventually("three instances for four clients", RUNNING, || async {
        let running = running_on(fleet, fid).await;
        (running.len() >= 3).then_some(running)
    })
    .await;
    println!(
        "four clients on two frontends: {} instances after {:?} on {nodes:?}",
        nodes.len(),
        step.elapsed()
    );
    let (ok_a, failed_a) = a.stop().await;
    let (ok_b, failed_b) = b.stop().await;
    assert!(
        failed_a.is_empty() && failed_b.is_empty(),
        "{failed_a:?} {failed_b:?}"
    );
    assert!(ok_a > 0 && ok_b > 0);
    assert!(fleet.backends(fid).await.len() <= 4);
    eventually("the function to go to zero again", RUNNING, || async {
        fleet.backends(fid).await.is_empty().then_some(())
    })
    .await;
    fleet.kill_fe(second_fe);
    fleet.kill_api(second_api);
    eventually("the main api to lead", RUNNING, || async {
        controller(fleet.api_port).await?.1.then_some(())
    })
    .await;
    delete(fleet, fid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_suite() {
    let mut fleet = Fleet::start(3).await.unwrap();
    spreads_and_serves(&fleet).await;
    replaces_a_dead_host(&mut fleet).await;
    survives_a_zookeeper_server(&mut fleet).await;
    one_leader_and_failover(&mut fleet).await;
    evacuates_without_a_failed_request(&mut fleet).await;
    partition_and_heal(&mut fleet).await;
    moves_a_failing_instance(&mut fleet).await;
    scales_across_frontends(&mut fleet).await;
}
