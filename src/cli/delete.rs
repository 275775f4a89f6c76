//! `flowctl delete PIPELINE`: removes a pipeline from the running daemon.
//!
//! The file (or files) defining the pipeline leave the pipelines directory, then the daemon
//! reloads, which drains and stops the pipeline and ends its run.

use anyhow::Context;
use clap::Args;

use super::apply::{self, DaemonTarget, Reload};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The pipeline's `metadata.name`.
    #[arg(value_name = "PIPELINE")]
    pub pipeline: String,
    #[command(flatten)]
    pub target: DaemonTarget,
}

pub fn run(args: DeleteArgs) -> anyhow::Result<i32> {
    let name = &args.pipeline;
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.starts_with('.') || !plain {
        anyhow::bail!("{name:?} is not a pipeline name (letters, digits, `-`, `_` and `.`)");
    }
    let (dir, socket) = args.target.resolve()?;
    let mut files = apply::pipeline_files(&dir, name)?;
    // A file named after the pipeline that no longer parses still is that pipeline's.
    for ext in ["yaml", "yml"] {
        let f = dir.join(format!("{name}.{ext}"));
        if f.is_file() && !files.contains(&f) {
            files.push(f);
        }
    }
    if files.is_empty() {
        anyhow::bail!("no pipeline `{name}` in {}", dir.display());
    }
    for f in &files {
        std::fs::remove_file(f).with_context(|| format!("cannot remove {}", f.display()))?;
        println!("{} removed", f.display());
    }
    match apply::reload(&socket)? {
        Reload::NoDaemon => {
            println!("no daemon answers on {}", socket.display());
        }
        Reload::Refused(message) => {
            anyhow::bail!("the daemon refused to reload: {message}");
        }
        Reload::Done(report) => apply::print_report(&report, name),
    }
    Ok(0)
}
