//! `flowctl validate FILE...`: every problem of every file, then the exit code (1 if any file
//! has an error). Errors and notices go to stderr as `FILE:LINE:COL: error: MESSAGE`; each
//! valid file gets `FILE: ok` on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::spec::{self, Diagnostic, Diagnostics, ResolveOptions};
use crate::supervisor::command;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Check the files only: do not read secrets, expand `${VAR}` from this environment or
    /// look up users or programs. By default everything `flowctl run` would do before starting a process
    /// is checked, as the current user, with the current environment.
    #[arg(long)]
    pub no_resolve: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<i32> {
    let opts = ResolveOptions::default();
    let mut failed = false;
    for file in &args.files {
        let result = if args.no_resolve {
            spec::load_file(file).map(|p| p.notices)
        } else {
            spec::load_plan(file, &opts).and_then(|l| runnable(file, &l).map(|()| l.notices))
        };
        match result {
            Ok(notices) => {
                for n in &notices {
                    eprintln!("{n}");
                }
                println!("{}: ok", file.display());
            }
            Err(diags) => {
                failed = true;
                for d in &diags {
                    eprintln!("{d}");
                }
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Every component's program resolves to an executable file, searched where the supervisor
/// searches (next to flowctl, `/usr/lib/flowctl`, `PATH`), as `flowctl run` would refuse it.
fn runnable(file: &std::path::Path, loaded: &spec::Loaded) -> Result<(), Diagnostics> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let path = std::env::var("PATH").ok();
    let dirs = command::search_dirs(exe_dir.as_deref(), path.as_deref());
    let spec = spec::load_file(file)?;
    let mut diags = Diagnostics::new();
    for c in &loaded.plan.components {
        if let Err(e) = command::resolve(&c.command, c.working_dir.as_deref(), &dirs) {
            let pos = spec
                .components
                .iter()
                .find(|s| s.id == c.id)
                .map(|s| s.command.pos)
                .unwrap_or_default();
            diags.push(Diagnostic::error(
                file,
                pos,
                format!("component `{}`: {e}", c.id),
            ));
        }
    }
    if diags.has_errors() {
        let mut all = loaded.notices.clone();
        all.extend(diags);
        all.sort();
        Err(all)
    } else {
        Ok(())
    }
}
