//! End-to-end: the whole system as real processes (see `bismuth_e2e`).
//! Everything goes through the api and the frontend as a client would; only
//! `ctr` is used to look behind the scenes (what containerd really has) and
//! `kill -9` to crash a function.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use ::http::Method;
use bismuth_e2e::System;
use bismuth_testkit::http::{self, Reply, Stream};
use bismuth_testkit::{eventually, images};
use serde_json::{json, Value};
use uuid::Uuid;

const RUNNING: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(30);
const PYTHON: &str = "docker.io/bismuth/python:test";

/// A request through the frontend with a `Host` header.
async fn by_host(sys: &System, host: &str, method: Method, path: &str, body: &str) -> Reply {
    http::request(
        method,
        &sys.fe_url(path),
        &[("host", host)],
        body.to_owned(),
    )
    .await
    .unwrap()
}

/// Waits until the frontend routes `host` to a Running backend that answers 200.
async fn wait_served(sys: &System, host: &str) -> Reply {
    eventually(&format!("{host} to be served"), SETTLE, || async move {
        let r = by_host(sys, host, Method::GET, "/", "").await;
        (r.status == 200).then_some(r)
    })
    .await
}

#[tokio::test]
async fn python_server_from_create_to_delete() {
    let sys = System::start().await.unwrap();
    let host = "hello.e2e.test";
    let fid = sys
        .create(&json!({
            "image": PYTHON,
            "repo": null,
            "svc_group_id": null,
            "cpu": 0.5,
            "memory": 134217728,
            "svc_quotas": null,
            "invoke_mode": {"Server": [["/usr/local/bin/python3", "-m", "http.server", "8000"], 8000]},
            "max_instances": 1,
            "routes": [{"hostname": host}]
        }))
        .await;
    let cid = sys.wait_status(fid, "Running", RUNNING).await;

    // By Host and by /invoke/{function id}, with the container named and the trace continued.
    let r = wait_served(&sys, host).await;
    assert!(r.text().contains("Directory listing"), "{}", r.text());
    assert_eq!(r.header("x-bismuth-container-id"), cid.to_string());
    assert!(
        r.header("traceparent").starts_with("00-"),
        "{:?}",
        r.headers
    );
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = http::request(
        Method::GET,
        &sys.fe_url(&format!("/invoke/{fid}/")),
        &[("traceparent", trace)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-bismuth-container-id"), cid.to_string());
    let tp = r.header("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert_ne!(tp, trace, "a new span id");

    // Logs (http.server logs each request), then follow them while invoking again.
    let logs = sys
        .api(Method::GET, &format!("/function/{fid}/logs"), "")
        .await;
    assert_eq!(logs.status, 200);
    assert!(logs.text().contains("GET / HTTP/1.1"), "{}", logs.text());
    let mut follow = Stream::get(&sys.api_url(&format!("/function/{fid}/logs?follow=true")))
        .await
        .unwrap();
    assert_eq!(follow.status, 200);
    assert!(follow.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let marker = format!("/followed-{}", Uuid::new_v4().simple());
    let r = by_host(&sys, host, Method::GET, &marker, "").await;
    assert_eq!(r.status, 404, "http.server has no such file");
    let line = follow
        .line_containing(&marker, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(line.starts_with("data:"), "{line}");
    drop(follow);

    // Redeploy with an empty PUT: a new container answers, the old one is gone.
    let r = sys.api(Method::PUT, &format!("/function/{fid}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let backends = sys.backends(fid).await;
    assert_eq!(backends.len(), 1, "{backends:?}");
    let (new, status) = backends[0].clone();
    assert_ne!(new, cid);
    assert_eq!(status, "Running");
    eventually("the new container to answer", SETTLE, || async {
        let r = by_host(&sys, host, Method::GET, "/", "").await;
        (r.header("x-bismuth-container-id") == new.to_string()).then_some(())
    })
    .await;
    eventually("the old container to leave containerd", SETTLE, || async {
        sys.in_containerd(cid).is_empty().then_some(())
    })
    .await;

    // kill -9 of the function's process: Failed, then restarted in place.
    let pid = sys.task_pid(new).expect("a task for the new container");
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(sys.wait_status(fid, "Failed", SETTLE).await, new);
    // GET says why (the reason comes from bismuthd's report).
    let reason = eventually("the failure's reason", SETTLE, || async {
        let f = sys.function(fid).await;
        f["backends"][0]["reason"].as_str().map(str::to_owned)
    })
    .await;
    assert!(reason.contains("process"), "{reason}");
    assert_eq!(sys.wait_status(fid, "Running", RUNNING).await, new);
    let logs = sys
        .api(Method::GET, &format!("/function/{fid}/logs"), "")
        .await;
    assert!(logs.text().contains("signal 9"), "{}", logs.text());

    // Delete: the frontend no longer knows the route, containerd has nothing left.
    let r = sys
        .api(Method::DELETE, &format!("/function/{fid}"), "")
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    eventually("the route to be gone", SETTLE, || async {
        let r = by_host(&sys, host, Method::GET, "/", "").await;
        (r.status == 404 && r.json()["error"].is_string()).then_some(())
    })
    .await;
    eventually("nothing left in containerd", SETTLE, || async {
        let ids = sys.ctr(&["containers", "ls", "-q"]);
        let tasks = sys.ctr(&["tasks", "ls", "-q"]);
        (ids.trim().is_empty() && tasks.trim().is_empty() && sys.in_containerd(new).is_empty())
            .then_some(())
    })
    .await;
    assert_eq!(
        sys.api(Method::GET, &format!("/function/{fid}"), "")
            .await
            .status,
        404
    );
}

/// A busybox function definition running `argv` once per request.
fn executable(argv: &[&str]) -> Value {
    json!({
        "image": images::BUSYBOX_REF,
        "cpu": 0.25,
        "memory": 67108864,
        "invoke_mode": {"Executable": argv},
    })
}

#[tokio::test]
async fn executable_function_echoes_its_stdin() {
    let sys = System::start().await.unwrap();
    let cat = sys.create(&executable(&["/bin/cat"])).await;
    let failing = sys
        .create(&executable(&[
            "/bin/sh",
            "-c",
            "echo went wrong >&2; exit 3",
        ]))
        .await;
    let cid = sys.wait_status(cat, "Running", RUNNING).await;
    sys.wait_status(failing, "Running", RUNNING).await;

    let url = sys.fe_url(&format!("/invoke/{cat}/anything?x=1"));
    let r = eventually("the echo function to answer", SETTLE, || async {
        let r = http::request(Method::POST, &url, &[], "hello from e2e")
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.text(), "hello from e2e");
    assert_eq!(r.header("x-bismuth-container-id"), cid.to_string());
    // A body larger than a pipe buffer makes it through both ways.
    let big = "0123456789abcdef".repeat(64 * 1024);
    let r = http::request(Method::POST, &url, &[], big.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());

    // A non-zero exit is a 500; its stderr is in the function's logs.
    let r = http::request(
        Method::POST,
        &sys.fe_url(&format!("/invoke/{failing}")),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    let logs = sys
        .api(Method::GET, &format!("/function/{failing}/logs"), "")
        .await;
    assert!(logs.text().contains("went wrong"), "{}", logs.text());
    // bismuthd's readiness probe leaves no noise in a function's log.
    let logs = sys
        .api(Method::GET, &format!("/function/{cat}/logs"), "")
        .await;
    assert!(!logs.text().contains("request failed"), "{}", logs.text());

    for id in [cat, failing] {
        let r = sys
            .api(Method::DELETE, &format!("/function/{id}"), "")
            .await;
        assert!(r.status.is_success(), "{}", r.text());
    }
    eventually("containerd to be empty", SETTLE, || async {
        sys.ctr(&["containers", "ls", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The function's code: relays `/kv/…` and `/secrets/…` to its svcprovider
/// with its token, and serves `/version` from its repository.
const APP: &str = r#"
import os, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, HTTPServer

SVC = os.environ["BISMUTH_SVC_URL"]
AUTH = {"Authorization": "Bearer " + os.environ["BISMUTH_AUTH"]}

def svc(method, path, body):
    req = urllib.request.Request(SVC + path, data=body, method=method, headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

class Handler(BaseHTTPRequestHandler):
    def reply(self, status, data):
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/version":
            with open("/repo/VERSION", "rb") as f:
                return self.reply(200, f.read())
        self.reply(*svc("GET", self.path, None))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(*svc("POST", self.path, body))

HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"#;

#[tokio::test]
async fn code_from_a_git_repository_uses_its_svcprovider() {
    let sys = System::start().await.unwrap();
    let repo = sys.dir.path().join("app-repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("app.py"), APP).unwrap();
    std::fs::write(repo.join("VERSION"), "app v1\n").unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=e2e", "-c", "user.email=e2e@localhost"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "app"]);

    let host = "app.e2e.test";
    let fid = sys
        .create(&json!({
            "image": PYTHON,
            "repo": [format!("file://{}", repo.display()), "main"],
            "cpu": 0.5,
            "memory": 134217728,
            "invoke_mode": {"Server": [["/usr/local/bin/python3", "/repo/app.py"], 8080]},
            "routes": [{"hostname": host}]
        }))
        .await;
    sys.wait_status(fid, "Running", RUNNING).await;
    let r = eventually("the app to answer", SETTLE, || async {
        let r = by_host(&sys, host, Method::GET, "/version", "").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.text(), "app v1\n");

    // K/V round trip through the function's own svcprovider.
    let r = by_host(&sys, host, Method::GET, "/kv/v1/greeting", "").await;
    assert_eq!(r.status, 404, "absent at first: {}", r.text());
    let r = by_host(&sys, host, Method::POST, "/kv/v1/greeting", "hello, store").await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    let r = by_host(&sys, host, Method::GET, "/kv/v1/greeting", "").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "hello, store")
    );

    // A secret set through the api is readable by the function, and by no GET of the api.
    let r = sys
        .api(
            Method::PUT,
            &format!("/function/{fid}/secrets/db-password"),
            "hunter2-e2e",
        )
        .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    let r = by_host(&sys, host, Method::GET, "/secrets/v1/db-password", "").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hunter2-e2e"));
    for path in [format!("/function/{fid}"), "/function".into()] {
        let r = sys.api(Method::GET, &path, "").await;
        assert!(!r.text().contains("hunter2-e2e"), "{path} leaks the secret");
    }
    let r = sys
        .api(
            Method::DELETE,
            &format!("/function/{fid}/secrets/db-password"),
            "",
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let r = by_host(&sys, host, Method::GET, "/secrets/v1/db-password", "").await;
    assert_eq!(r.status, 404);

    // Deleting the function stops its svcprovider too.
    let r = sys
        .api(Method::DELETE, &format!("/function/{fid}"), "")
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let pattern = format!("svcprovider serve .*{}", sys.dir.path().display());
    eventually("the svcprovider to stop", SETTLE, || async {
        let found = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        found.stdout.is_empty().then_some(())
    })
    .await;
}
