//! svcprovider as a function sees it, against both storage backends: every
//! call and status code, quotas, secrets, large streamed blobs, crashes and
//! concurrent writers.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use support::{secret_cli, Backend, Options, Provider, TOKEN};

/// Runs one async test body against SQLite and against PostgreSQL.
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(Backend::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(Backend::postgres()).await;
            }
        }
    };
}

both_backends!(auth_and_kv, auth_and_kv_calls);
both_backends!(blobs, blob_calls);
both_backends!(secrets, secret_calls);
both_backends!(quotas, quota_limits);
both_backends!(crash, sigkill_keeps_acknowledged_writes);
both_backends!(concurrency, two_processes_lose_nothing);
both_backends!(large_blob, large_blob_streams);

async fn auth_and_kv_calls(backend: Backend) {
    let p = Provider::start(
        &backend,
        Options {
            max_value_bytes: 1024,
            ..Default::default()
        },
    )
    .await;
    // Auth: /healthz is open, everything else needs the token.
    let (s, _) = p
        .try_call(Method::GET, "/kv/v1/x", None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = p
        .try_call(
            Method::GET,
            "/kv/v1/x",
            Some("wrong-token-000000000"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));

    assert_eq!(
        p.call(Method::GET, "/kv/v1/user/1", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::POST, "/kv/v1/user/1", "alice").await.0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(Method::GET, "/kv/v1/user/1", "").await,
        (StatusCode::OK, Bytes::from("alice"))
    );
    assert_eq!(
        p.call(Method::POST, "/kv/v1/user/1", "bob").await.0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(Method::GET, "/kv/v1/user/1", "").await.1,
        Bytes::from("bob")
    );
    assert_eq!(
        p.call(Method::DELETE, "/kv/v1/user/1", "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(Method::GET, "/kv/v1/user/1", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::DELETE, "/kv/v1/user/1", "").await.0,
        StatusCode::NOT_FOUND
    );

    // Bad keys, methods, sizes, paths.
    for bad in ["/kv/v1/a/../b", "/kv/v1/a%2Fb", "/kv/v1/a//b", "/kv/v1/"] {
        let (s, body) = p.call(Method::GET, bad, "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body:?}");
    }
    assert_eq!(
        p.call(Method::PATCH, "/kv/v1/x", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        p.call(Method::POST, "/kv/v1/big", vec![0u8; 1025]).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        p.call(Method::GET, "/kv/v1/big", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::GET, "/nope", "").await.0,
        StatusCode::NOT_FOUND
    );
}

async fn blob_calls(backend: Backend) {
    let p = Provider::start(&backend, Options::default()).await;
    assert_eq!(
        p.call(Method::GET, "/blob/v1/", "").await,
        (StatusCode::OK, Bytes::from("[]"))
    );
    assert_eq!(
        p.call(Method::POST, "/blob/v1/img/a.png", "first").await.0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(Method::POST, "/blob/v1/img/a.png", "again").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        p.call(Method::GET, "/blob/v1/img/a.png", "").await.1,
        Bytes::from("first")
    );
    assert_eq!(
        p.call(Method::PUT, "/blob/v1/missing", "x").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::PUT, "/blob/v1/img/a.png", "second").await.0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(Method::GET, "/blob/v1/img/a.png", "").await.1,
        Bytes::from("second")
    );
    assert_eq!(
        p.call(Method::POST, "/blob/v1/b", "").await.0,
        StatusCode::OK,
        "empty blob"
    );
    assert_eq!(
        p.call(Method::GET, "/blob/v1/b", "").await,
        (StatusCode::OK, Bytes::new())
    );
    let (s, list) = p.call(Method::GET, "/blob/v1/", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&list).unwrap(),
        ["b", "img/a.png"]
    );
    assert_eq!(
        p.call(Method::DELETE, "/blob/v1/img/a.png", "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(Method::GET, "/blob/v1/img/a.png", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::DELETE, "/blob/v1/img/a.png", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::POST, "/blob/v1/", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        p.call(Method::GET, "/blob/v1/../etc/passwd", "").await.0,
        StatusCode::BAD_REQUEST
    );
}

async fn secret_calls(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(
        &key_file,
        svcprovider::crypto::SecretKey::generate().to_hex(),
    )
    .unwrap();

    let out = secret_cli(
        &backend,
        "group-a",
        &key_file,
        &["set", "db/password"],
        b"s3cret-value",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let p = Provider::start(
        &backend,
        Options {
            key_file: Some(&key_file),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        p.call(Method::GET, "/secrets/v1/db/password", "").await,
        (StatusCode::OK, Bytes::from("s3cret-value"))
    );
    assert_eq!(
        p.call(Method::GET, "/secrets/v1/none", "").await.0,
        StatusCode::NOT_FOUND
    );
    for m in [Method::POST, Method::PUT, Method::DELETE] {
        assert_eq!(
            p.call(m, "/secrets/v1/db/password", "x").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    // Another group cannot see it.
    let other = Provider::start(
        &backend,
        Options {
            group: "group-b",
            key_file: Some(&key_file),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        other
            .call(Method::GET, "/secrets/v1/db/password", "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Nor does K/V data cross groups.
    p.call(Method::POST, "/kv/v1/shared-name", "a").await;
    assert_eq!(
        other.call(Method::GET, "/kv/v1/shared-name", "").await.0,
        StatusCode::NOT_FOUND
    );

    // Encrypted at rest: the plaintext appears nowhere in the store.
    assert!(
        !store_contains(&backend, b"s3cret-value").await,
        "secret stored in plaintext"
    );

    let out = secret_cli(
        &backend,
        "group-a",
        &key_file,
        &["delete", "db/password"],
        b"",
    );
    assert!(out.status.success());
    assert_eq!(
        p.call(Method::GET, "/secrets/v1/db/password", "").await.0,
        StatusCode::NOT_FOUND
    );
    let out = secret_cli(
        &backend,
        "group-a",
        &key_file,
        &["delete", "db/password"],
        b"",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // Without a cluster key, secrets are unavailable rather than wrong.
    let no_key = Provider::start(
        &backend,
        Options {
            group: "group-c",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        no_key.call(Method::GET, "/secrets/v1/x", "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

async fn store_contains(backend: &Backend, needle: &[u8]) -> bool {
    match backend {
        Backend::Sqlite(dir) => walk(dir.path()).iter().any(|f| {
            std::fs::read(f)
                .map(|d| d.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }),
        Backend::Postgres(pg) => {
            let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = client
                .query("SELECT ciphertext FROM svc_secrets", &[])
                .await
                .unwrap();
            rows.iter().any(|r| {
                r.get::<_, Vec<u8>>(0)
                    .windows(needle.len())
                    .any(|w| w == needle)
            })
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

async fn quota_limits(backend: Backend) {
    let quotas = r#"{"kv_keys": 2, "kv_bytes": 40, "blob_bytes": 1000, "blob_count": 1}"#;
    let p = Provider::start(
        &backend,
        Options {
            quotas,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        p.call(Method::POST, "/kv/v1/a", "1234567890").await.0,
        StatusCode::OK
    ); // 11 bytes
    assert_eq!(
        p.call(Method::POST, "/kv/v1/b", "1234567890").await.0,
        StatusCode::OK
    ); // 22 bytes
    let (s, body) = p.call(Method::POST, "/kv/v1/c", "1").await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    assert!(
        String::from_utf8_lossy(&body).contains("quota kv_keys exceeded"),
        "{body:?}"
    );
    assert_eq!(
        p.call(Method::GET, "/kv/v1/c", "").await.0,
        StatusCode::NOT_FOUND,
        "nothing stored"
    );
    // Replacing counts the difference: a->29 bytes total 40 is fine, 30 is not.
    assert_eq!(
        p.call(Method::POST, "/kv/v1/a", vec![b'x'; 28]).await.0,
        StatusCode::OK
    );
    let (s, body) = p.call(Method::POST, "/kv/v1/a", vec![b'x'; 29]).await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    assert!(String::from_utf8_lossy(&body).contains("kv_bytes"));
    assert_eq!(
        p.call(Method::GET, "/kv/v1/a", "").await.1.len(),
        28,
        "old value intact"
    );
    // Deleting frees room.
    p.call(Method::DELETE, "/kv/v1/b", "").await;
    assert_eq!(
        p.call(Method::POST, "/kv/v1/c", "1").await.0,
        StatusCode::OK
    );

    let (s, _) = p.call(Method::POST, "/blob/v1/huge", vec![0u8; 1001]).await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        p.call(Method::GET, "/blob/v1/", "").await.1,
        Bytes::from("[]"),
        "no partial blob"
    );
    assert_eq!(
        p.call(Method::POST, "/blob/v1/one", vec![0u8; 500]).await.0,
        StatusCode::OK
    );
    let (s, body) = p.call(Method::POST, "/blob/v1/two", "x").await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    assert!(String::from_utf8_lossy(&body).contains("blob_count"));
}

async fn sigkill_keeps_acknowledged_writes(backend: Backend) {
    let mut p = Provider::start(&backend, Options::default()).await;
    let p_ref = Arc::new(tokio::sync::Mutex::new(Vec::<u32>::new()));
    let acked = Arc::clone(&p_ref);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let addr = p.addr;
    let writer = tokio::spawn(async move {
        for i in 0u32.. {
            let req = http::Request::post(format!("http://{addr}/kv/v1/k{i}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(http_body_util::Full::new(Bytes::from(format!("v{i}"))))
                .unwrap();
            match client.request(req).await {
                Ok(r) if r.status() == StatusCode::OK => acked.lock().await.push(i),
                _ => return,
            }
        }
    });
    bismuth_testkit::eventually(
        "200 acknowledged writes",
        std::time::Duration::from_secs(60),
        || async { (p_ref.lock().await.len() >= 200).then_some(()) },
    )
    .await;
    // SIGKILL in the middle of the stream of writes.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = writer.await;
    let acked = p_ref.lock().await.clone();

    let p = Provider::start(&backend, Options::default()).await;
    for i in &acked {
        let (s, v) = p.call(Method::GET, &format!("/kv/v1/k{i}"), "").await;
        assert_eq!(
            (s, v),
            (StatusCode::OK, Bytes::from(format!("v{i}"))),
            "acknowledged write k{i} lost"
        );
    }
}

async fn two_processes_lose_nothing(backend: Backend) {
    const PER: u32 = 150;
    let quotas = format!(r#"{{"kv_keys": {}}}"#, 2 * PER + 1);
    let a = Arc::new(
        Provider::start(
            &backend,
            Options {
                quotas: &quotas,
                ..Default::default()
            },
        )
        .await,
    );
    let b = Arc::new(
        Provider::start(
            &backend,
            Options {
                quotas: &quotas,
                ..Default::default()
            },
        )
        .await,
    );
    let mut tasks = Vec::new();
    for (name, p) in [("a", Arc::clone(&a)), ("b", Arc::clone(&b))] {
        tasks.push(tokio::spawn(async move {
            for i in 0..PER {
                let (s, _) = p
                    .call(
                        Method::POST,
                        &format!("/kv/v1/{name}{i}"),
                        format!("{name}{i}"),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK);
            }
        }));
    }
    // Both race to create the same blob: exactly one wins.
    let (ra, rb) = tokio::join!(
        a.call(Method::POST, "/blob/v1/race", "from-a"),
        b.call(Method::POST, "/blob/v1/race", "from-b")
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    for t in tasks {
        t.await.unwrap();
    }
    for name in ["a", "b"] {
        for i in 0..PER {
            let (s, v) = b.call(Method::GET, &format!("/kv/v1/{name}{i}"), "").await;
            assert_eq!((s, v), (StatusCode::OK, Bytes::from(format!("{name}{i}"))));
        }
    }
    // Usage was counted exactly across both processes: one more key fits, then the quota bites.
    assert_eq!(
        a.call(Method::POST, "/kv/v1/last", "x").await.0,
        StatusCode::OK
    );
    assert_eq!(
        b.call(Method::POST, "/kv/v1/over", "x").await.0,
        StatusCode::INSUFFICIENT_STORAGE
    );
}

async fn large_blob_streams(backend: Backend) {
    // 1 GiB on the file store; 256 MiB through PostgreSQL keeps the test short.
    let size: u64 = match backend {
        Backend::Sqlite(_) => 1 << 30,
        Backend::Postgres(_) => 256 << 20,
    };
    let p = Provider::start(&backend, Options::default()).await;
    let (mut tx, rx) = futures_channel::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >(4);
    tokio::spawn(async move {
        use futures_util::SinkExt;
        let chunk = Bytes::from(vec![42u8; 256 * 1024]);
        for _ in 0..size / chunk.len() as u64 {
            tx.send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .unwrap();
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let req = http::Request::post(format!("http://{}/blob/v1/big", p.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), StatusCode::OK);

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::get(format!("http://{}/blob/v1/big", p.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-length"], size.to_string());
    let mut body = resp.into_body();
    let mut received = 0u64;
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data.iter().all(|b| *b == 42));
        received += data.len() as u64;
    }
    assert_eq!(received, size);
    let peak = p.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "svcprovider peaked at {peak} KiB while streaming {} MiB",
        size >> 20
    );
}
