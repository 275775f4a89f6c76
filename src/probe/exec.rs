//! `exec {command}`: the command exits 0.
//!
//! It runs like a component (own process group, the component's environment and working
//! directory) and is reaped by the supervisor's reap loop; on timeout its whole group is
//! killed so a hung check leaves nothing behind.

use std::time::Duration;

use super::ProbeTarget;
use crate::plan::Rlimits;
use crate::supervisor::{command, reaper, spawn};

pub async fn check(argv: &[String], timeout: Duration, target: &ProbeTarget) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("exec check has an empty command".into());
    };
    let path = command::resolve(program, target.working_dir.as_deref(), &target.search_dirs)
        .map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = spawn::spawn(
        &spawn::SpawnSpec {
            program: &path,
            args,
            env: &target.env,
            working_dir: target.working_dir.as_deref(),
            identity: None,
            rlimits: &Rlimits::default(),
            capture_output: false,
            direct_output: None,
            cgroup: None,
        },
        Box::new(move |exited| {
            let _ = tx.send(exited.status);
        }),
    )
    .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("`{program}` {status}")),
        Ok(Err(_)) => Err(format!("`{program}`: exit status lost")),
        Err(_) => {
            let _ = spawn::signal_group(spawned.pid, libc::SIGKILL);
            reaper::forget(spawned.pid);
            Err(format!(
                "`{program}` timed out after {} and was killed",
                humantime::format_duration(timeout)
            ))
        }
    }
}
