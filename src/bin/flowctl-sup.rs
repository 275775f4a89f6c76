//! `flowctl-sup`: talk to a running flowctl supervisor over its control socket.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use flowctl::api::{self, Request};

#[derive(Debug, Parser)]
#[command(
    name = "flowctl-sup",
    version,
    about = "Inspect and control a running flowctl supervisor"
)]
struct Cli {
    /// Control socket (default: /run/flowctl/flowctl.sock for root,
    /// $XDG_RUNTIME_DIR/flowctl/flowctl.sock otherwise).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every pipeline's components.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped, exited or failed component (ID or PIPELINE/ID).
    Start { component: String },
    /// Stop a component and keep it stopped.
    Stop { component: String },
    /// Stop a component and start it again.
    Restart { component: String },
    /// Re-read the configuration and pipelines, apply what changed and print it; exits
    /// non-zero when a pipeline file was rejected (its running version keeps running).
    Reload {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: every pipeline of the pipelines directory (what flowctl.service runs).
    Run {
        /// The daemon's configuration file.
        #[arg(long, default_value = flowctl::config::DEFAULT_PATH, value_name = "FILE")]
        config: PathBuf,
        /// Run only pipelines/NAME.yaml, with its own runtime and state directories.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let (request, json) = match cli.command {
        Command::Status { json } => (Request::Status, json),
        Command::Start { component } => (Request::Start { component }, false),
        Command::Stop { component } => (Request::Stop { component }, false),
        Command::Restart { component } => (Request::Restart { component }, false),
        Command::Reload { json } => (Request::Reload, json),
        Command::Run { config, instance } => {
            flowctl::supervisor::fdlimit::raise();
            let code = flowctl::daemon::run(flowctl::daemon::DaemonArgs { config, instance })
                .unwrap_or_else(|err| {
                    flowctl::stderr_line!("flowctl-sup: error: {err:#}");
                    1
                });
            // The last lines reach a stderr that is read; one that is not does not hold the
            // exit.
            flowctl::stderr::flush(std::time::Duration::from_secs(1));
            std::process::exit(code);
        }
    };
    match api::client::run(cli.socket.as_deref(), &request, json) {
        Ok(output) => print!("{output}"),
        Err(err) => {
            eprintln!("flowctl-sup: error: {err}");
            std::process::exit(1);
        }
    }
}
