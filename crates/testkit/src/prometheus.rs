//! A real Prometheus for one test: Debian's `prometheus` on a free loopback
//! port, scraping the given targets every second, its data in a temporary
//! directory, queried over its HTTP API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{die_with_parent, free_port};

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`job` → `host:port` list) every
    /// second, with `rules` (a rules file's text, or empty), and waits until
    /// it is ready.
    pub fn start(targets: &[(&str, Vec<String>)], rules: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bismuth-prom-").tempdir()?;
        let port = free_port()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n",
        );
        for (job, hosts) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                hosts
                    .iter()
                    .map(|h| format!("'{h}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let rules = if rules.is_empty() {
            "groups: []\n"
        } else {
            rules
        };
        std::fs::write(dir.path().join("rules.yml"), rules)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .context("failed to run prometheus (apt-get install prometheus)")?;
        let mut p = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new("curl")
                .args(["-sf", "-o", "/dev/null"])
                .arg(format!("http://127.0.0.1:{port}/-/ready"))
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("prometheus exited with {status}: {}", p.log());
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 30 s: {}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant PromQL query; the JSON `data.result` array.
    pub fn query(&self, promql: &str) -> anyhow::Result<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sf", "--get", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("{}/api/v1/query", self.url()))
            .output()?;
        if !out.status.success() {
            bail!("query {promql:?} failed");
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["data"]["result"].clone())
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
