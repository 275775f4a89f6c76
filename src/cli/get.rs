//! `flowctl get pipelines|services`: kubectl-style listing.
//!
//! `get pipelines` shows what the local daemon runs, with each pipeline's state, when a
//! daemon answers on its control socket (and no `--endpoint` was given); otherwise the
//! pipelines of the registry's run history.

use std::path::PathBuf;

use clap::{Args as ClapArgs, ValueEnum};
use serde_json::json;

use super::list::{block_on, list_services, print_table, Conn, Output};
use super::pipelines::list_pipelines;
use crate::api::protocol::{PipelineStatus, Request, SupervisorStatus};
use crate::supervisor::StateName;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resource {
    /// Pipelines the local daemon runs, with their state; else the run history's pipelines.
    Pipelines,
    /// Registered components (as `flowctl list`).
    Services,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[arg(value_enum)]
    resource: Resource,
    #[command(flatten)]
    conn: Conn,
    /// The daemon's control socket (default: the one of /etc/flowctl/flowctl.toml).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        if let Resource::Pipelines = self.resource {
            if self.conn.endpoint.is_none() {
                if let Some(status) = daemon_status(self.socket) {
                    return print_pipelines(&status, self.conn.output);
                }
            }
        }
        block_on(async move {
            match self.resource {
                Resource::Pipelines => list_pipelines(&self.conn).await,
                Resource::Services => list_services(&self.conn).await,
            }
        })
    }
}

/// The local daemon's status, when one answers.
fn daemon_status(socket: Option<PathBuf>) -> Option<SupervisorStatus> {
    let socket = match socket {
        Some(s) => s,
        None => crate::config::Config::load(std::path::Path::new(crate::config::DEFAULT_PATH))
            .ok()?
            .control_socket(),
    };
    crate::api::client::request(&socket, &Request::Status)
        .ok()?
        .status
}

/// One word for a pipeline: `failed` when a component failed for good, `stopping` while one
/// stops, `starting` while one is on its way up (or waiting to restart), `running` when every
/// component is ready (or finished cleanly), `completed` when every sink finished by itself
/// and the rest was drained (a bounded run), `stopped` when all were stopped, `partial` when
/// an operator stopped some.
pub fn pipeline_state(p: &PipelineStatus) -> &'static str {
    let any = |f: fn(StateName) -> bool| p.components.iter().any(|c| f(c.state));
    let all = |f: fn(StateName) -> bool| p.components.iter().all(|c| f(c.state));
    if any(|s| s == StateName::Failed) {
        "failed"
    } else if p.completed && all(|s| matches!(s, StateName::Exited | StateName::Stopped)) {
        "completed"
    } else if any(|s| s == StateName::Stopping) {
        "stopping"
    } else if any(|s| {
        matches!(
            s,
            StateName::Pending | StateName::Starting | StateName::Backoff
        )
    }) {
        "starting"
    } else if all(|s| matches!(s, StateName::Ready | StateName::Exited)) {
        "running"
    } else if all(|s| matches!(s, StateName::Stopped | StateName::Exited)) {
        "stopped"
    } else {
        "partial"
    }
}

fn print_pipelines(status: &SupervisorStatus, output: Output) -> anyhow::Result<i32> {
    let ready = |p: &PipelineStatus| p.components.iter().filter(|c| c.ready).count();
    let restarts = |p: &PipelineStatus| p.components.iter().map(|c| c.restarts).sum::<u32>();
    match output {
        Output::Json => {
            let items: Vec<_> = status
                .pipelines
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "state": pipeline_state(p),
                        "ready": ready(p),
                        "components": p.components.len(),
                        "restarts": restarts(p),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Output::Table => {
            if status.pipelines.is_empty() {
                println!("the daemon runs no pipelines");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = status
                .pipelines
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        pipeline_state(p).to_string(),
                        format!("{}/{}", ready(p), p.components.len()),
                        restarts(p).to_string(),
                    ]
                })
                .collect();
            print_table(&["PIPELINE", "STATE", "READY", "RESTARTS"], &rows);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::ComponentStatus;

    fn pipeline(states: &[StateName]) -> PipelineStatus {
        PipelineStatus {
            name: "p".into(),
            completed: false,
            stalled: None,
            components: states
                .iter()
                .map(|&state| ComponentStatus {
                    ready: state == StateName::Ready,
                    ..ComponentStatus::new("c", state)
                })
                .collect(),
        }
    }

    #[test]
    fn pipeline_state_names_the_worst_component_state() {
        use StateName::*;
        for (states, want) in [
            (vec![Ready, Ready], "running"),
            (vec![Ready, Exited], "running"),
            (vec![Ready, Starting], "starting"),
            (vec![Ready, Backoff], "starting"),
            (vec![Ready, Stopping, Starting], "stopping"),
            (vec![Ready, Failed, Stopping], "failed"),
            (vec![Stopped, Stopped], "stopped"),
            (vec![Ready, Stopped], "partial"),
        ] {
            assert_eq!(pipeline_state(&pipeline(&states)), want, "{states:?}");
        }
        let done = PipelineStatus {
            completed: true,
            stalled: None,
            ..pipeline(&[Stopped, Stopped, Exited])
        };
        assert_eq!(pipeline_state(&done), "completed");
        let draining = PipelineStatus {
            completed: true,
            stalled: None,
            ..pipeline(&[Stopping, Stopped, Exited])
        };
        assert_eq!(pipeline_state(&draining), "stopping");
    }
}
