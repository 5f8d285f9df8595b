//! `bismuthctl bootstrap`: create `/{env}` and its top-level znodes.

use std::io::Write;

use bismuth_zk::Zk;

pub async fn run(zk: &Zk, out: &mut dyn Write) -> anyhow::Result<()> {
    let created = zk.bootstrap().await?;
    if created.is_empty() {
        writeln!(
            out,
            "environment {:?} was already bootstrapped",
            zk.config().env
        )?;
    } else {
        for path in created {
            writeln!(out, "created {path}")?;
        }
    }
    Ok(())
}
