//! bismuthfe against a real ZooKeeper and stand-in bismuthds: routing by
//! host and by id, live route and status changes, consistent hashing,
//! failover, errors, streaming of large bodies, and ZooKeeper restarts.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bismuth_model::paths;
use bismuth_model::ContainerState::{Failed, Running, Starting};
use bismuth_testkit::eventually;
use bismuth_zk::store::functions;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::{client_from, get, rss, Cluster};

const NODE_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const NODE_C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const NODE_D: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const WAIT: Duration = Duration::from_secs(15);

/// Waits until a GET of `path` with `Host: host` gives a reply `accept`
/// takes, returning that reply; `what` names it in the timeout message.
async fn wait_reply(
    cluster: &Cluster,
    path: &str,
    host: &str,
    what: &str,
    accept: impl Fn(&support::Reply) -> bool,
) -> support::Reply {
    let client = client_from(Ipv4Addr::LOCALHOST);
    let url = cluster.url(path);
    eventually(
        &format!("GET {path} (Host {host}) to answer {what}"),
        WAIT,
        || async {
            let r = get(&client, &url, &[("host", host)]).await;
            accept(&r).then_some(r)
        },
    )
    .await
}

/// Waits until a GET returns `status`, returning that reply.
async fn wait_status(
    cluster: &Cluster,
    path: &str,
    host: &str,
    status: StatusCode,
) -> support::Reply {
    wait_reply(cluster, path, host, &status.to_string(), |r| {
        r.status == status
    })
    .await
}

/// Waits until `GET /` with `Host: host` answers `status` with a JSON
/// error containing `message` (other answers may come first).
async fn wait_error(
    cluster: &Cluster,
    host: &str,
    status: StatusCode,
    message: &str,
) -> support::Reply {
    let what = format!("{status} \"{message}\"");
    wait_reply(cluster, "/", host, &what, |r| {
        r.status == status
            && r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains(message))
    })
    .await
}

#[tokio::test]
async fn routes_by_host_and_by_id_and_sets_proxy_headers() {
    let cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let f = cluster.function(&["app.test"]).await;
    let cid = cluster.backend(f, NODE_A, Running).await;

    let r = wait_status(
        &cluster,
        "/hello/world?x=1&y=2",
        "App.Test:8000",
        StatusCode::OK,
    )
    .await;
    let seen = r.json();
    assert_eq!(seen["node"], NODE_A.to_string());
    assert_eq!(seen["container"], cid.to_string());
    assert_eq!(
        seen["path"], "/hello/world",
        "routed by host, the function sees the whole path"
    );
    assert_eq!(seen["query"], "x=1&y=2");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], "App.Test:8000");
    assert_eq!(r.headers["x-bismuth-container-id"], cid.to_string());
    let started = r.headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(
        seen["headers"]["traceparent"], started,
        "the backend sees the trace we return"
    );
    assert_eq!(started.len(), 55);

    // By id, with a caller's trace continued.
    let client = client_from(Ipv4Addr::LOCALHOST);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = get(
        &client,
        &cluster.url(&format!("/invoke/{f}/sub/path?q=1")),
        &[
            ("host", "unrouted.example"),
            ("traceparent", incoming),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = r.json();
    assert_eq!(seen["path"], "/sub/path");
    assert_eq!(seen["query"], "q=1");
    assert!(
        seen["headers"].get("x-hop").is_none(),
        "headers named by Connection are dropped"
    );
    let tp = r.headers["traceparent"].to_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp != incoming,
        "{tp}"
    );

    let r = get(&client, &cluster.url(&format!("/invoke/{f}")), &[]).await;
    assert_eq!(r.json()["path"], "/");
}

#[tokio::test]
async fn route_changes_take_effect_without_restart() {
    let cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let _b = cluster.stand_in(NODE_B).await;
    let first = cluster.function(&["moving.test"]).await;
    cluster.backend(first, NODE_A, Running).await;
    let r = wait_status(&cluster, "/", "moving.test", StatusCode::OK).await;
    assert_eq!(r.json()["node"], NODE_A.to_string());

    functions::delete_function(&cluster.zk, first)
        .await
        .unwrap();
    // (A request held while the function went answers 404 "does not
    // exist" first; then the route is gone too.)
    let r = wait_error(
        &cluster,
        "moving.test",
        StatusCode::NOT_FOUND,
        "no function is routed from host",
    )
    .await;
    assert_eq!(r.headers["content-type"], "application/json");

    let second = cluster.function(&["moving.test"]).await;
    cluster.backend(second, NODE_B, Running).await;
    let r = wait_status(&cluster, "/", "moving.test", StatusCode::OK).await;
    assert_eq!(r.json()["node"], NODE_B.to_string());
}

#[tokio::test]
async fn only_running_backends_get_traffic() {
    let cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let _b = cluster.stand_in(NODE_B).await;
    let f = cluster.function(&["status.test"]).await;
    let starting = cluster.backend(f, NODE_A, Starting).await;
    // (Until its routing table is loaded, bismuthfe answers another 503.)
    let r = wait_error(
        &cluster,
        "status.test",
        StatusCode::SERVICE_UNAVAILABLE,
        "has no running backend",
    )
    .await;
    assert_eq!(r.headers["retry-after"], "1");

    let running = cluster.backend(f, NODE_B, Running).await;
    wait_status(&cluster, "/", "status.test", StatusCode::OK).await;
    cluster.set_state(NODE_A, starting, Running).await;
    // Wait until both serve (some client lands on A), then fail B.
    eventually("both backends serving", WAIT, || async {
        let mut nodes = std::collections::HashSet::new();
        for i in 1..=40u8 {
            let r = get(
                &client_from(Ipv4Addr::new(127, 0, 1, i)),
                &cluster.url("/"),
                &[("host", "status.test")],
            )
            .await;
            nodes.insert(r.json()["node"].as_str().unwrap_or("").to_owned());
        }
        (nodes.len() == 2).then_some(())
    })
    .await;

    cluster.set_state(NODE_B, running, Failed).await;
    eventually("traffic only to the Running backend", WAIT, || async {
        for i in 1..=40u8 {
            let r = get(
                &client_from(Ipv4Addr::new(127, 0, 1, i)),
                &cluster.url("/"),
                &[("host", "status.test")],
            )
            .await;
            if r.json()["node"] != NODE_A.to_string() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Which node each of 60 client addresses is served by.
async fn placement(cluster: &Cluster, host: &str) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    for i in 1..=60u8 {
        let r = get(
            &client_from(Ipv4Addr::new(127, 0, 2, i)),
            &cluster.url("/"),
            &[("host", host)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        out.insert(i, r.json()["node"].as_str().unwrap().to_owned());
    }
    out
}

#[tokio::test]
async fn consistent_hashing_keeps_most_clients_when_a_backend_is_added() {
    let cluster = Cluster::start().await;
    let stand_ins = [
        cluster.stand_in(NODE_A).await,
        cluster.stand_in(NODE_B).await,
        cluster.stand_in(NODE_C).await,
        cluster.stand_in(NODE_D).await,
    ];
    let f = cluster.function(&["hash.test"]).await;
    for node in [NODE_A, NODE_B, NODE_C] {
        cluster.backend(f, node, Running).await;
    }
    let client = client_from(Ipv4Addr::LOCALHOST);
    eventually("three backends in the table", WAIT, || async {
        let view = placement(&cluster, "hash.test").await;
        let nodes: std::collections::HashSet<_> = view.values().collect();
        (nodes.len() == 3).then_some(())
    })
    .await;
    let before = placement(&cluster, "hash.test").await;
    assert_eq!(
        before,
        placement(&cluster, "hash.test").await,
        "placement is stable"
    );

    cluster.backend(f, NODE_D, Running).await;
    let after = eventually("the new backend to take clients", WAIT, || async {
        let view = placement(&cluster, "hash.test").await;
        view.values()
            .any(|n| *n == NODE_D.to_string())
            .then_some(view)
    })
    .await;
    let moved: Vec<_> = before.keys().filter(|k| before[k] != after[k]).collect();
    for k in &moved {
        assert_eq!(
            after[k],
            NODE_D.to_string(),
            "clients move only to the new backend"
        );
    }
    // Expected 1/4 of 60 = 15; allow generous statistical room.
    assert!(moved.len() <= 27, "{} of 60 clients moved", moved.len());
    drop((stand_ins, client));
}

#[tokio::test]
async fn refused_connection_fails_over_and_unreachable_is_502() {
    let cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let dead_node = Ipv4Addr::new(127, 0, 0, 99); // nothing listens there
    let f = cluster.function(&["failover.test"]).await;
    cluster.backend(f, dead_node, Running).await;
    let r = wait_status(&cluster, "/", "failover.test", StatusCode::BAD_GATEWAY).await;
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("could be reached"),
        "{:?}",
        r.json()
    );

    cluster.backend(f, NODE_A, Running).await;
    wait_status(&cluster, "/", "failover.test", StatusCode::OK).await;
    // Every client succeeds, including those whose first choice is the dead node.
    for i in 1..=40u8 {
        let r = get(
            &client_from(Ipv4Addr::new(127, 0, 3, i)),
            &cluster.url("/"),
            &[("host", "failover.test")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "client {i}: {:?}", r.body);
        assert_eq!(r.json()["node"], NODE_A.to_string());
    }
}

#[tokio::test]
async fn unknown_things_are_json_404s() {
    let cluster = Cluster::start().await;
    let client = client_from(Ipv4Addr::LOCALHOST);
    let f = cluster.function(&["known.test"]).await;
    eventually("the table to know the function", WAIT, || async {
        let r = get(&client, &cluster.url("/"), &[("host", "known.test")]).await;
        let msg = r.json()["error"].as_str().unwrap_or("").to_owned();
        msg.contains("has no running backend").then_some(())
    })
    .await;

    let cases = [
        (
            "/".to_owned(),
            "nobody.test",
            "no function is routed from host \"nobody.test\"",
        ),
        (
            format!("/invoke/{}", uuid::Uuid::new_v4()),
            "x",
            "does not exist",
        ),
        (
            "/invoke/not-a-uuid/x".to_owned(),
            "x",
            "\"not-a-uuid\" is not a function id",
        ),
    ];
    for (path, host, message) in cases {
        let r = get(&client, &cluster.url(&path), &[("host", host)]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(
            r.json()["error"].as_str().unwrap().contains(message),
            "{path}: {:?}",
            r.json()
        );
    }
    let r = get(&client, &cluster.url(&format!("/invoke/{f}")), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = get(
        &client,
        &cluster.url("/healthz"),
        &[("host", "nobody.test")],
    )
    .await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"OK"[..]));
}

#[tokio::test]
async fn hundred_megabyte_bodies_stream_both_ways() {
    const SIZE: u64 = 100 << 20;
    let cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let f = cluster.function(&["big.test"]).await;
    cluster.backend(f, NODE_A, Running).await;
    wait_status(&cluster, "/", "big.test", StatusCode::OK).await;
    let base = rss();

    // Upload: the stand-in counts what arrives.
    let (mut tx, rx) =
        futures_channel::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        use futures_util::SinkExt;
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..(SIZE / chunk.len() as u64) {
            tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let req = Request::post(cluster.url("/count"))
        .header("host", "big.test")
        .body(StreamBody::new(rx))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let counted = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(counted, SIZE.to_string().as_bytes());
    let after_upload = rss();

    // Download: count what the frontend streams back.
    let client = client_from(Ipv4Addr::LOCALHOST);
    let req = Request::get(cluster.url(&format!("/download?bytes={SIZE}")))
        .header("host", "big.test")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let (mut received, mut peak) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
        peak = peak.max(rss());
    }
    assert_eq!(received, SIZE);
    let growth = after_upload.max(peak).saturating_sub(base);
    assert!(
        growth < 40 << 20,
        "memory grew by {} MiB while streaming 100 MiB",
        growth >> 20
    );
}

#[tokio::test]
async fn keeps_serving_and_updating_across_a_zookeeper_restart() {
    let mut cluster = Cluster::start().await;
    let _a = cluster.stand_in(NODE_A).await;
    let f = cluster.function(&["zk.test"]).await;
    cluster.backend(f, NODE_A, Running).await;
    wait_status(&cluster, "/", "zk.test", StatusCode::OK).await;

    cluster.zookeeper.stop();
    // ZooKeeper down: the last snapshot keeps serving.
    let r = get(
        &client_from(Ipv4Addr::LOCALHOST),
        &cluster.url("/"),
        &[("host", "zk.test")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    cluster.zookeeper.restart(false).unwrap();
    let g = eventually("ZooKeeper writes to work again", WAIT, || async {
        cluster.zk.exists("/function").await.ok()
    })
    .await;
    assert!(g);
    let second = cluster.function(&["after-restart.test"]).await;
    cluster.backend(second, NODE_A, Running).await;
    wait_status(&cluster, "/", "after-restart.test", StatusCode::OK).await;
}

#[tokio::test]
async fn a_request_whose_body_was_sent_is_not_replayed() {
    let cluster = Cluster::start().await;
    let good = cluster.stand_in(NODE_A).await;
    // NODE_B accepts, reads the whole request, then drops the connection without answering.
    let dropper = tokio::net::TcpListener::bind((NODE_B, cluster.backend_port))
        .await
        .unwrap();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = dropped.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let (mut s, _) = dropper.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let f = cluster.function(&["replay.test"]).await;
    cluster.backend(f, NODE_A, Running).await;
    wait_status(&cluster, "/", "replay.test", StatusCode::OK).await;
    cluster.backend(f, NODE_B, Running).await;

    // POST from many clients until one is sent to NODE_B (ranked first for
    // it): that one must get a 502, its body not sent again to NODE_A.
    eventually("a POST to reach the dropping backend", WAIT, || async {
        for i in 1..=60u8 {
            let client = client_from(Ipv4Addr::new(127, 0, 4, i));
            let before = dropped.load(std::sync::atomic::Ordering::SeqCst);
            let req = Request::post(cluster.url("/count"))
                .header("host", "replay.test")
                .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            if dropped.load(std::sync::atomic::Ordering::SeqCst) == before {
                assert_eq!(resp.status(), StatusCode::OK, "served by the good backend");
                continue;
            }
            assert_eq!(
                resp.status(),
                StatusCode::BAD_GATEWAY,
                "a sent body must not be replayed"
            );
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(
                String::from_utf8_lossy(&body).contains("failed"),
                "{body:?}"
            );
            return Some(());
        }
        None
    })
    .await;
    drop(good);
}

#[tokio::test]
async fn a_request_is_held_while_its_only_backend_restarts() {
    // bismuthd restarting (an upgrade): its port refuses for a moment. The
    // request waits and succeeds instead of failing with 502.
    let cluster = Cluster::start().await;
    let f = cluster.function(&["restart.test"]).await;
    cluster.backend(f, NODE_B, Running).await;
    let client = client_from(Ipv4Addr::LOCALHOST);
    eventually("the table to know the backend", WAIT, || async {
        let r = get(&client, &cluster.url("/"), &[("host", "restart.test")]).await;
        (r.status == StatusCode::BAD_GATEWAY).then_some(())
    })
    .await;
    let request = spawn_get(&cluster, "restart.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _b = cluster.stand_in(NODE_B).await;
    let r = request.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["node"], NODE_B.to_string());
}

#[tokio::test]
async fn a_request_for_a_function_at_zero_is_held_until_an_instance_runs() {
    let cluster = Cluster::start_with(|c| {
        c.cold_start_timeout = Duration::from_secs(20);
        c.max_held_requests = 2;
    })
    .await;
    let _a = cluster.stand_in(NODE_A).await;
    let f = cluster.function(&["cold.test"]).await;
    // Once a function created after it answers, the frontend knows this
    // one too, with no backend at all (scaled to zero).
    let warm = cluster.function(&["warm.test"]).await;
    cluster.backend(warm, NODE_A, Running).await;
    wait_status(&cluster, "/", "warm.test", StatusCode::OK).await;
    let first = spawn_get(&cluster, "cold.test");
    // It asks the controller for an instance, and shows as held in /load.
    let wake = paths::function_wake(f);
    eventually("a wake-up for the function", WAIT, || async {
        cluster.zk.exists(&wake).await.unwrap().then_some(())
    })
    .await;
    eventually("the request to count as held", WAIT, || async {
        (held(&cluster, f).await? == 1).then_some(())
    })
    .await;
    // Holds are bounded: a third request at once is refused with Retry-After.
    let second = spawn_get(&cluster, "cold.test");
    eventually("two requests held", WAIT, || async {
        (held(&cluster, f).await? == 2).then_some(())
    })
    .await;
    let r = get(
        &client_from(Ipv4Addr::LOCALHOST),
        &cluster.url("/"),
        &[("host", "cold.test")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("too many requests are waiting"));

    // An instance comes: both held requests are answered by it.
    cluster.backend(f, NODE_A, Running).await;
    for r in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json()["node"], NODE_A.to_string());
    }
}

/// The frontend's `GET /load`, once it lists a function.
async fn http_get_load(cluster: &Cluster) -> Option<serde_json::Value> {
    let r = get(
        &client_from(Ipv4Addr::LOCALHOST),
        &cluster.url("/load"),
        &[],
    )
    .await;
    (r.status == StatusCode::OK).then(|| r.json())
}

/// `GET /` with `host` through the frontend, on a task of its own.
fn spawn_get(cluster: &Cluster, host: &'static str) -> tokio::task::JoinHandle<support::Reply> {
    let url = cluster.url("/");
    tokio::spawn(
        async move { get(&client_from(Ipv4Addr::LOCALHOST), &url, &[("host", host)]).await },
    )
}

/// How many requests for `f` the frontend's `/load` says it holds.
async fn held(cluster: &Cluster, f: uuid::Uuid) -> Option<u64> {
    let load = http_get_load(cluster).await?;
    load["functions"]
        .as_array()?
        .iter()
        .find(|l| l["function"] == f.to_string())?["held"]
        .as_u64()
}
