//! `"isolation": "sandbox"`: functions under gVisor (`runsc`, ptrace
//! platform) through containerd's runc shim, in the same network
//! namespace, with the same svcprovider and invoke modes as under runc.
//! Seen from inside: `/proc/version` is gVisor's kernel, not the host's.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ::http::Method;
use bismuth_e2e::System;
use bismuth_testkit::{eventually, http, images};
use serde_json::{json, Value};

const RUNNING: Duration = Duration::from_secs(90);

fn def(mode: Value, isolation: Option<&str>) -> Value {
    let mut d = json!({
        "image": images::BUSYBOX_REF,
        "cpu": 0.25,
        "memory": 134217728,
        "invoke_mode": mode,
    });
    if let Some(i) = isolation {
        d["isolation"] = json!(i);
    }
    d
}

/// Prints the kernel's version, asks its own svcprovider's `/healthz` (raw
/// HTTP over `nc`), then, given a URL in the body, that one's.
const PROBE: &str = r#"cat /proc/version
ask() { hp=${1#http://}; printf 'GET /healthz HTTP/1.0\r\n\r\n' | nc -w 2 "${hp%:*}" "${hp##*:}" 2>&1; }
ask "$BISMUTH_SVC_URL" | grep -q '^HTTP/1.[01] 200' && echo own:reached || echo own:not-reached
if read -r other; then ask "$other" | grep -q '^HTTP/1.[01] 200' && echo other:reached || echo other:not-reached; fi"#;

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/version").unwrap()
}

#[tokio::test]
async fn sandboxed_functions_serve_under_gvisors_kernel() {
    let sys = System::start().await.unwrap();

    // A field the api does not know is refused, naming it.
    let r = sys
        .api(
            Method::POST,
            "/function",
            &def(json!({"Executable": ["/bin/cat"]}), Some("vm")).to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("isolation"), "{}", r.text());

    // Executable mode: the runner's socket works through gVisor's gofer.
    let exec = sys
        .create(&def(
            // With a body (another container's svcprovider URL), tries that too.
            json!({"Executable": ["/bin/sh", "-c", PROBE]}),
            Some("sandbox"),
        ))
        .await;
    // Server mode: busybox httpd on the container's own address.
    let server = sys
        .create(&def(
            json!({"Server": [["/bin/sh", "-c", "mkdir -p /tmp/www && cat /proc/version > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"], 8080]}),
            Some("sandbox"),
        ))
        .await;
    // The same under runc, for contrast.
    let plain = sys
        .create(&def(
            json!({"Executable": ["/bin/sh", "-c", "cat /proc/version; echo \"$BISMUTH_SVC_URL\""]}),
            None,
        ))
        .await;
    for id in [exec, server, plain] {
        sys.wait_status(id, "Running", RUNNING).await;
    }

    let call = |id| {
        let url = sys.fe_url(&format!("/invoke/{id}"));
        async move {
            eventually(
                "the function to answer",
                Duration::from_secs(30),
                || async {
                    // GET: busybox httpd answers 501 to anything else.
                    let r = http::get(&url).await.ok()?;
                    (r.status == 200).then_some(r.text())
                },
            )
            .await
        }
    };
    let host = host_kernel();
    let inside = call(exec).await;
    assert!(
        inside.contains("Linux version 4.4.0"),
        "not gVisor's kernel: {inside}"
    );
    assert!(!inside.contains(host.trim()), "{inside}");
    // Its own svcprovider answers from inside the sandbox. On runsc's host
    // network a busybox wget whose answer is not there yet at its first
    // read can fail with EAGAIN (seen under load): asked again, it answers.
    let url = sys.fe_url(&format!("/invoke/{exec}"));
    eventually(
        "the sandbox to reach its svcprovider",
        Duration::from_secs(30),
        || async {
            let r = http::get(&url).await.ok()?;
            r.text().lines().any(|l| l == "own:reached").then_some(())
        },
    )
    .await;
    let served = call(server).await;
    assert!(served.contains("Linux version 4.4.0"), "{served}");
    let outside = call(plain).await;
    let (kernel, plain_svc) = outside.trim().split_once('\n').unwrap();
    assert_eq!(kernel, host.trim());

    // The isolation rules hold for a sandbox too: another container's
    // svcprovider is out of its reach.
    let r = http::request(
        Method::POST,
        &sys.fe_url(&format!("/invoke/{exec}")),
        &[],
        format!("{plain_svc}\n"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let said = r.text();
    assert!(said.trim_end().ends_with("other:not-reached"), "{said}");

    // Its definition keeps the field; deleting it leaves nothing in containerd.
    let f = sys.function(exec).await;
    assert_eq!(f["definition"]["isolation"], "sandbox");
    let cids: Vec<_> = sys
        .backends(server)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    for id in [exec, server, plain] {
        let r = sys
            .api(Method::DELETE, &format!("/function/{id}"), "")
            .await;
        assert_eq!(r.status, 200);
    }
    for cid in cids {
        eventually(
            "the sandbox to be gone from containerd",
            Duration::from_secs(30),
            || async { sys.in_containerd(cid).is_empty().then_some(()) },
        )
        .await;
    }
}
