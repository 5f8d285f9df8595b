//! `bismuthctl create-function IMAGE MODE [flags]`: create a function from the
//! original CLI syntax (`exec:/bin/ls`, `server:8000:/usr/bin/python3 -m http.server`).

use std::io::Write;

use bismuth_model::{parse_invoke_mode, FunctionDefinition, GitRepo, Route};
use bismuth_zk::{store::functions, Zk};
use uuid::Uuid;

use crate::units::parse_bytes;
use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container image, e.g. docker.io/library/python:3.11
    pub image: String,
    /// 'exec:CMD ARGS…' (one process per request) or 'server:PORT:CMD ARGS…'
    pub mode: String,
    /// CPU as a fraction of one core
    #[arg(long, default_value_t = 0.5)]
    pub cpu: f64,
    /// Memory limit, e.g. 128M or 1G (at least 4M)
    #[arg(long, default_value = "128M")]
    pub memory: String,
    /// Hostname routed to the function (repeatable)
    #[arg(long = "route", value_name = "HOSTNAME")]
    pub routes: Vec<String>,
    /// Most containers serving the function at once
    #[arg(long, default_value_t = 1)]
    pub max_instances: u32,
    /// Instances kept when idle (0 scales to zero; default: --max-instances)
    #[arg(long)]
    pub min_instances: Option<u32>,
    /// Most requests one instance serves at once (default 100)
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Seconds an instance above --min-instances stays idle before it is removed (default 300)
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
    /// Git repository cloned into /repo in the container
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch of --repo to clone
    #[arg(long, default_value = "main", requires = "repo")]
    pub branch: String,
    /// Share K/V, blobs and secrets with this service group
    #[arg(long)]
    pub svc_group_id: Option<Uuid>,
}

impl Args {
    /// Builds and validates the definition.
    pub fn definition(&self) -> anyhow::Result<FunctionDefinition> {
        let invoke_mode = parse_invoke_mode(&self.mode).map_err(|e| UsageError(e.to_string()))?;
        let memory = parse_bytes(&self.memory).map_err(|e| UsageError(format!("--memory: {e}")))?;
        let def = FunctionDefinition {
            image: self.image.clone(),
            repo: self
                .repo
                .as_ref()
                .map(|url| GitRepo(url.clone(), self.branch.clone())),
            svc_group_id: self.svc_group_id,
            cpu: self.cpu,
            memory,
            svc_quotas: None,
            invoke_mode,
            max_instances: self.max_instances,
            min_instances: self.min_instances,
            concurrency: self.concurrency,
            idle_timeout: self.idle_timeout,
            isolation: None,
            routes: self
                .routes
                .iter()
                .map(|h| Route {
                    hostname: h.clone(),
                })
                .collect(),
        };
        def.validate().map_err(|e| UsageError(e.to_string()))?;
        Ok(def)
    }
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let id = functions::create_function(zk, &args.definition()?).await?;
    writeln!(out, "{id}")?;
    Ok(())
}
