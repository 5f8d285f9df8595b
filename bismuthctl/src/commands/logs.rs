//! `bismuthctl logs ID [-f] [--tail N]`: the function's containers'
//! output through the api; `-f` follows it (the api's Server-Sent Events)
//! until interrupted.

use std::io::Write;

use bismuth_daemon::lines::Lines;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use uuid::Uuid;

use crate::client::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
    /// Keep printing new lines as they are written
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only each container's last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

pub async fn run(api: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut path = format!("/function/{}/logs?follow={}", args.function, args.follow);
    if let Some(n) = args.tail {
        path.push_str(&format!("&tail={n}"));
    }
    // Following has no end; a plain read ends with the logs.
    let timeout = std::time::Duration::from_secs(if args.follow { 30 } else { 300 });
    let resp = api.call(Method::GET, &path, Bytes::new(), timeout).await?;
    let mut body = resp.into_body();
    let mut events = Lines::new(bismuth_daemon::lines::MAX_LINE + 64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow::anyhow!("the log stream broke off: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if !args.follow {
            out.write_all(data)?;
            out.flush()?;
            continue;
        }
        let mut result = Ok(());
        events.push(data, |line| {
            if let Some(text) = sse_data(line) {
                if result.is_ok() {
                    result = writeln!(out, "{text}");
                }
            }
        });
        result?;
        out.flush()?;
    }
    Ok(())
}

/// The text of an SSE `data:` line; `None` for comments, other fields and
/// the blank line ending an event.
fn sse_data(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("data:")?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_sse_data_lines() {
        assert_eq!(super::sse_data("data: hello"), Some("hello"));
        assert_eq!(super::sse_data("data:x"), Some("x"));
        assert_eq!(super::sse_data(": keep-alive"), None);
        assert_eq!(super::sse_data(""), None);
    }
}
