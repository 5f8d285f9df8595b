//! `bismuthctl image import FILE.tar`: load an OCI or Docker image archive
//! into this host's containerd (namespace `bismuth`), unpacked and ready for
//! bismuthd. Talks to containerd only, not ZooKeeper.

use std::io::Write;
use std::path::PathBuf;

use bismuth_containerd::Containerd;

use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Import an OCI (`skopeo copy … oci-archive:`) or Docker (`docker save`) archive
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive
    pub file: PathBuf,
    /// Name for the image when the archive carries none (or to override it)
    #[arg(long)]
    pub name: Option<String>,
    /// containerd's gRPC socket
    #[arg(
        long,
        env = "BISMUTH_CONTAINERD",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd: PathBuf,
    /// containerd namespace bismuthd uses
    #[arg(long, default_value = "bismuth")]
    pub namespace: String,
}

pub async fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    match &args.command {
        ImageCommand::Import(a) => {
            if !a.file.is_file() {
                return Err(UsageError(format!("{} is not a file", a.file.display())).into());
            }
            let ctd = Containerd::connect(&a.containerd, &a.namespace).await?;
            let started = std::time::Instant::now();
            let images = ctd.import_archive(&a.file, a.name.as_deref()).await?;
            for image in images {
                writeln!(out, "imported {} ({})", image.name, image.digest)?;
            }
            writeln!(out, "in {:.1} s", started.elapsed().as_secs_f64())?;
            Ok(())
        }
    }
}
