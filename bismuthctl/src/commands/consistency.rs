//! `bismuthctl consistency [--fix] [--json]`: report (and repair) dangling references.

use std::io::Write;

use bismuth_zk::consistency::{self, FixOutcome};
use bismuth_zk::Zk;

use crate::{output, Inconsistent};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repair what can be repaired (each repair is a version-checked write)
    #[arg(long)]
    pub fix: bool,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
    /// Report a container Starting (or not yet picked up) for longer than this many seconds
    #[arg(long, default_value_t = 300)]
    pub stuck_after_s: u64,
}

pub async fn run(zk: &Zk, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let findings =
        consistency::check_with(zk, std::time::Duration::from_secs(args.stuck_after_s)).await?;
    if !args.fix {
        if args.json {
            output::json(out, &findings)?;
        } else if findings.is_empty() {
            writeln!(out, "consistent: no problems found")?;
        } else {
            for f in &findings {
                writeln!(out, "{f}")?;
            }
            writeln!(
                out,
                "{} problem(s) found; run with --fix to repair",
                findings.len()
            )?;
        }
        return if findings.is_empty() {
            Ok(())
        } else {
            Err(Inconsistent(findings.len()).into())
        };
    }

    let outcomes = consistency::fix(zk, &findings).await?;
    let mut remaining = 0;
    let mut report = Vec::new();
    for (finding, outcome) in findings.iter().zip(&outcomes) {
        let (fixed, note) = match outcome {
            FixOutcome::Fixed => (true, None),
            FixOutcome::Skipped(why) => {
                remaining += 1;
                (false, Some(why.clone()))
            }
        };
        report.push(serde_json::json!({"finding": finding, "fixed": fixed, "note": note}));
        if !args.json {
            match &note {
                None => writeln!(out, "fixed: {finding}")?,
                Some(why) => writeln!(out, "not fixed: {finding} ({why})")?,
            }
        }
    }
    if args.json {
        output::json(out, &report)?;
    } else if findings.is_empty() {
        writeln!(out, "consistent: nothing to fix")?;
    }
    if remaining > 0 {
        return Err(Inconsistent(remaining).into());
    }
    Ok(())
}
