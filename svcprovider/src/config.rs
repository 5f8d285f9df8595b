//! svcprovider's command line: `serve` (what bismuthd starts per container),
//! `secret set|delete` (the control plane's write path), and `keygen`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::crypto::SecretKey;
use crate::store::Quotas;

/// K/V, blobs and secrets for one service group, over HTTP.
#[derive(Debug, clap::Parser)]
#[command(name = "svcprovider", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the API for one service group
    Serve(ServeArgs),
    /// Write or delete a secret (operators and the api; functions cannot)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print a new random cluster key (64 hex digits)
    Keygen,
}

/// Where the group's data lives, shared by `serve` and `secret`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Service group whose data is served
    #[arg(long)]
    pub group: String,
    /// `sqlite:DIR` (single host) or a `postgres://` URL (cluster)
    #[arg(
        long,
        env = "BISMUTH_SVC_STORE",
        default_value = "sqlite:/var/lib/bismuth/svc"
    )]
    pub store: String,
    /// File with the cluster key for secrets (32 bytes or 64 hex digits)
    #[arg(long, env = "BISMUTH_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// `svcprovider serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (the container's host-side veth address)
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Bearer token callers must present (keep it out of argv: use the environment)
    #[arg(long, env = "BISMUTH_AUTH", hide_env_values = true)]
    pub token: String,
    /// Quotas as JSON, e.g. {"kv_bytes": 1048576, "blob_count": 10}
    #[arg(long, default_value = "{}")]
    pub quotas: String,
    /// Largest K/V value accepted, in bytes
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
}

/// `svcprovider secret …`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Set KEY to the value read from standard input
    Set {
        #[command(flatten)]
        store: StoreArgs,
        /// The secret's key
        key: String,
    },
    /// Delete KEY
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// The secret's key
        key: String,
    },
}

pub use crate::store::StoreUrl;

impl StoreArgs {
    /// Validates the store flags.
    pub fn parse(&self) -> anyhow::Result<(StoreUrl, Option<SecretKey>)> {
        crate::store::validate_group(&self.group)?;
        let url = StoreUrl::parse(&self.store)?;
        let key = match &self.secret_key_file {
            Some(path) => {
                let material = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --secret-key-file {}: {e}", path.display())
                })?;
                Some(SecretKey::from_bytes(&material)?)
            }
            None => None,
        };
        Ok((url, key))
    }
}

impl ServeArgs {
    /// Validates the quotas and token.
    pub fn quotas(&self) -> anyhow::Result<Quotas> {
        anyhow::ensure!(
            self.token.len() >= 16,
            "the token (BISMUTH_AUTH) must be at least 16 characters"
        );
        serde_json::from_str(&self.quotas).map_err(|e| anyhow::anyhow!("invalid --quotas: {e}"))
    }
}
