//! `bismuthctl top`: functions and nodes with their live figures (the
//! api's `/stats`: request rate, errors, p50/p99, cold starts, instances;
//! per node its use and rate), redrawn every `--interval` seconds on a
//! terminal; printed once with `--once`, `--json` or when not on a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use bismuth_model::NodeCapacity;
use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use uuid::Uuid;

use crate::client::Server;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print once and exit
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub interval: u64,
    /// Print the api's /stats JSON once
    #[arg(long)]
    pub json: bool,
}

/// What `top` reads of `/stats`.
#[derive(Debug, Deserialize)]
struct Stats {
    window_s: f64,
    #[serde(default)]
    unreachable: Vec<String>,
    functions: Vec<Function>,
    nodes: Vec<Node>,
}

#[derive(Debug, Deserialize)]
struct Function {
    id: Uuid,
    routes: Vec<String>,
    status: String,
    desired: u32,
    running: u32,
    rate: f64,
    error_ratio: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    in_flight: u64,
    cold_starts: u64,
}

#[derive(Debug, Deserialize)]
struct Node {
    ip: std::net::Ipv4Addr,
    state: String,
    alive: bool,
    capacity: Option<NodeCapacity>,
    used: NodeCapacity,
    containers: usize,
    rate: f64,
}

pub async fn run(api: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.json {
        let stats: serde_json::Value = api.json(Method::GET, "/stats", Bytes::new()).await?;
        return output::json(out, &stats);
    }
    let live = !args.once && std::io::stdout().is_terminal();
    let interval = Duration::from_secs(args.interval.max(1));
    let mut stats = fetch(api).await?;
    // The api samples only while asked: its first answer may have no rates yet.
    for _ in 0..4 {
        if stats.window_s > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stats = fetch(api).await?;
    }
    loop {
        if live {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        render(&stats, out)?;
        out.flush()?;
        if !live {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
        stats = fetch(api).await?;
    }
}

async fn fetch(api: &Server) -> anyhow::Result<Stats> {
    api.json(Method::GET, "/stats", Bytes::new()).await
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}ms"))
}

fn render(s: &Stats, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut functions: Vec<&Function> = s.functions.iter().collect();
    functions.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.id.cmp(&b.id)));
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            let short = f.id.simple().to_string()[..8].to_owned();
            let name = match f.routes.first() {
                Some(r) => format!("{r} ({short})"),
                None => f.id.to_string(),
            };
            vec![
                name,
                f.status.clone(),
                format!("{}/{}", f.running, f.desired),
                format!("{:.2}", f.rate),
                format!("{:.1}%", f.error_ratio * 100.0),
                ms(f.p50_ms),
                ms(f.p99_ms),
                f.in_flight.to_string(),
                f.cold_starts.to_string(),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "FUNCTION",
            "STATUS",
            "INSTANCES",
            "REQ/S",
            "ERRORS",
            "P50",
            "P99",
            "IN-FLIGHT",
            "COLD",
        ],
        &rows,
    )?;
    writeln!(out)?;
    let gib = |b: u64| format!("{:.1}G", b as f64 / (1u64 << 30) as f64);
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.ip.to_string(),
                if n.alive { "alive" } else { "dead" }.into(),
                n.state.clone(),
                format!(
                    "{:.2}/{}",
                    n.used.cpu,
                    n.capacity.map_or("-".into(), |c| format!("{:.0}", c.cpu))
                ),
                format!(
                    "{}/{}",
                    gib(n.used.memory),
                    n.capacity.map_or("-".into(), |c| gib(c.memory))
                ),
                n.containers.to_string(),
                format!("{:.2}", n.rate),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "NODE",
            "LIVENESS",
            "STATE",
            "CPU",
            "MEMORY",
            "CONTAINERS",
            "REQ/S",
        ],
        &rows,
    )?;
    writeln!(
        out,
        "\nrates over the last {:.0}s{}",
        s.window_s,
        if s.unreachable.is_empty() {
            String::new()
        } else {
            format!("; not answering: {}", s.unreachable.join(", "))
        }
    )?;
    Ok(())
}
