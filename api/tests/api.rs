//! The api against a real ZooKeeper: every call and error path, scheduling,
//! zero-downtime redeploys and their rollback, auth, secrets, logs, and
//! concurrent writers leaving a consistent tree.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use bismuth_model::{paths, unpack_backends, ContainerState};
use http::{Method, StatusCode};
use support::{def, Cluster, DESIGN_EXAMPLE};
use uuid::Uuid;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const D: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
const GIB: u64 = 1 << 30;

#[tokio::test]
async fn design_example_create_get_list_delete() {
    let c = Cluster::start().await;
    c.node(A, 4.0, 8 * GIB).await;
    let r = c.call(Method::POST, "/function", DESIGN_EXAMPLE).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let id: Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();

    let r = c.call(Method::GET, &format!("/function/{id}"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let original: serde_json::Value = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
    assert_eq!(
        v["definition"], original,
        "the definition comes back unchanged"
    );
    assert_eq!(v["backends"][0]["backend"]["ip"], "10.0.0.1");
    assert_eq!(
        v["backends"][0]["status"], "Invalid",
        "no bismuthd has picked it up yet"
    );
    assert_eq!(
        c.zk.get(&paths::route("test.host.internal"))
            .await
            .unwrap()
            .value,
        id.as_bytes()
    );

    assert_eq!(
        v["instances"],
        serde_json::json!({"min": 1, "max": 1, "desired": 1, "running": 0}),
        "without the elasticity fields: always max_instances"
    );

    let list = c.call(Method::GET, "/function", "").await.json();
    assert_eq!(list[0]["id"], id.to_string());
    assert_eq!(
        list[0]["definition"]["image"],
        "docker.io/library/python:3.11"
    );

    let nodes = c.call(Method::GET, "/node", "").await.json();
    assert_eq!(nodes[0]["ip"], "10.0.0.1");
    assert_eq!(nodes[0]["alive"], true);
    assert_eq!(nodes[0]["containers"], 1);
    assert_eq!(nodes[0]["used"]["memory"], 134_217_728);

    assert_eq!(
        c.call(Method::DELETE, &format!("/function/{id}"), "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.call(Method::GET, &format!("/function/{id}"), "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(!c
        .zk
        .exists(&paths::route("test.host.internal"))
        .await
        .unwrap());
    assert!(c
        .zk
        .children(&paths::node_containers(A))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(c.call(Method::GET, "/healthz", "").await.body, "OK");
}

#[tokio::test]
async fn errors_are_4xx_with_json_and_write_nothing() {
    let c = Cluster::start().await;
    c.node(A, 4.0, 8 * GIB).await;
    let taken = c
        .call(Method::POST, "/function", def(&["taken.example"], 1))
        .await
        .json()["id"]
        .clone();

    let cases: Vec<(Method, String, String, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/function".into(),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            Method::POST,
            "/function".into(),
            r#"{"image": "busybox", "cpu": "lots"}"#.into(),
            StatusCode::BAD_REQUEST,
            "at cpu",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&[], 1).replace("\"cpu\"", "\"cpus\""),
            StatusCode::BAD_REQUEST,
            "unknown field `cpus`",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&[], 1).replace("16777216", "1024"),
            StatusCode::BAD_REQUEST,
            "memory: must be at least",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&["bad_host"], 1),
            StatusCode::BAD_REQUEST,
            "routes[0].hostname",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&["new.example", "taken.example"], 1),
            StatusCode::CONFLICT,
            "route taken.example already belongs to function",
        ),
        (
            // Taken, and too big as well: the route is what it is told.
            Method::POST,
            "/function".into(),
            def(&["taken.example"], 50),
            StatusCode::CONFLICT,
            "route taken.example already belongs to function",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&[], 50),
            StatusCode::BAD_REQUEST,
            "max_instances: 50 instances",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&[], 2).replace(
                "\"max_instances\"",
                "\"min_instances\": 3, \"max_instances\"",
            ),
            StatusCode::BAD_REQUEST,
            "min_instances: must be at most max_instances (2), got 3",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&[], 2).replace("\"max_instances\"", "\"concurrency\": 0, \"max_instances\""),
            StatusCode::BAD_REQUEST,
            "concurrency: must be at least 1",
        ),
        (
            Method::POST,
            "/function".into(),
            def(&[], 2).replace(
                "\"max_instances\"",
                "\"idle_timeout\": -5, \"max_instances\"",
            ),
            StatusCode::BAD_REQUEST,
            "idle_timeout: must be a number of seconds, 0 or more, got -5",
        ),
        (
            Method::GET,
            format!("/function/{}", Uuid::new_v4()),
            String::new(),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            Method::GET,
            "/function/not-a-uuid".into(),
            String::new(),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            Method::PUT,
            format!("/function/{}", Uuid::new_v4()),
            String::new(),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            Method::DELETE,
            format!("/function/{}", Uuid::new_v4()),
            String::new(),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            Method::GET,
            "/nothing/here".into(),
            String::new(),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let r = c.call(method.clone(), &path, body).await;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        assert!(
            r.error().contains(message),
            "{method} {path}: expected {message:?} in {:?}",
            r.error()
        );
    }
    // Only the first function exists; no stray routes or containers.
    assert_eq!(
        c.zk.children(paths::FUNCTIONS).await.unwrap(),
        [taken.as_str().unwrap()]
    );
    assert_eq!(
        c.zk.children(paths::ROUTES).await.unwrap(),
        ["taken.example"]
    );
    assert_eq!(
        c.zk.children(&paths::node_containers(A))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(bismuth_zk::consistency::check(&c.zk)
        .await
        .unwrap()
        .is_empty());

    // ZooKeeper down: 503, not 500.
    let mut c = c;
    c.zookeeper.stop();
    let r = c.call(Method::GET, "/function", "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
}

#[tokio::test]
async fn schedules_on_enabled_alive_nodes_with_room_and_spreads() {
    let c = Cluster::start().await;
    c.node(A, 2.0, 8 * GIB).await; // eligible
    c.node(B, 2.0, 8 * GIB).await; // drained below
    bismuth_zk::store::nodes::provision(&c.zk, C).await.unwrap(); // never announced: not alive
    c.node(D, 0.1, 8 * GIB).await; // too little cpu
    bismuth_zk::store::nodes::set_state(&c.zk, B, bismuth_model::NodeState::Disabled)
        .await
        .unwrap();

    let id = c.call(Method::POST, "/function", def(&[], 2)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = c
        .call(Method::GET, &format!("/function/{id}"), "")
        .await
        .json();
    let ips: Vec<&str> = view["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backend"]["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.1"], "only A qualifies");

    // Undrain B: new instances spread across A and B.
    bismuth_zk::store::nodes::set_state(&c.zk, B, bismuth_model::NodeState::Enabled)
        .await
        .unwrap();
    let id = c.call(Method::POST, "/function", def(&[], 2)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = c
        .call(Method::GET, &format!("/function/{id}"), "")
        .await
        .json();
    let mut ips: Vec<&str> = view["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backend"]["ip"].as_str().unwrap())
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);

    // A is now full on cpu (4 x 0.25 = 1 of 2 used; ask for 1.5).
    let big = def(&[], 1).replace("0.25", "1.5");
    let r = c.call(Method::POST, "/function", big.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c.call(Method::POST, "/function", big).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("no node has room"), "{}", r.error());
}

#[tokio::test]
async fn redeploy_replaces_containers_without_downtime() {
    let c = Cluster::start().await;
    c.node(A, 4.0, 8 * GIB).await;
    c.node(B, 4.0, 8 * GIB).await;
    let _reporter = c.report_running();
    let id: Uuid = c
        .call(Method::POST, "/function", def(&["v1.example"], 1))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let old = bismuth_testkit::eventually(
        "first instance Running",
        Duration::from_secs(10),
        || async {
            let v = c
                .call(Method::GET, &format!("/function/{id}"), "")
                .await
                .json();
            (v["backends"][0]["status"] == "Running").then(|| {
                v["backends"][0]["backend"]["container_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        },
    )
    .await;

    // While the redeploy runs, some listed backend is Running at every moment.
    let zk = c.zk.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_sampling = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = 0;
        while !stop_sampling.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(raw) = zk.get(&paths::function_backends(id)).await else {
                return samples;
            };
            let list = unpack_backends(&raw.value).unwrap();
            let mut any = false;
            for b in &list {
                let s = bismuth_zk::store::backends::container_state(&zk, b.ip, b.container_id)
                    .await
                    .unwrap();
                any |= s == Some(ContainerState::Running);
            }
            assert!(
                any,
                "no Running backend listed during the redeploy: {list:?}"
            );
            samples += 1;
            tokio::task::yield_now().await;
        }
        samples
    });
    let r = c.call(Method::PUT, &format!("/function/{id}"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["backends"].as_array().unwrap().len(), 1);
    let new = v["backends"][0]["backend"]["container_id"]
        .as_str()
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(v["backends"][0]["status"], "Running");
    let old_id: Uuid = old.parse().unwrap();
    for ip in [A, B] {
        assert!(
            !c.zk.exists(&paths::container(ip, old_id)).await.unwrap(),
            "old container znode removed"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler
        .await
        .expect("sampler saw a moment without a Running backend");
    assert!(samples > 0);

    // A new definition: new route, old one released.
    let r = c
        .call(
            Method::PUT,
            &format!("/function/{id}"),
            def(&["v2.example"], 2),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["backends"].as_array().unwrap().len(), 2);
    assert!(!c.zk.exists(&paths::route("v1.example")).await.unwrap());
    assert_eq!(
        c.zk.get(&paths::route("v2.example")).await.unwrap().value,
        id.as_bytes()
    );
    assert!(bismuth_zk::consistency::check(&c.zk)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn redeploy_that_never_runs_is_rolled_back() {
    let c = Cluster::start().await;
    c.node(A, 4.0, 8 * GIB).await;
    let id = c
        .call(Method::POST, "/function", def(&["keep.example"], 1))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = c
        .call(Method::GET, &format!("/function/{id}"), "")
        .await
        .json();

    // Nothing reports Running: the update times out and is undone.
    let r = c
        .call(
            Method::PUT,
            &format!("/function/{id}?timeout_ms=500"),
            def(&["other.example"], 1),
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", r.body);
    assert!(r.error().contains("rolled back"), "{}", r.error());
    // It says which new instance did not run, and where.
    assert!(
        r.error().contains("instance ") && r.error().contains("on node 10.0.0.1"),
        "{}",
        r.error()
    );
    let after = c
        .call(Method::GET, &format!("/function/{id}"), "")
        .await
        .json();
    assert_eq!(after, before, "definition and backends as before");
    assert!(c.zk.exists(&paths::route("keep.example")).await.unwrap());
    assert!(!c.zk.exists(&paths::route("other.example")).await.unwrap());
    assert_eq!(
        c.zk.children(&paths::node_containers(A))
            .await
            .unwrap()
            .len(),
        1
    );

    let r = c
        .call(Method::PUT, &format!("/function/{id}?timeout_ms=soon"), "")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bearer_token_guards_everything_but_healthz() {
    let token = "0123456789abcdef0123";
    let c = Cluster::start_with(|cfg| cfg.auth_token = Some(token.into())).await;
    let r = c.call_with(Method::GET, "/function", "", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.error().contains("bearer token"));
    assert_eq!(
        c.call_with(Method::GET, "/function", "", Some("wrong-token-000000000"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.call_with(Method::GET, "/healthz", "", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.call(Method::GET, "/function", "").await.status,
        StatusCode::OK
    );

    // Without a token the api refuses to listen beyond loopback, and says why.
    use clap::Parser;
    let args = api::Args::parse_from(["api", "--listen", "0.0.0.0:8002"]);
    let e = args.config().unwrap_err().to_string();
    assert!(
        e.contains("refusing to listen on 0.0.0.0:8002 without authentication"),
        "{e}"
    );
    assert!(api::Args::parse_from(["api", "--listen", "127.0.0.1:8002"])
        .config()
        .is_ok());
}

#[tokio::test]
async fn secrets_go_to_the_svcprovider_store_and_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.key");
    let key = bismuth_svcstore::crypto::SecretKey::generate();
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let store = format!("sqlite:{}", dir.path().join("svc").display());
    let c = Cluster::start_with(|cfg| {
        cfg.svc_store = store.clone();
        cfg.secret_key_file = Some(key_file.clone());
    })
    .await;
    c.node(A, 4.0, 8 * GIB).await;
    let id = c.call(Method::POST, "/function", def(&[], 1)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = c
        .call(
            Method::PUT,
            &format!("/function/{id}/secrets/db/password"),
            "hunter2",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The function's svcprovider reads it from the same store.
    use bismuth_svcstore::Storage;
    let s = bismuth_svcstore::sqlite::SqliteStore::open(
        &dir.path().join("svc"),
        &id,
        Default::default(),
        Some(key),
    )
    .unwrap();
    assert_eq!(
        s.secret_get("db/password").await.unwrap().unwrap(),
        "hunter2"
    );
    // No endpoint returns it.
    assert_eq!(
        c.call(
            Method::GET,
            &format!("/function/{id}/secrets/db/password"),
            ""
        )
        .await
        .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(!String::from_utf8_lossy(
        &c.call(Method::GET, &format!("/function/{id}"), "")
            .await
            .body
    )
    .contains("hunter2"));

    assert_eq!(
        c.call(
            Method::DELETE,
            &format!("/function/{id}/secrets/db/password"),
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        c.call(
            Method::DELETE,
            &format!("/function/{id}/secrets/db/password"),
            ""
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.call(Method::PUT, &format!("/function/{id}/secrets/../x"), "v")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.call(
            Method::PUT,
            &format!("/function/{}/secrets/k", Uuid::new_v4()),
            "v"
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_and_updates_leave_a_consistent_tree() {
    let c = std::sync::Arc::new(Cluster::start().await);
    for ip in [A, B, C] {
        c.node(ip, 64.0, 64 * GIB).await;
    }
    let _reporter = c.report_running();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .call(
                    Method::POST,
                    "/function",
                    def(&[&format!("f{i}.example")], 1 + i % 2),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            r.json()["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    // 40 concurrent updates: 20 functions each updated twice at once.
    let mut tasks = Vec::new();
    for (n, id) in ids
        .iter()
        .take(20)
        .flat_map(|id| [id.clone(), id.clone()])
        .enumerate()
    {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = if n % 2 == 0 {
                String::new()
            } else {
                def(&[&format!("u{n}.example")], 2)
            };
            let r = c.call(Method::PUT, &format!("/function/{id}"), body).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let findings = bismuth_zk::consistency::check(&c.zk).await.unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(c.zk.children(paths::FUNCTIONS).await.unwrap().len(), 60);
}

#[tokio::test]
async fn logs_come_from_each_backend_and_follow_streams_until_the_client_leaves() {
    let port = bismuth_testkit::free_port().unwrap();
    let c = Cluster::start_with(|cfg| cfg.bismuthd_port = port).await;
    let nodes = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
    let mut stand_ins = Vec::new();
    for ip in nodes {
        c.node(ip, 4.0, 8 * GIB).await;
        stand_ins.push(support::LogServer::start(std::net::SocketAddr::from((ip, port))).await);
    }
    let id = c.call(Method::POST, "/function", def(&[], 2)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = c
        .call(Method::GET, &format!("/function/{id}"), "")
        .await
        .json();
    let cids: Vec<String> = view["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backend"]["container_id"].as_str().unwrap().to_owned())
        .collect();

    let r = c
        .call(Method::GET, &format!("/function/{id}/logs"), "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    for cid in &cids {
        assert!(
            text.contains(&format!("[{cid}] hello from {cid}\n[{cid}] second line\n")),
            "{text}"
        );
    }

    // Follow: SSE events from both containers, prefixed; then the client leaves.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::get(format!("http://{}/function/{id}/logs?follow=true", c.api))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    use http_body_util::BodyExt;
    while !cids
        .iter()
        .all(|cid| seen.contains(&format!("data: [{cid}] live-2")))
    {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(d) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    drop(body);
    for s in &stand_ins {
        bismuth_testkit::eventually(
            "upstream follow closed",
            Duration::from_secs(10),
            || async { s.followers_gone().then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn openapi_document_describes_every_routed_operation() {
    let c = Cluster::start().await;
    let doc = c.call(Method::GET, "/openapi.json", "").await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let def = &doc["components"]["schemas"]["FunctionDefinition"];
    assert!(def["properties"]["invoke_mode"].is_object(), "{def}");
    assert!(def["required"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "image"));
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        api::openapi::PATHS.len()
    );
    for op in api::openapi::PATHS {
        let path = op
            .path
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{key}", "k")
            .replace("{ip}", "10.9.9.9");
        let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
        let r = c.call(method, &path, "").await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            op.method,
            op.path
        );
        assert!(
            !r.error().contains("no such endpoint"),
            "{} {} is documented but not routed",
            op.method,
            op.path
        );
    }
}

#[tokio::test]
async fn drain_checks_the_node_and_the_room_for_an_evacuation() {
    let c = Cluster::start().await;
    c.node(A, 1.0, 8 * GIB).await;
    c.node(B, 1.0, 8 * GIB).await;
    // One 0.75-cpu instance per node: neither can take the other's.
    let big = def(&[], 2).replace("0.25", "0.75");
    let r = c.call(Method::POST, "/function", big).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let r = c
        .call(
            Method::POST,
            &format!("/node/{A}/drain"),
            r#"{"evacuate": true}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(
        r.error().contains("no other alive, enabled node has room"),
        "{}",
        r.error()
    );
    assert!(r.error().contains("nothing was changed"), "{}", r.error());
    let nodes = c.call(Method::GET, "/node", "").await.json();
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "enabled"),
        "{nodes}"
    );
    assert!(!c.zk.exists(&paths::node_evacuate(A)).await.unwrap());

    let r = c.call(Method::POST, "/node/10.9.9.9/drain", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("10.9.9.9"), "{}", r.error());
    let r = c
        .call(
            Method::POST,
            &format!("/node/{A}/drain"),
            r#"{"evacuate": 1}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);

    // A plain drain needs no room; undrain undoes it.
    let r = c.call(Method::POST, &format!("/node/{A}/drain"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["state"], "drained");
    let r = c
        .call(Method::POST, &format!("/node/{A}/undrain"), "")
        .await;
    assert_eq!(r.json()["state"], "enabled");
}

#[tokio::test]
async fn edges_are_clear_errors_and_write_nothing() {
    let c = Cluster::start().await;
    c.node(A, 2.0, 8 * GIB).await;

    // A definition larger than ZooKeeper can take: 413 naming the limit.
    let huge = def(&[], 1).replacen(
        "\"busybox\"",
        &format!("\"busybox{}\"", "a".repeat(1_650_000)),
        1,
    );
    let r = c.call(Method::POST, "/function", huge).await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        &r.body[..100.min(r.body.len())]
    );
    assert!(r.error().contains("524288"), "{}", r.error());
    // Over the body limit of every route: still JSON.
    let r = c.call(Method::POST, "/function", vec![b' '; 3 << 20]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.error().contains("larger than"), "{}", r.error());

    // Bytes after the object.
    let r = c
        .call(Method::POST, "/function", format!("{}xx", def(&[], 1)))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.error().contains("after the object"), "{}", r.error());

    // What no node, or the whole fleet, could ever hold: 400 naming the field.
    let r = c
        .call(
            Method::POST,
            "/function",
            def(&[], 1).replace("16777216", &(64 * GIB).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.error().contains("memory:"), "{}", r.error());
    let r = c.call(Method::POST, "/function", def(&[], 5000)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.error().contains("max_instances:"), "{}", r.error());
    let r = c.call(Method::POST, "/function", def(&[], 20000)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.error().contains("at most 10000"), "{}", r.error());
    let listed = c.call(Method::GET, "/function", "").await.json();
    assert_eq!(listed, serde_json::json!([]), "nothing was written");

    // The framework's own answers are JSON too.
    let r = c.call(Method::DELETE, "/node", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.error().contains("method not allowed"), "{}", r.error());
    let r = c
        .call(
            Method::GET,
            &format!("/function/{}", "x".repeat(10_000)),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert!(r.error().contains("limit"), "{}", r.error());

    // ZooKeeper away: 503 at once, not after the client's timeouts.
    let mut c = c;
    c.zookeeper.stop();
    bismuth_testkit::eventually("the api to notice", Duration::from_secs(20), || async {
        (c.call(Method::GET, "/function", "").await.status == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
    })
    .await;
    for path in ["/function", "/node"] {
        let t = std::time::Instant::now();
        let r = c.call(Method::GET, path, "").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.error().contains("ZooKeeper"), "{}", r.error());
        // Not a speed figure: a request that waited on the gone server
        // would take the session timeout (about 14 s).
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn listing_pages_in_id_order_with_a_cursor() {
    let c = Cluster::start().await;
    c.node(A, 64.0, 64 * GIB).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let r = c.call(Method::POST, "/function", def(&[], 1)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    ids.sort();

    // The unpaged form stays an array (the original api's shape).
    let all = c.call(Method::GET, "/function", "").await.json();
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(all[0]["instances"]["max"], 1);

    // Pages of three, in id order, each naming the next.
    let mut seen = Vec::new();
    let mut path = "/function?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let r = c.call(Method::GET, &path, "").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let page = r.json();
        let functions = page["functions"].as_array().unwrap();
        assert!(functions.len() <= 3);
        seen.extend(
            functions
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_owned()),
        );
        assert!(functions
            .iter()
            .all(|f| f["definition"]["image"] == "busybox"));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => path = format!("/function?limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!((seen, pages), (ids.clone(), 3));

    // A function deleted between pages leaves no gap or repeat.
    let first = c.call(Method::GET, "/function?limit=2", "").await.json();
    let next = first["next"].as_str().unwrap().to_owned();
    c.call(Method::DELETE, &format!("/function/{}", ids[2]), "")
        .await;
    let second = c
        .call(Method::GET, &format!("/function?limit=2&cursor={next}"), "")
        .await
        .json();
    assert_eq!(second["functions"][0]["id"], ids[3]);

    // Bad paging input: 400 with a JSON message, whatever the case.
    for (query, message) in [
        ("limit=0", "limit must be a number from 1 to 1000"),
        ("limit=1001", "limit must be a number from 1 to 1000"),
        ("limit=x", "limit must be a number from 1 to 1000"),
        ("cursor=nonsense", "is not one this api gave out"),
        ("limit=2&cursor=f1.xyz", "is not one this api gave out"),
    ] {
        let r = c.call(Method::GET, &format!("/function?{query}"), "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(r.error().contains(message), "{query}: {}", r.error());
    }
}

#[tokio::test]
async fn stats_list_functions_and_nodes_and_the_dashboard_signs_in_with_the_token() {
    use bismuth_testkit::http;
    let token = "0123456789abcdef0123";
    let c = Cluster::start_with(|cfg| cfg.auth_token = Some(token.into())).await;
    c.node(A, 2.0, 8 * GIB).await;
    let _running = c.report_running();
    let r = c
        .call(Method::POST, "/function", def(&["s.example.com"], 1))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();

    // /stats: every function with its status and instances, every node.
    let stats = bismuth_testkit::eventually(
        "the function Running in /stats",
        Duration::from_secs(20),
        || async {
            let s = c.call(Method::GET, "/stats", "").await.json();
            (s["functions"][0]["status"] == "Running").then_some(s)
        },
    )
    .await;
    let f = &stats["functions"][0];
    assert_eq!(
        (f["id"].as_str(), f["routes"][0].as_str()),
        (Some(id.as_str()), Some("s.example.com"))
    );
    assert_eq!(
        (f["desired"].as_u64(), f["running"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(f["rate"], 0.0);
    assert_eq!(stats["nodes"][0]["ip"], A.to_string());
    assert_eq!(stats["nodes"][0]["alive"], true);
    let h = c
        .call(Method::GET, &format!("/stats/function/{id}"), "")
        .await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.json()["points"].is_array());
    let r = c
        .call(
            Method::GET,
            &format!("/stats/function/{}", Uuid::new_v4()),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.error().is_empty());

    // The dashboard: without the token, a browser is sent to sign in.
    let base = format!("http://{}", c.api);
    let r = http::get(&format!("{base}/ui/")).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (303, "/ui/login".into())
    );
    let r = http::get(&format!("{base}/ui/login")).await.unwrap();
    assert!(r.status.is_success() && r.text().contains("name=\"token\""));
    assert_eq!(
        http::get(&format!("{base}/ui/app.js"))
            .await
            .unwrap()
            .status,
        401
    );
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = http::request(
        Method::POST,
        &format!("{base}/ui/login"),
        &form,
        "token=nope",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_empty());
    let r = http::request(
        Method::POST,
        &format!("{base}/ui/login"),
        &form,
        format!("token={token}"),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (303, "/ui/".into())
    );
    let cookie = r.header("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let with = [("cookie", cookie.as_str())];
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = http::request(Method::GET, &format!("{base}{path}"), &with, "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").starts_with(kind),
            "{path}: {}",
            r.header("content-type")
        );
    }
    let r = http::request(Method::GET, &format!("{base}/stats"), &with, "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // The assets are small (the issue's budget is a few hundred KB).
    let size = include_str!("../ui/index.html").len()
        + include_str!("../ui/app.js").len()
        + include_str!("../ui/app.css").len();
    assert!(size < 100 << 10, "{size} bytes");
}

#[tokio::test]
async fn sandboxed_functions_go_only_to_nodes_with_gvisor() {
    let c = Cluster::start().await;
    c.node(A, 4.0, 8 * GIB).await;
    let sandboxed = def(&[], 1).replace(
        "\"max_instances\"",
        "\"isolation\": \"sandbox\", \"max_instances\"",
    );
    // No node has gVisor: refused, naming the field, nothing written.
    let r = c.call(Method::POST, "/function", sandboxed.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(
        r.error().contains("isolation") && r.error().contains("runsc"),
        "{}",
        r.error()
    );
    assert_eq!(
        c.call(Method::GET, "/function", "").await.json(),
        serde_json::json!([])
    );
    // A node announcing it takes every sandboxed instance; others still go anywhere.
    c.announce(
        B,
        bismuth_model::NodeCapacity {
            cpu: 4.0,
            memory: 8 * GIB,
            sandbox: true,
        },
    )
    .await;
    let nodes = c.call(Method::GET, "/node", "").await.json();
    let b = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["ip"] == B.to_string())
        .unwrap()
        .clone();
    assert_eq!(b["capacity"]["sandbox"], true, "{b}");
    for _ in 0..3 {
        let r = c.call(Method::POST, "/function", sandboxed.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let f = c
            .call(Method::GET, &format!("/function/{id}"), "")
            .await
            .json();
        assert_eq!(f["definition"]["isolation"], "sandbox");
        assert_eq!(f["backends"][0]["backend"]["ip"], B.to_string(), "{f}");
    }
}
