//! Reaping every child of the process, grandchildren included.
//!
//! The supervisor marks itself a child subreaper, so processes that its children leave behind
//! are re-parented to it rather than to PID 1, and it reaps all of them with one
//! `waitpid(-1, WNOHANG)` loop on each SIGCHLD.
//!
//! Why not `tokio::process`: tokio reaps its own children by pid and a global `waitpid(-1)`
//! would steal their statuses (and tokio's orphan queue would see ECHILD), so the two cannot be
//! mixed. Here every spawn goes through [`spawn_registered`], which holds the one lock the reap
//! loop also takes: a child can never be reaped before its pid has been registered, and
//! `std::process::Command::spawn`'s own `waitpid` after a failed `exec` never races the loop.
//! Nothing in the supervisor may use `tokio::process` or `Command::output/status`.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signal(sig) => {
                let name = nix::sys::signal::Signal::try_from(*sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "killed by signal {sig} ({name})")
            }
        }
    }
}

/// Called once, from the reap loop, with the status and the moment it was collected.
pub type OnExit = Box<dyn FnOnce(ExitStatus, Instant) + Send>;

/// Waiters by pid. Process-wide because `waitpid(-1)` is: whichever reap loop collects a
/// status hands it to whoever spawned that pid.
fn waiters() -> &'static Mutex<HashMap<i32, OnExit>> {
    static WAITERS: OnceLock<Mutex<HashMap<i32, OnExit>>> = OnceLock::new();
    WAITERS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock() -> MutexGuard<'static, HashMap<i32, OnExit>> {
    // A waiter never panics while the lock is held (callbacks run after it is released).
    waiters().lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments has no memory-safety preconditions.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Spawns `command` and registers `on_exit` for its pid before any reap can see it.
pub fn spawn_registered(command: &mut Command, on_exit: OnExit) -> io::Result<Child> {
    let mut guard = lock();
    let child = command.spawn()?;
    guard.insert(child.id() as i32, on_exit);
    Ok(child)
}

/// Forgets the waiter of a pid (its owner lost interest); the status is still reaped.
pub fn forget(pid: i32) {
    lock().remove(&pid);
}

/// Collects every exited child now, then hands statuses to their waiters.
pub fn reap_all() {
    let mut done = Vec::new();
    {
        let mut guard = lock();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    done.push((guard.remove(&pid.as_raw()), ExitStatus::Code(code)))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    done.push((guard.remove(&pid.as_raw()), ExitStatus::Signal(sig as i32)))
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => break, // ECHILD: nothing left to wait for
            }
        }
    }
    let now = Instant::now();
    for (waiter, status) in done {
        if let Some(waiter) = waiter {
            waiter(status, now);
        }
    }
}

/// Starts the reap loop on the current tokio runtime. Returns once SIGCHLD is being watched,
/// so no exit that happens afterwards can be missed.
pub fn start() -> io::Result<tokio::task::JoinHandle<()>> {
    let mut sigchld = signal(SignalKind::child())?;
    reap_all();
    Ok(tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reap_all();
        }
    }))
}
