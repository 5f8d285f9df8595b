//! `bismuthctl describe ID`: one function through the api, as a
//! readable summary (definition, instances, backends) or, with `--json`,
//! the api's own JSON.

use std::io::Write;

use bismuth_model::{FunctionView, InvokeMode};
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
}

pub async fn run(api: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let view: FunctionView = api
        .json(
            Method::GET,
            &format!("/function/{}", args.function),
            Bytes::new(),
        )
        .await?;
    if args.json {
        return output::json(out, &view);
    }
    let d = &view.definition;
    let mode = match &d.invoke_mode {
        InvokeMode::Executable(argv) => format!("Executable {}", shell_words::join(argv)),
        InvokeMode::Server(argv, port) => format!("Server :{port} {}", shell_words::join(argv)),
    };
    let routes: Vec<String> = d.hostnames().collect();
    let mut fields = vec![
        ("id", args.function.to_string()),
        ("image", d.image.clone()),
        ("mode", mode),
        (
            "limits",
            format!("cpu {}, memory {} MiB", d.cpu, d.memory >> 20),
        ),
        (
            "routes",
            if routes.is_empty() {
                "(none; /invoke/{id} only)".into()
            } else {
                routes.join(", ")
            },
        ),
    ];
    if d.isolation() == bismuth_model::Isolation::Sandbox {
        fields.push(("isolation", "sandbox (gVisor)".into()));
    }
    if let Some(repo) = &d.repo {
        fields.push(("repo", format!("{} ({})", repo.url(), repo.branch())));
    }
    let summary = super::deploy::summary(&view);
    fields.push(("status", summary.line));
    if let Some(i) = view.instances {
        fields.push((
            "instances",
            format!(
                "min {}, max {}, desired {}, running {}",
                i.min, i.max, i.desired, i.running
            ),
        ));
    }
    for (name, value) in fields {
        writeln!(out, "{:<10} {value}", format!("{name}:"))?;
    }
    if !view.backends.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = view
            .backends
            .iter()
            .map(|b| {
                vec![
                    b.backend.container_id.to_string(),
                    b.backend.ip.to_string(),
                    super::deploy::state_name(b.status).to_owned(),
                    b.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(out, &["CONTAINER", "NODE", "STATUS", "REASON"], &rows)?;
    }
    Ok(())
}
