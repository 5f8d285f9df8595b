//! Test support: a store (SQLite dir or real PostgreSQL), the svcprovider
//! binary started on a free port, and a small HTTP client.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bismuth_testkit::{free_port, Postgres};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Where a test's data lives.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Backend {
        Backend::Postgres(Postgres::start().unwrap())
    }

    /// The `--store` flag.
    pub fn store(&self) -> String {
        match self {
            Backend::Sqlite(dir) => format!("sqlite:{}", dir.path().display()),
            Backend::Postgres(pg) => pg.url(),
        }
    }
}

/// A running svcprovider process; killed on drop.
pub struct Provider {
    pub child: Child,
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Options<'a> {
    pub group: &'a str,
    pub quotas: &'a str,
    pub key_file: Option<&'a std::path::Path>,
    pub max_value_bytes: usize,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            group: "group-a",
            quotas: "{}",
            key_file: None,
            max_value_bytes: 1 << 20,
        }
    }
}

impl Provider {
    pub async fn start(backend: &Backend, opts: Options<'_>) -> Provider {
        let port = free_port().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_svcprovider"));
        cmd.args(["serve", "--group", opts.group, "--store", &backend.store()])
            .args(["--listen", &addr.to_string(), "--quotas", opts.quotas])
            .args(["--max-value-bytes", &opts.max_value_bytes.to_string()])
            .env("BISMUTH_AUTH", TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        if let Some(key) = opts.key_file {
            cmd.arg("--secret-key-file").arg(key);
        }
        let child = cmd.spawn().unwrap();
        let provider = Provider {
            child,
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = provider
                .try_call(Method::GET, "/healthz", None, Bytes::new())
                .await
            {
                if r.0 == StatusCode::OK {
                    return provider;
                }
            }
            assert!(Instant::now() < deadline, "svcprovider did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Calls with the right token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        self.try_call(method, path, Some(TOKEN), body.into())
            .await
            .unwrap()
    }

    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), hyper_util::client::legacy::Error> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await.unwrap().to_bytes()))
    }

    /// Peak resident memory of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Runs `svcprovider secret …` with `stdin` as the value.
pub fn secret_cli(
    backend: &Backend,
    group: &str,
    key_file: &std::path::Path,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_svcprovider"))
        .args(["secret"])
        .args(args)
        .args(["--group", group, "--store", &backend.store()])
        .arg("--secret-key-file")
        .arg(key_file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}
