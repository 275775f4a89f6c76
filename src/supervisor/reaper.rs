//! Reaping every child of the process, grandchildren included.
//!
//! The supervisor marks itself a child subreaper, so processes that its children leave behind
//! are re-parented to it rather than to PID 1, and it reaps all of them with one
//! `wait4(-1, WNOHANG)` loop on each SIGCHLD, which also hands over each process's resource
//! usage (CPU time, peak RSS) as the kernel accounted it.
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
use std::time::{Duration, Instant};

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

/// What a process used over its life (its waited-for descendants included), from `wait4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

impl Usage {
    /// Two lives of a component together: CPU adds up, the peak is the higher one.
    pub fn combined(self, other: Usage) -> Usage {
        Usage {
            cpu: self.cpu + other.cpu,
            max_rss_kib: self.max_rss_kib.max(other.max_rss_kib),
        }
    }

    fn from_rusage(r: &libc::rusage) -> Usage {
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Usage {
            cpu: time(r.ru_utime) + time(r.ru_stime),
            max_rss_kib: r.ru_maxrss.max(0) as u64,
        }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s CPU, peak RSS {:.1} MiB",
            self.cpu.as_secs_f64(),
            self.max_rss_kib as f64 / 1024.0
        )
    }
}

/// A reaped process: how it ended, when that was seen, and what it used.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    pub status: ExitStatus,
    pub at: Instant,
    pub usage: Usage,
}

/// Called once, from the reap loop, with the reaped process.
pub type OnExit = Box<dyn FnOnce(Exited) + Send>;

/// Waiters by pid. Process-wide because `wait4(-1)` is: whichever reap loop collects a
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

/// Whether `pid` was started through [`spawn_registered`] and not reaped yet.
pub fn is_registered(pid: i32) -> bool {
    lock().contains_key(&pid)
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
            let mut raw = 0;
            // SAFETY: an all-zero rusage is a valid value of this plain C struct.
            let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: both out-pointers are valid for writes for the duration of the call.
            let pid = unsafe { libc::wait4(-1, &mut raw, libc::WNOHANG, &mut rusage) };
            if pid == 0 {
                break; // children left, none exited
            }
            if pid < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break; // ECHILD: nothing left to wait for
            }
            let status = if libc::WIFEXITED(raw) {
                ExitStatus::Code(libc::WEXITSTATUS(raw))
            } else if libc::WIFSIGNALED(raw) {
                ExitStatus::Signal(libc::WTERMSIG(raw))
            } else {
                continue;
            };
            done.push((guard.remove(&pid), status, Usage::from_rusage(&rusage)));
        }
    }
    let at = Instant::now();
    for (waiter, status, usage) in done {
        if let Some(waiter) = waiter {
            waiter(Exited { status, at, usage });
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
