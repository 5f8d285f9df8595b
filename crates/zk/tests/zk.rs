//! The ZooKeeper layer against a real ZooKeeper: connection errors,
//! transactions, optimistic updates, and watches across connection loss and
//! session expiry.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bismuth_testkit::ZooKeeper;
use bismuth_zk::{Txn, WatchEvent, Zk, ZkConfig, ZkError};

async fn setup() -> (ZooKeeper, Zk) {
    tracing_subscriber_init();
    let server = ZooKeeper::start().expect("start zookeeper");
    let zk = Zk::connect(ZkConfig::new(&server.connect_string(), "test").unwrap())
        .await
        .unwrap();
    zk.bootstrap().await.unwrap();
    (server, zk)
}

/// Waits for the next event matching `want`, skipping others.
async fn expect_event(
    watch: &mut bismuth_zk::TreeWatch,
    want: impl Fn(&WatchEvent) -> bool,
) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let ev = watch.next().await.expect("watch ended");
            if want(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("timed out waiting for watch event")
}

#[tokio::test]
async fn unreachable_zookeeper_fails_fast_with_a_clear_error() {
    let port = bismuth_testkit::free_port().unwrap();
    let start = Instant::now();
    let err = Zk::connect(ZkConfig::new(&format!("127.0.0.1:{port}"), "x").unwrap())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot connect to ZooKeeper at 127.0.0.1:{port}")),
        "{msg}"
    );
}

#[tokio::test]
async fn bootstrap_is_idempotent_and_required() {
    let server = ZooKeeper::start().unwrap();
    let zk = Zk::connect(ZkConfig::new(&server.connect_string(), "fresh").unwrap())
        .await
        .unwrap();
    let err = zk.ensure_bootstrapped().await.unwrap_err();
    assert!(matches!(err, ZkError::NotBootstrapped { .. }), "{err}");
    assert!(err.to_string().contains("bismuthctl bootstrap"));

    let created = zk.bootstrap().await.unwrap();
    assert_eq!(
        created,
        ["/fresh", "/fresh/function", "/fresh/node", "/fresh/route"]
    );
    assert!(zk.bootstrap().await.unwrap().is_empty());
    zk.ensure_bootstrapped().await.unwrap();
}

#[tokio::test]
async fn failed_transaction_writes_nothing_and_names_the_path() {
    let (_server, zk) = setup().await;
    zk.create("/route/taken", b"x").await.unwrap();
    let mut txn = Txn::new();
    txn.create("/function/a", b"1".to_vec())
        .create("/function/a/backends", Vec::new())
        .create("/route/taken", b"y".to_vec());
    let err = zk.commit(&txn).await.unwrap_err();
    assert!(
        matches!(&err, ZkError::NodeExists { path } if path == "/route/taken"),
        "{err}"
    );
    assert!(
        !zk.exists("/function/a").await.unwrap(),
        "first ops must be rolled back"
    );

    // A version check that fails aborts the whole transaction too.
    let v = zk.get("/route/taken").await.unwrap().version;
    let mut txn = Txn::new();
    txn.create("/function/b", b"1".to_vec())
        .check("/route/taken", v + 1);
    assert!(matches!(
        zk.commit(&txn).await,
        Err(ZkError::BadVersion { .. })
    ));
    assert!(!zk.exists("/function/b").await.unwrap());
}

#[tokio::test]
async fn concurrent_updates_lose_no_write() {
    let (_server, zk) = setup().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let zk = zk.clone();
        tasks.push(tokio::spawn(async move {
            zk.update("/counter", |old| {
                let n: u32 = old.map_or(0, |d| String::from_utf8_lossy(d).parse().unwrap());
                Ok::<_, ZkError>(Some((n + 1).to_string().into_bytes()))
            })
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(zk.get("/counter").await.unwrap().value, b"20");
}

#[tokio::test]
async fn watch_reports_changes_below_the_path() {
    let (_server, zk) = setup().await;
    let mut watch = zk.watch_tree("/function");
    assert_eq!(watch.next().await, Some(WatchEvent::Resync));
    zk.create("/function/f", b"1").await.unwrap();
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Created("/function/f".into())
    })
    .await;
    zk.set("/function/f", b"2", None).await.unwrap();
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Changed("/function/f".into())
    })
    .await;
    zk.delete("/function/f", None).await.unwrap();
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Deleted("/function/f".into())
    })
    .await;
}

#[tokio::test]
async fn watch_survives_a_zookeeper_restart() {
    let (mut server, zk) = setup().await;
    let mut watch = zk.watch_tree("/node");
    assert_eq!(watch.next().await, Some(WatchEvent::Resync));

    server.restart(false).unwrap();
    // Connection lost and regained within the session: consumer told to resync.
    expect_event(&mut watch, |e| *e == WatchEvent::Resync).await;
    zk.create("/node/n1", b"1").await.unwrap();
    expect_event(&mut watch, |e| *e == WatchEvent::Created("/node/n1".into())).await;
}

#[tokio::test]
async fn watch_and_handle_survive_session_expiry() {
    let (mut server, zk) = setup().await;
    let mut watch = zk.watch_tree("/node");
    assert_eq!(watch.next().await, Some(WatchEvent::Resync));

    // A wiped server does not know the session: it has expired.
    server.restart(true).unwrap();
    expect_event(&mut watch, |e| *e == WatchEvent::Resync).await;

    // The same handle works again on a new session.
    bismuth_testkit::eventually("a new session", Duration::from_secs(30), || async {
        zk.bootstrap().await.ok()
    })
    .await;
    zk.create("/node/n2", b"1").await.unwrap();
    expect_event(&mut watch, |e| *e == WatchEvent::Created("/node/n2".into())).await;
}
fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
