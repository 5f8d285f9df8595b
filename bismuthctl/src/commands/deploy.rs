//! `bismuthctl deploy -f FILE`, `update ID -f FILE`, `redeploy ID`: a
//! function's definition through the api. `deploy` prints the new id at
//! once, then waits until the instances it wants are Running (a progress
//! line on a terminal; `--no-wait` skips it); `update` and `redeploy` return
//! when the api's rollout has finished (or rolled back).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bismuth_model::{ContainerState, FunctionView};
use bytes::Bytes;
use http::Method;
use uuid::Uuid;

use crate::client::Server;
use crate::deffile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The definition: a JSON or YAML file (`.yaml`/`.yml`), `-` for stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print the id and return without waiting for Running
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for Running
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The function's id
    pub function: Uuid,
    /// The new definition: a JSON or YAML file, `-` for stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Seconds the rollout may take before the api rolls it back
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct RedeployArgs {
    /// The function's id
    pub function: Uuid,
    /// Seconds the rollout may take before the api rolls it back
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

/// `deploy`.
pub async fn deploy(api: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let def = deffile::load(&args.file)?;
    #[derive(serde::Deserialize)]
    struct Created {
        id: Uuid,
    }
    let created: Created = api
        .json(Method::POST, "/function", Bytes::from(def.to_json()))
        .await?;
    writeln!(out, "{}", created.id)?;
    out.flush()?;
    if args.no_wait {
        return Ok(());
    }
    wait_running(api, created.id, Duration::from_secs(args.timeout)).await
}

/// `update`.
pub async fn update(api: &Server, args: &UpdateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let def = deffile::load(&args.file)?;
    rollout(
        api,
        args.function,
        Bytes::from(def.to_json()),
        args.timeout,
        out,
    )
    .await
}

/// `redeploy`.
pub async fn redeploy(
    api: &Server,
    args: &RedeployArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    rollout(api, args.function, Bytes::new(), args.timeout, out).await
}

async fn rollout(
    api: &Server,
    id: Uuid,
    body: Bytes,
    timeout_s: u64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let progress = Progress::new(format!("rolling out {id}"));
    progress.show("waiting for the new instances");
    let path = format!("/function/{id}?timeout_ms={}", timeout_s * 1000);
    // The api answers once the rollout is over; give it the rollout's time.
    let result: anyhow::Result<FunctionView> = api
        .json_within(
            Method::PUT,
            &path,
            body,
            Duration::from_secs(timeout_s + 15),
        )
        .await;
    progress.clear();
    let view = result?;
    writeln!(out, "{id} rolled out: {}", summary(&view).line)?;
    Ok(())
}

/// What a function's backends are doing, in a line.
#[derive(Debug, PartialEq)]
pub(crate) struct Summary {
    pub line: String,
    /// As many Running as wanted (or none wanted).
    pub done: bool,
    /// The reason of a Failed backend, if one is.
    pub failed: Option<String>,
}

pub(crate) fn summary(view: &FunctionView) -> Summary {
    let wanted = view
        .instances
        .map_or(view.definition.max_instances, |i| i.desired);
    let running = view
        .backends
        .iter()
        .filter(|b| b.status == ContainerState::Running)
        .count() as u32;
    let mut line = format!("{running}/{wanted} Running");
    let mut failed = None;
    for b in view
        .backends
        .iter()
        .filter(|b| b.status != ContainerState::Running)
    {
        line.push_str(&format!(", {} on {}", state_name(b.status), b.backend.ip));
        if b.status == ContainerState::Failed {
            let reason = b.reason.clone().unwrap_or_else(|| "no reason given".into());
            line.push_str(&format!(" ({reason})"));
            failed = Some(reason);
        }
    }
    if wanted == 0 {
        line.push_str(" (scaled to zero: the first request starts an instance)");
    }
    Summary {
        line,
        done: running >= wanted,
        failed,
    }
}

/// A backend's state as an operator reads it: `Invalid` (no bismuthd has
/// reported yet) is shown as `Pending`.
pub(crate) fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Invalid => "Pending",
        ContainerState::Starting => "Starting",
        ContainerState::Running => "Running",
        ContainerState::Paused => "Paused",
        ContainerState::Failed => "Failed",
    }
}

/// Polls the function until it is Running, showing progress on stderr.
async fn wait_running(api: &Server, id: Uuid, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let progress = Progress::new(format!("deploying {id}"));
    let mut last = None;
    loop {
        let view: FunctionView = api
            .json(Method::GET, &format!("/function/{id}"), Bytes::new())
            .await?;
        let s = summary(&view);
        if s.done {
            progress.clear();
            eprintln!(
                "{id}: {} after {:.1}s",
                s.line,
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            progress.clear();
            let hint = if s.failed.is_some() {
                format!("; its output: bismuthctl logs {id}")
            } else {
                String::new()
            };
            anyhow::bail!(
                "{id} is not Running after {}s: {}{hint} (the function stays deployed; delete it with bismuthctl delete-function {id})",
                timeout.as_secs(),
                s.line
            );
        }
        if last.as_ref() != Some(&s.line) {
            progress.change(&s.line);
        }
        progress.show(&format!(
            "{} ({:.1}s)",
            s.line,
            started.elapsed().as_secs_f64()
        ));
        last = Some(s.line);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A status line on stderr: redrawn in place on a terminal, printed once
/// per change otherwise.
pub(crate) struct Progress {
    what: String,
    tty: bool,
}

impl Progress {
    pub fn new(what: String) -> Progress {
        Progress {
            what,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Redraws the line (terminal only).
    pub fn show(&self, status: &str) {
        if self.tty {
            eprint!("\r\x1b[K{}: {status}", self.what);
        }
    }

    /// A new state (printed as its own line when not on a terminal).
    pub fn change(&self, status: &str) {
        if !self.tty {
            eprintln!("{}: {status}", self.what);
        }
    }

    pub fn clear(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bismuth_model::{Backend, BackendStatus, FunctionDefinition, Instances};

    fn view(states: &[ContainerState], desired: Option<u32>) -> FunctionView {
        let definition: FunctionDefinition = serde_json::from_str(
            r#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Executable": ["/bin/cat"]}, "max_instances": 2}"#,
        )
        .unwrap();
        FunctionView {
            definition,
            backends: states
                .iter()
                .map(|s| BackendStatus {
                    backend: Backend {
                        ip: std::net::Ipv4Addr::LOCALHOST,
                        container_id: Uuid::nil(),
                    },
                    status: *s,
                    reason: (*s == ContainerState::Failed).then(|| "exit 1".into()),
                })
                .collect(),
            instances: desired.map(|d| Instances {
                min: 0,
                max: 2,
                desired: d,
                running: 0,
            }),
        }
    }

    #[test]
    fn summarises_backends() {
        use ContainerState::*;
        let s = summary(&view(&[Running, Starting], None));
        assert!(!s.done);
        assert_eq!(s.line, "1/2 Running, Starting on 127.0.0.1");
        let s = summary(&view(&[Running, Failed], None));
        assert_eq!(s.failed.as_deref(), Some("exit 1"));
        assert!(
            s.line.ends_with("Failed on 127.0.0.1 (exit 1)"),
            "{}",
            s.line
        );
        assert!(summary(&view(&[Running, Running], None)).done);
        assert_eq!(
            summary(&view(&[Invalid], Some(1))).line,
            "0/1 Running, Pending on 127.0.0.1"
        );
        let s = summary(&view(&[], Some(0)));
        assert!(s.done && s.line.contains("scaled to zero"), "{}", s.line);
    }
}
