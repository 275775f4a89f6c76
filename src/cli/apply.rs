//! `flowctl apply -f FILE`: installs a pipeline into the running daemon.
//!
//! The file is checked first (the errors `flowctl validate --no-resolve` prints; what depends
//! on the daemon's own environment, like `${VAR}` and secrets, is checked by the daemon),
//! then written atomically into the pipelines directory (a temporary file renamed over the
//! target, so the daemon never reads half a file), then the daemon reloads. When the daemon
//! rejects the file, the previous version is put back (or the new file removed), so the
//! directory keeps matching what runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::api::client::{self, ClientError};
use crate::api::protocol::{ReloadReport, Request};
use crate::config::Config;
use crate::spec;

/// Where the daemon is: its configuration, pipelines directory and control socket.
#[derive(Debug, Clone, Args)]
pub struct DaemonTarget {
    /// The daemon's configuration file, for its pipelines directory and control socket.
    #[arg(long, default_value = crate::config::DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,
    /// The pipelines directory (default: `paths.pipelines_dir` of the configuration).
    #[arg(long, value_name = "DIR")]
    pub pipelines_dir: Option<PathBuf>,
    /// The daemon's control socket (default: `RUNTIME_DIR/flowctl.sock` of the
    /// configuration, /run/flowctl/flowctl.sock out of the box).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl DaemonTarget {
    /// The pipelines directory and the control socket.
    pub fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let config = if self.pipelines_dir.is_some() && self.socket.is_some() {
            Config::default()
        } else {
            Config::load(&self.config)?
        };
        Ok((
            self.pipelines_dir
                .clone()
                .unwrap_or_else(|| config.paths.pipelines_dir.clone()),
            self.socket
                .clone()
                .unwrap_or_else(|| config.control_socket()),
        ))
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The pipeline file to install.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub target: DaemonTarget,
}

pub fn run(args: ApplyArgs) -> anyhow::Result<i32> {
    let pipeline = match spec::load_file(&args.file) {
        Ok(p) => p,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            return Ok(1);
        }
    };
    for n in &pipeline.notices {
        eprintln!("{n}");
    }
    let (dir, socket) = args.target.resolve()?;
    let target = pipeline_files(&dir, &pipeline.name)?
        .into_iter()
        .next()
        .unwrap_or_else(|| dir.join(format!("{}.yaml", pipeline.name)));
    let previous = match std::fs::read(&target) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", target.display())),
    };
    if previous.as_deref() == Some(pipeline.text.as_bytes()) {
        println!("{}: unchanged", target.display());
    } else {
        write_atomically(&target, pipeline.text.as_bytes())?;
        println!("{} written", target.display());
    }
    let report = match reload(&socket)? {
        Reload::NoDaemon => {
            println!(
                "no daemon answers on {}: the pipeline runs when flowctl starts",
                socket.display()
            );
            return Ok(0);
        }
        Reload::Done(report) => report,
        Reload::Refused(message) => {
            restore(&target, previous.as_deref())?;
            anyhow::bail!(
                "the daemon refused to reload: {message}\n{} restored",
                target.display()
            );
        }
    };
    let ours = report
        .rejected
        .iter()
        .find(|r| Path::new(&r.file) == target);
    if let Some(rejected) = ours {
        restore(&target, previous.as_deref())?;
        eprintln!("{}", rejected.error);
        eprintln!(
            "flowctl: the daemon rejected {}; {}",
            target.display(),
            match previous {
                Some(_) => "the previous version is back in place and keeps running",
                None => "it was removed again",
            }
        );
        return Ok(1);
    }
    print_report(&report, &pipeline.name);
    Ok(0)
}

/// Prints what the reload did to `pipeline`, and warns about other files it rejected.
pub fn print_report(report: &ReloadReport, pipeline: &str) {
    let text = report.diff.to_string();
    for line in text.lines() {
        if line.starts_with(&format!("{pipeline}:")) {
            println!("{line}");
        }
    }
    for r in &report.rejected {
        eprintln!(
            "warning: the daemon also rejected {} (not changed by this command):",
            r.file
        );
        eprintln!("{}", r.error);
    }
}

pub enum Reload {
    Done(ReloadReport),
    /// Nobody listens on the socket.
    NoDaemon,
    /// The whole reload was rejected (e.g. its configuration file does not load).
    Refused(String),
}

/// Asks the daemon to reload.
pub fn reload(socket: &Path) -> anyhow::Result<Reload> {
    let response = match client::request(socket, &Request::Reload) {
        Ok(r) => r,
        Err(ClientError::Connect { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Reload::NoDaemon)
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match response.reload {
        Some(report) => Reload::Done(report),
        None => Reload::Refused(
            response
                .error
                .unwrap_or_else(|| "no reason given".to_string()),
        ),
    })
}

/// The pipeline files of `dir` that define `name`, by their `metadata.name` (files that do
/// not parse are skipped).
pub fn pipeline_files(dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let config = Config {
        paths: crate::config::PathsConfig {
            pipelines_dir: dir.to_path_buf(),
            ..Default::default()
        },
        ..Default::default()
    };
    let files = config
        .pipeline_files()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    Ok(files
        .into_iter()
        .filter(|f| spec::load_file(f).is_ok_and(|p| p.name == name))
        .collect())
}

/// Writes `bytes` to a hidden temporary file next to `target` (the daemon skips hidden
/// files), flushes it to disk and renames it over `target`.
fn write_atomically(target: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("pipeline.yaml");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", target.display()))
}

/// Puts `previous` back at `target`, or removes `target` when there was nothing before.
fn restore(target: &Path, previous: Option<&[u8]>) -> anyhow::Result<()> {
    match previous {
        Some(bytes) => write_atomically(target, bytes),
        None => std::fs::remove_file(target)
            .with_context(|| format!("cannot remove {}", target.display())),
    }
}
