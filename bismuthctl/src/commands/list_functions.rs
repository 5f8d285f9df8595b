//! `bismuthctl list-functions [--json]`: every function with its backends
//! and instances (min, desired by the autoscaler, max).

use std::io::Write;

use bismuth_model::{ContainerState, InvokeMode};
use bismuth_zk::{store::functions, Zk};
use serde::Serialize;
use uuid::Uuid;

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (each function as the api's GET shape, plus its id)
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Entry {
    id: Uuid,
    #[serde(flatten)]
    view: bismuth_model::FunctionView,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut ids = functions::list_function_ids(zk).await?;
    ids.sort();
    // Batched multi-reads: a few round trips however many functions (one
    // deleted while we list is left out).
    let entries: Vec<Entry> = functions::describe_many(zk, &ids)
        .await?
        .into_iter()
        .map(|(id, view)| Entry { id, view })
        .collect();
    if args.json {
        return output::json(out, &entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let def = &e.view.definition;
            let mode = match &def.invoke_mode {
                InvokeMode::Executable(_) => "exec".to_owned(),
                InvokeMode::Server(_, port) => format!("server:{port}"),
            };
            let running = e
                .view
                .backends
                .iter()
                .filter(|b| b.status == ContainerState::Running)
                .count();
            let routes: Vec<String> = def.hostnames().collect();
            vec![
                e.id.to_string(),
                def.image.clone(),
                mode,
                if routes.is_empty() {
                    "-".into()
                } else {
                    routes.join(",")
                },
                format!("{running}/{}", e.view.backends.len()),
                e.view
                    .instances
                    .map_or("-".into(), |i| format!("{}/{}/{}", i.min, i.desired, i.max)),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "ID",
            "IMAGE",
            "MODE",
            "ROUTES",
            "RUNNING/BACKENDS",
            "MIN/DESIRED/MAX",
        ],
        &rows,
    )?;
    Ok(())
}
