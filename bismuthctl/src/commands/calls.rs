//! `bismuthctl calls ID [--limit N]`: the function's last invocations,
//! newest first (the api's `/function/{id}/calls`).

use std::io::Write;

use bismuth_model::Calls;
use bytes::Bytes;
use http::Method;
use uuid::Uuid;

use crate::client::Server;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id
    pub function: Uuid,
    /// Print the api's JSON
    #[arg(long)]
    pub json: bool,
    /// How many (newest first)
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
}

pub async fn run(api: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = format!("/function/{}/calls?limit={}", args.function, args.limit);
    let calls: Calls = api.json(Method::GET, &path, Bytes::new()).await?;
    if args.json {
        return output::json(out, &calls);
    }
    let rows: Vec<Vec<String>> = calls
        .calls
        .iter()
        .map(|c| {
            vec![
                c.start.clone(),
                c.status.to_string(),
                format!("{:.1}ms", c.duration_ms),
                if c.cold { "cold" } else { "" }.into(),
                c.container_id.to_string(),
                c.node.to_string(),
                c.id.clone(),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "START",
            "STATUS",
            "DURATION",
            "COLD",
            "CONTAINER",
            "NODE",
            "TRACE",
        ],
        &rows,
    )?;
    Ok(())
}
