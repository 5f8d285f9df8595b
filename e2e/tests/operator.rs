//! The operator's tools against the real system: every api verb of
//! `bismuthctl` (deploy, describe, invoke, logs, calls, update, redeploy,
//! top, delete) with its output, its bad-input messages and exit codes, and the
//! dashboard at `/ui/` in a real headless Chromium behind the api's token.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ::http::Method;
use bismuth_e2e::{binaries, System};
use bismuth_testkit::browser::{png_variety, Browser};
use bismuth_testkit::{eventually, http};
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

const TOKEN: &str = "operator-test-token-0123456789";

/// A function whose every request writes a line to its log.
const DEF_YAML: &str = r#"# an Executable function: stdin in, stdout out, stderr to the logs
image: docker.io/bismuth/busybox:test
cpu: 0.25
memory: 67108864
invoke_mode:
  Executable: ["/bin/sh", "-c", "read -r body; echo \"got $body\"; echo \"served $body\" >&2"]
routes:
  - hostname: ctl.localhost
"#;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs bismuthctl against the system's api and frontend.
async fn ctl(sys: &System, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(binaries().unwrap().join("bismuthctl"));
    cmd.args(args)
        .env("BISMUTH_API", sys.api_url(""))
        .env("BISMUTH_FE", sys.fe_url(""))
        .env_remove("BISMUTH_API_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("BISMUTH_API_TOKEN", t);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("bismuthctl finished")
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; its stdout.
async fn ok(sys: &System, args: &[&str]) -> String {
    let out = ctl(sys, None, args).await;
    assert_eq!(out.code, 0, "bismuthctl {args:?}: {}", out.stderr);
    out.stdout
}

/// Runs a command that must fail with `code` and say `says` on stderr.
async fn fails(sys: &System, args: &[&str], code: i32, says: &str) {
    let out = ctl(sys, None, args).await;
    assert_eq!(out.code, code, "bismuthctl {args:?}: {}", out.stderr);
    assert!(
        out.stderr.contains(says),
        "bismuthctl {args:?} should say {says:?}: {}",
        out.stderr
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn function_count(sys: &System) -> usize {
    let list = sys.api(Method::GET, "/function", "").await.json();
    list.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn bismuthctl_deploys_invokes_and_reads_through_the_api() {
    let sys = System::start().await.unwrap();
    let dir = sys.dir.path();
    let def = write(dir, "def.yaml", DEF_YAML);

    // Bad input: named with file, line and field; nothing is created.
    let bad = write(dir, "bad.yaml", &DEF_YAML.replace("cpu: 0.25", "cpu: lots"));
    fails(
        &sys,
        &["deploy", "-f", &bad],
        2,
        "bad.yaml:3:6: cpu: invalid type",
    )
    .await;
    let bad = write(
        dir,
        "bad.json",
        "{\"image\": \"busybox\",\n \"cpu\": 1,\n \"memroy\": 5}",
    );
    fails(&sys, &["deploy", "-f", &bad], 2, "bad.json:3:").await;
    let bad = write(
        dir,
        "small.yaml",
        &DEF_YAML.replace("memory: 67108864", "memory: 10"),
    );
    fails(
        &sys,
        &["deploy", "-f", &bad],
        2,
        "small.yaml: invalid function definition",
    )
    .await;
    fails(
        &sys,
        &["deploy", "-f", "/nonexistent.yaml"],
        2,
        "cannot read /nonexistent.yaml",
    )
    .await;
    fails(
        &sys,
        &["--api", "http://127.0.0.1:1", "deploy", "-f", &def],
        1,
        "cannot reach the api at http://127.0.0.1:1",
    )
    .await;
    fails(
        &sys,
        &[
            "--api",
            "localhost:8002",
            "describe",
            &Uuid::nil().to_string(),
        ],
        2,
        "not an http:// URL",
    )
    .await;
    assert_eq!(function_count(&sys).await, 0);

    // Deploy: the id on stdout, Running reported on stderr.
    let out = ctl(&sys, None, &["deploy", "-f", &def]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id: Uuid = out.stdout.trim().parse().expect("deploy prints the id");
    assert!(out.stderr.contains("1/1 Running"), "{}", out.stderr);
    let fid = id.to_string();

    // Describe, readable and as JSON.
    let text = ok(&sys, &["describe", &fid]).await;
    for want in [
        "image:",
        "docker.io/bismuth/busybox:test",
        "ctl.localhost",
        "1/1 Running",
        "Running",
    ] {
        assert!(text.contains(want), "describe lacks {want:?}:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&sys, &["describe", &fid, "--json"]).await).unwrap();
    assert_eq!(
        json["definition"]["image"],
        "docker.io/bismuth/busybox:test"
    );
    let unknown = Uuid::new_v4().to_string();
    fails(&sys, &["describe", &unknown], 1, "HTTP 404").await;

    // Invoke by id and by hostname; a file as the body; bad input.
    assert_eq!(
        ok(&sys, &["invoke", &fid, "-d", "hello"]).await,
        "got hello\n"
    );
    let body = write(dir, "body.txt", "from a file\n");
    assert_eq!(
        ok(
            &sys,
            &[
                "invoke",
                "--host",
                "ctl.localhost",
                "-d",
                &format!("@{body}")
            ]
        )
        .await,
        "got from a file\n"
    );
    fails(
        &sys,
        &["invoke", &fid, "-H", "no colon"],
        2,
        "a header is 'Name: value'",
    )
    .await;
    fails(
        &sys,
        &["invoke", &fid, "-d", "@/nonexistent"],
        2,
        "cannot read /nonexistent",
    )
    .await;
    fails(
        &sys,
        &["invoke", "--host", "nobody.localhost"],
        1,
        "the frontend answered HTTP 404",
    )
    .await;
    fails(&sys, &["invoke"], 2, "<FUNCTION>").await;

    // Logs: the stderr lines; the last one; followed while invoking.
    let logs = ok(&sys, &["logs", &fid]).await;
    assert!(
        logs.contains("served hello") && logs.contains("served from a file"),
        "{logs}"
    );
    assert_eq!(
        ok(&sys, &["logs", &fid, "--tail", "1"])
            .await
            .lines()
            .count(),
        1
    );
    let mut follower = tokio::process::Command::new(binaries().unwrap().join("bismuthctl"))
        .args(["logs", &fid, "-f", "--tail", "0"])
        .env("BISMUTH_API", sys.api_url(""))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    let marker = format!("followed-{}", Uuid::new_v4().simple());
    // The follower may connect after the first call: call until it sees one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "logs -f printed no new line"
        );
        ok(&sys, &["invoke", &fid, "-d", &marker]).await;
        match tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await {
            Ok(Ok(Some(l))) if l.contains(&marker) => break l,
            Ok(Ok(None)) => panic!("logs -f ended"),
            _ => {}
        }
    };
    assert_eq!(seen, format!("served {marker}"));
    drop(follower);
    fails(&sys, &["logs", &unknown], 1, "HTTP 404").await;

    // Calls: newest first, as a table and as JSON.
    let table = ok(&sys, &["calls", &fid, "--limit", "2"]).await;
    assert!(
        table.starts_with("START") && table.contains("200"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    let calls: serde_json::Value =
        serde_json::from_str(&ok(&sys, &["calls", &fid, "--json"]).await).unwrap();
    assert!(calls["calls"].as_array().unwrap().len() >= 3, "{calls}");

    fails(
        &sys,
        &["calls", &fid, "--limit", "0"],
        2,
        "limit must be an integer from 1 to 1000",
    )
    .await;
    fails(
        &sys,
        &["calls", "not-an-id"],
        2,
        "invalid value 'not-an-id'",
    )
    .await;
    fails(&sys, &["calls", &unknown], 1, "HTTP 404").await;

    // Update (a new command) and redeploy (same definition, new instance).
    let before = sys.backends(id).await;
    let v2 = write(
        dir,
        "v2.yaml",
        &DEF_YAML.replace("got $body", "v2 got $body"),
    );
    let out = ok(&sys, &["update", &fid, "-f", &v2]).await;
    assert!(out.contains("rolled out: 1/1 Running"), "{out}");
    assert_eq!(ok(&sys, &["invoke", &fid, "-d", "x"]).await, "v2 got x\n");
    let bad = write(
        dir,
        "bad2.yaml",
        &DEF_YAML.replace("image: ", "image: \"\"\nx: "),
    );
    fails(&sys, &["update", &fid, "-f", &bad], 2, "bad2.yaml").await;
    let middle = sys.backends(id).await;
    assert_ne!(before, middle);
    ok(&sys, &["redeploy", &fid]).await;
    assert_ne!(sys.backends(id).await, middle);
    fails(&sys, &["redeploy", &unknown], 1, "HTTP 404").await;

    // top: the function with its figures, once as text and as JSON.
    let top = eventually("top to show requests", Duration::from_secs(30), || async {
        ok(&sys, &["invoke", &fid, "-d", "t"]).await;
        let top = ok(&sys, &["top", "--once"]).await;
        (top.contains("ctl.localhost") && top.contains("Running") && top.contains("127.0.0.1"))
            .then_some(top)
    })
    .await;
    assert!(top.contains("REQ/S") && top.contains("NODE"), "{top}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&sys, &["top", "--json"]).await).unwrap();
    assert_eq!(stats["functions"][0]["id"], fid);

    // Delete: gone from the api and from the frontend's routes.
    assert_eq!(
        ok(&sys, &["delete", &fid]).await,
        format!("deleted {fid}\n")
    );
    fails(&sys, &["describe", &fid], 1, "HTTP 404").await;
    fails(&sys, &["rm", &fid], 1, "HTTP 404").await;
    assert_eq!(function_count(&sys).await, 0);
}

/// `n` invocations through bismuthctl.
async fn invoke(sys: &System, fid: &str, n: usize) {
    for i in 0..n {
        let out = ctl(
            sys,
            Some(TOKEN),
            &["invoke", fid, "-d", &format!("call {i}")],
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
}

/// The number in the element matching `css` (0 if none).
async fn number(browser: &Browser, css: &str) -> u64 {
    browser
        .text(css)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_dashboard_shows_a_deployed_function_in_chromium() {
    let sys = System::start_flags(bismuth_e2e::Flags {
        api: &["--auth-token", TOKEN],
        ..Default::default()
    })
    .await
    .unwrap();

    // The token guards the api, the dashboard and the CLI alike.
    let stats = http::get(&sys.api_url("/stats")).await.unwrap();
    assert_eq!(stats.status, 401);
    let js = http::get(&sys.api_url("/ui/app.js")).await.unwrap();
    assert_eq!(js.status, 401);
    let def = write(sys.dir.path(), "def.yaml", DEF_YAML);
    let out = ctl(&sys, None, &["deploy", "-f", &def]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("set BISMUTH_API_TOKEN"),
        "{}",
        out.stderr
    );
    let out = ctl(&sys, Some("wrong-token-wrong-token"), &["top", "--once"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("refused the token"), "{}", out.stderr);

    // Sign in on the page.
    let browser = Browser::start().await.unwrap();
    browser.goto(&sys.api_url("/ui/")).await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/ui/login"));
    browser.type_into("input[name=token]", TOKEN).await.unwrap();
    browser.click("button").await.unwrap();
    eventually(
        "the dashboard after signing in",
        Duration::from_secs(20),
        || async {
            browser
                .text("h1")
                .await
                .ok()
                .flatten()
                .filter(|t| t == "Functions")
        },
    )
    .await;

    // Deployed through bismuthctl, it appears Running.
    let out = ctl(&sys, Some(TOKEN), &["deploy", "-f", &def]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fid = out.stdout.trim().to_owned();
    let row = format!("tr[data-function=\"{fid}\"]");
    eventually(
        "the function Running on the page",
        Duration::from_secs(30),
        || async {
            browser
                .text(&format!("{row} td.status"))
                .await
                .ok()
                .flatten()
                .filter(|s| s == "Running")
        },
    )
    .await;

    // Its request count rises with invocations.
    let count = format!("{row} td.requests");
    invoke(&sys, &fid, 5).await;
    let first = eventually(
        "requests counted on the page",
        Duration::from_secs(30),
        || async {
            let n = number(&browser, &count).await;
            (n > 0).then_some(n)
        },
    )
    .await;
    invoke(&sys, &fid, 5).await;
    eventually(
        "the request count to rise",
        Duration::from_secs(30),
        || async { (number(&browser, &count).await > first).then_some(()) },
    )
    .await;

    // Its page: definition, charts, and a log line arriving live.
    browser
        .goto(&sys.api_url(&format!("/ui/#/function/{fid}")))
        .await
        .unwrap();
    eventually("the function's page", Duration::from_secs(20), || async {
        browser
            .text("#definition")
            .await
            .ok()
            .flatten()
            .filter(|t| t.contains("busybox"))
    })
    .await;
    let marker = format!("live-{}", Uuid::new_v4().simple());
    eventually(
        "a log line to arrive on the page",
        Duration::from_secs(30),
        || async {
            let out = ctl(&sys, Some(TOKEN), &["invoke", &fid, "-d", &marker]).await;
            assert_eq!(out.code, 0, "{}", out.stderr);
            tokio::time::sleep(Duration::from_millis(300)).await;
            browser
                .text("#logs")
                .await
                .ok()
                .flatten()
                .filter(|t| t.contains(&marker))
        },
    )
    .await;
    eventually("a chart with points", Duration::from_secs(30), || async {
        let n = browser
            .eval("return document.querySelectorAll('#chart-rate polyline').length;")
            .await
            .ok()?;
        (n.as_u64() > Some(0)).then_some(())
    })
    .await;
    eventually(
        "recent calls on the page",
        Duration::from_secs(20),
        || async {
            browser
                .text("#calls")
                .await
                .ok()
                .flatten()
                .filter(|t| t.contains("200"))
        },
    )
    .await;

    // A screenshot that is not blank.
    let png = browser.screenshot().await.unwrap();
    let (colours, not_background) = png_variety(&png, 10_000).unwrap();
    assert!(
        colours > 50 && not_background > 0.05,
        "the screenshot looks blank: {colours} colours, {not_background:.3} not background"
    );
    let shot = binaries().unwrap().join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("dashboard screenshot: {}", shot.display());

    // The nodes page lists the node alive.
    browser.goto(&sys.api_url("/ui/#/nodes")).await.unwrap();
    eventually(
        "the node on the nodes page",
        Duration::from_secs(20),
        || async {
            browser
                .text("tr[data-node=\"127.0.0.1\"]")
                .await
                .ok()
                .flatten()
                .filter(|t| t.contains("alive"))
        },
    )
    .await;
}
