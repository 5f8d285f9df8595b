//! End-to-end observability: every daemon's `/metrics` (accepted by
//! `promtool check metrics`) moves with invocations, a cold start fills
//! every phase, `/calls` returns the records with the client's trace id
//! (which also reaches the function), and a real Prometheus scraping the
//! stack answers a PromQL query for the function's request rate; with
//! `--otlp-endpoint`, one request is one trace across bismuthfe, bismuthd and
//! the function, as an OTLP receiver gets it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ::http::Method;
use bismuth_e2e::{System, NODE};
use bismuth_testkit::{eventually, http, images, OtlpReceiver, Prometheus, ReceivedSpan};
use serde_json::json;
use uuid::Uuid;

const RUNNING: Duration = Duration::from_secs(60);

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn metrics(url: String) -> String {
    let r = http::get(&url).await.unwrap();
    assert_eq!(r.status, 200, "{url}");
    assert!(r
        .header("content-type")
        .starts_with("text/plain; version=0.0.4"));
    r.text()
}

fn promtool_accepts(text: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused {what}'s metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn echo_traceparent() -> serde_json::Value {
    json!({
        "image": images::BUSYBOX_REF,
        "cpu": 0.25,
        "memory": 67108864,
        "invoke_mode": {"Executable": ["/bin/sh", "-c", "echo \"$TRACEPARENT\""]},
    })
}

#[tokio::test]
async fn metrics_calls_and_trace_ids() {
    let sys = System::start().await.unwrap();
    let fid = sys.create(&echo_traceparent()).await;
    let cid = sys.wait_status(fid, "Running", RUNNING).await;
    let fe_metrics = sys.fe_url("/metrics");
    let bd_metrics = format!("http://{NODE}:{}/metrics", sys.bismuthd_port);
    let api_metrics = sys.api_url("/metrics");
    let f = format!("function=\"{fid}\"");

    // The client's trace id reaches the function (TRACEPARENT) and comes back.
    let trace = Uuid::new_v4().simple().to_string();
    let url = sys.fe_url(&format!("/invoke/{fid}"));
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let r = eventually("the function to answer", RUNNING, || async {
        let r = http::request(Method::POST, &url, &[("traceparent", parent.as_str())], "")
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert!(
        r.text().starts_with(&format!("00-{trace}-")),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains("00f067aa0ba902b7"),
        "the function got the client's span"
    );
    assert!(r.header("traceparent").contains(&trace));
    for _ in 0..3 {
        let r = http::request(Method::POST, &url, &[], "").await.unwrap();
        assert_eq!(r.status, 200);
    }

    // Counters and histograms moved on bismuthfe and bismuthd.
    let fe = metrics(fe_metrics.clone()).await;
    let ok = sample(&fe, "bismuth_fe_requests_total", &[&f, "code=\"200\""]).unwrap();
    assert!(ok >= 4.0, "{fe}");
    let count = sample(&fe, "bismuth_fe_request_duration_seconds_count", &[&f]).unwrap();
    assert!(count >= 4.0, "{fe}");
    assert_eq!(
        sample(&fe, "bismuth_fe_in_flight_requests", &[&f]),
        Some(0.0)
    );
    let bd = metrics(bd_metrics.clone()).await;
    let invoked = sample(&bd, "bismuth_invocations_total", &[&f, "code=\"200\""]).unwrap();
    assert!(invoked >= 4.0, "{bd}");
    // The function's cold start went through every phase.
    for phase in [
        "image",
        "network",
        "svcprovider",
        "create",
        "ready",
        "total",
    ] {
        let n = sample(
            &bd,
            "bismuth_container_start_duration_seconds_count",
            &[&format!("phase=\"{phase}\"")],
        );
        assert!(n >= Some(1.0), "phase {phase}: {bd}");
    }
    assert_eq!(
        sample(&bd, "bismuth_containers", &["state=\"running\""]),
        Some(1.0)
    );
    assert!(
        sample(&bd, "bismuth_function_cpu_seconds_total", &[&f]).is_some(),
        "{bd}"
    );
    assert!(sample(&bd, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    let api = metrics(api_metrics.clone()).await;
    assert_eq!(
        sample(
            &api,
            "bismuth_function_instances",
            &[&f, "kind=\"running\""]
        ),
        Some(1.0),
        "{api}"
    );
    assert!(sample(&api, "bismuth_api_requests_total", &["route=\"/function\""]).is_some());
    for (text, what) in [(&fe, "bismuthfe"), (&bd, "bismuthd"), (&api, "api")] {
        promtool_accepts(text, what);
    }

    // Call records: newest first, with the fields of DESIGN.md.
    let r = sys
        .api(Method::GET, &format!("/function/{fid}/calls?limit=2"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = r.json()["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert!(calls[0]["start"].as_str() >= calls[1]["start"].as_str());
    for c in &calls {
        assert_eq!(c["container_id"], cid.to_string());
        assert_eq!(c["node"], NODE.to_string());
        assert_eq!(c["status"], 200);
        assert_eq!(c["cold"], false);
        assert!(c["duration_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(c["id"].as_str().unwrap().len(), 32);
    }
    let all = sys
        .api(Method::GET, &format!("/function/{fid}/calls"), "")
        .await
        .json();
    let all = all["calls"].as_array().unwrap();
    let traced = all.iter().find(|c| c["id"] == trace.as_str()).unwrap();
    assert_eq!(
        traced["cold"], true,
        "the first request of a container is cold"
    );
    // Bad input.
    for (q, status) in [("limit=0", 400), ("limit=abc", 400), ("limit=1001", 400)] {
        let r = sys
            .api(Method::GET, &format!("/function/{fid}/calls?{q}"), "")
            .await;
        assert_eq!(r.status, status, "{q}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("limit"));
    }
    let r = sys
        .api(
            Method::GET,
            &format!("/function/{}/calls", Uuid::new_v4()),
            "",
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn prometheus_scrapes_the_stack() {
    let sys = System::start().await.unwrap();
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yml"),
    )
    .unwrap();
    let prom = Prometheus::start(
        &[
            ("bismuthfe", vec![format!("127.0.0.1:{}", sys.fe_port)]),
            ("bismuthd", vec![format!("{NODE}:{}", sys.bismuthd_port)]),
            ("api", vec![format!("127.0.0.1:{}", sys.api_port)]),
        ],
        &rules,
    )
    .unwrap();
    let fid = sys.create(&echo_traceparent()).await;
    sys.wait_status(fid, "Running", RUNNING).await;
    let url = sys.fe_url(&format!("/invoke/{fid}"));
    let rate = format!("sum(rate(bismuth_fe_requests_total{{function=\"{fid}\"}}[10s]))");
    eventually(
        "Prometheus to see the function's request rate",
        RUNNING,
        || async {
            // Keep traffic flowing while Prometheus scrapes every second.
            for _ in 0..5 {
                let _ = http::request(Method::POST, &url, &[], "").await;
            }
            let result = prom.query(&rate).ok()?;
            let value: f64 = result.get(0)?["value"][1].as_str()?.parse().ok()?;
            (value > 0.0).then_some(())
        },
    )
    .await;
    let up = prom.query("up").unwrap();
    let up = up.as_array().unwrap();
    assert_eq!(up.len(), 3, "{up:?}");
    assert!(
        up.iter().all(|s| s["value"][1] == "1"),
        "{up:?}\n{}",
        prom.log()
    );
    // The recording rule over the same series is there too.
    eventually("the recording rule", RUNNING, || async {
        let r = prom.query("function:bismuth_fe_requests:rate1m").ok()?;
        (!r.as_array()?.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_request_is_one_trace_across_the_daemons() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let sys = System::start_exporting_to(&otlp.endpoint()).await.unwrap();
    let fid = sys.create(&echo_traceparent()).await;
    let cid = sys.wait_status(fid, "Running", RUNNING).await;
    let url = sys.fe_url(&format!("/invoke/{fid}"));
    eventually("bismuthfe to route to the function", RUNNING, || async {
        let r = http::request(Method::POST, &url, &[], "").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    let trace = Uuid::new_v4().simple().to_string();
    let client_span = "00f067aa0ba902b7";
    let parent = format!("00-{trace}-{client_span}-01");
    let r = http::request(Method::POST, &url, &[("traceparent", parent.as_str())], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // What the function saw: 00-<trace>-<its parent span>-01.
    let seen = r.text().trim().to_owned();
    let function_parent = seen.split('-').nth(2).unwrap_or_default().to_owned();

    let by = |spans: &[ReceivedSpan], service: &str| {
        spans.iter().find(|s| s.service == service).cloned()
    };
    let (fe, bd) = eventually("both hops' spans to arrive", RUNNING, || async {
        let spans = otlp.trace(&trace);
        Some((by(&spans, "bismuthfe")?, by(&spans, "bismuthd")?))
    })
    .await;
    // bismuthfe's span continues the client's; bismuthd's continues
    // bismuthfe's; the function's parent is bismuthd's span.
    assert_eq!(fe.name, "bismuthfe invoke");
    assert_eq!(fe.parent_span_id, client_span);
    assert_eq!(bd.name, "bismuthd invoke");
    assert_eq!(bd.parent_span_id, fe.span_id, "{bd:?}\n{fe:?}");
    assert_eq!(function_parent, bd.span_id, "the function saw {seen}");
    assert!(seen.starts_with(&format!("00-{trace}-")), "{seen}");
    for span in [&fe, &bd] {
        assert_eq!(span.attributes["bismuth.function_id"], fid.to_string());
        assert_eq!(span.attributes["bismuth.container_id"], cid.to_string());
        assert_eq!(span.attributes["http.response.status_code"], "200");
        assert!(!span.error);
    }
    assert_eq!(bd.attributes["bismuth.cold"], "false");
    // The response carries bismuthfe's span to the client.
    assert!(
        r.header("traceparent").contains(&fe.span_id),
        "{}",
        r.header("traceparent")
    );

    // The container's start is a span of its own, with its phases.
    let spans = otlp.spans();
    let start = spans
        .iter()
        .find(|s| {
            s.name == "container start"
                && s.attributes.get("bismuth.container_id") == Some(&cid.to_string())
        })
        .unwrap_or_else(|| panic!("no start span in {spans:?}"));
    for phase in ["image", "network", "svcprovider", "create", "ready"] {
        assert!(
            start
                .attributes
                .contains_key(&format!("bismuth.start.{phase}_ms")),
            "{start:?}"
        );
    }
    // The api's requests are spans too, named by route.
    assert!(
        spans.iter().any(|s| s.service == "bismuth-api"
            && s.attributes.get("http.route").map(String::as_str) == Some("/function")),
        "{spans:?}"
    );
}
