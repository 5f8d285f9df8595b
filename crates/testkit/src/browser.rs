//! A real headless Chromium for tests, driven over the W3C WebDriver
//! protocol by Debian's `chromedriver` on a free port: open a page, run a
//! script in it, type into and click elements, take a screenshot. Dropping
//! the [`Browser`] ends the session and kills the driver (and with it the
//! browser); a test that dies takes them along (`die_with_parent`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ::http::Method;
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};

use crate::{die_with_parent, free_port, http};

/// A Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    profile: tempfile::TempDir,
}

/// Where Debian puts the driver.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280×900).
    pub async fn start() -> anyhow::Result<Browser> {
        if !std::path::Path::new(CHROMEDRIVER).exists() {
            bail!("{CHROMEDRIVER} is missing: apt-get install chromium chromium-driver (test.sh does)");
        }
        let port = free_port()?;
        let profile = tempfile::Builder::new()
            .prefix("bismuth-chromium-")
            .tempdir()?;
        let log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let driver = cmd.spawn().context("starting chromedriver")?;
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            profile,
        };
        crate::eventually(
            "chromedriver to answer",
            Duration::from_secs(20),
            || async {
                http::get(&format!("{}/status", browser.base))
                    .await
                    .ok()
                    .filter(|r| r.json()["value"]["ready"] == true)
            },
        )
        .await;
        let data_dir = browser.profile.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", data_dir.display())]
            }
        }}});
        let session = browser.call(Method::POST, "/session", caps).await?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {session}"))?;
        browser.base = format!("{}/session/{id}", browser.base);
        Ok(browser)
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let body = if method == Method::GET {
            String::new()
        } else {
            body.to_string()
        };
        let reply = http::request(
            method.clone(),
            &url,
            &[("content-type", "application/json")],
            body,
        )
        .await?;
        let value = reply.json();
        if !reply.status.is_success() {
            bail!(
                "WebDriver {method} {path}: {} {}",
                reply.status,
                value["value"]["message"]
            );
        }
        Ok(value["value"].clone())
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(Method::POST, "/url", json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// The page's current URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .call(Method::GET, "/url", Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Runs `script` (a function body: `return …;`) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The text of the first element matching `css`, `None` if none does.
    pub async fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            serde_json::to_string(css)?
        );
        Ok(self.eval(&script).await?.as_str().map(str::to_owned))
    }

    async fn element(&self, css: &str) -> anyhow::Result<String> {
        let e = self
            .call(
                Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        e[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no element {css}: {e}"))
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.element(css).await?;
        self.call(
            Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await?;
        Ok(())
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let e = self.element(css).await?;
        self.call(Method::POST, &format!("/element/{e}/click"), json!({}))
            .await?;
        Ok(())
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let b64 = self.call(Method::GET, "/screenshot", Value::Null).await?;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .context("decoding the screenshot")
    }

    /// The driver's log (for a failing test's message).
    pub fn log(&self) -> PathBuf {
        self.profile.path().join("chromedriver.log")
    }
}

/// How many distinct colours a PNG has (at most `cap` counted), and the
/// share of its pixels that are not the most common colour: a blank page
/// has one colour and nothing else.
pub fn png_variety(png_bytes: &[u8], cap: usize) -> anyhow::Result<(usize, f64)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let mut counts = std::collections::HashMap::<&[u8], usize>::new();
    for px in pixels.chunks_exact(channels) {
        let n = counts.len();
        if n < cap || counts.contains_key(px) {
            *counts.entry(px).or_default() += 1;
        }
    }
    let total = pixels.len() / channels;
    let top = counts.values().copied().max().unwrap_or(0);
    Ok((counts.len(), 1.0 - top as f64 / total.max(1) as f64))
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; then the driver goes.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        http::request(Method::DELETE, &url, &[], String::new()),
                    )
                    .await
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
