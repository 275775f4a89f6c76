//! `flowctl validate FILE...`: every problem of every file, then the exit code (1 if any file
//! has an error). Errors and notices go to stderr as `FILE:LINE:COL: error: MESSAGE`; each
//! valid file gets `FILE: ok` on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::spec::{self, ResolveOptions};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Check the files only: do not read secrets, expand `${VAR}` from this environment or
    /// look up users. By default everything `flowctl run` would do before starting a process
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
            spec::load_plan(file, &opts).map(|l| l.notices)
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
