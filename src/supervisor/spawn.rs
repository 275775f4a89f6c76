//! Starting a component's process: own process group, parent-death signal, rlimits, user and
//! group, working directory and an explicit environment.
//!
//! The parent-death signal is tied to the *thread* that forks, not the process: spawn from a
//! thread that lives as long as the supervisor (the runner's task on a current-thread runtime,
//! or a runtime worker), never from `spawn_blocking`, whose threads come and go.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Group, Uid, User};

use super::reaper::{self, OnExit};
use crate::plan::Rlimits;

/// The identity a component runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's groups from the group database).
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

/// Looks up `user`/`group` (names or numbers). `None` when neither is set: run as ourselves.
pub fn resolve_identity(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Identity>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let mut identity = Identity {
        uid: Uid::current().as_raw(),
        gid: Gid::current().as_raw(),
        groups: Vec::new(),
        home: None,
    };
    if let Some(name) = user {
        let found = match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(name),
        }
        .map_err(|e| format!("cannot look up user `{name}`: {e}"))?;
        match found {
            Some(u) => {
                identity.uid = u.uid.as_raw();
                identity.gid = u.gid.as_raw();
                identity.home = Some(u.dir.clone());
                let cname = CString::new(u.name.as_str())
                    .map_err(|_| format!("user name `{name}` contains NUL"))?;
                identity.groups = nix::unistd::getgrouplist(&cname, u.gid)
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_default();
            }
            None => match name.parse::<u32>() {
                Ok(uid) => identity.uid = uid,
                Err(_) => return Err(format!("user `{name}` does not exist")),
            },
        }
    }
    if let Some(name) = group {
        let gid = match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(name)
                .map_err(|e| format!("cannot look up group `{name}`: {e}"))?
                .ok_or_else(|| format!("group `{name}` does not exist"))?
                .gid
                .as_raw(),
        };
        identity.gid = gid;
        if !identity.groups.contains(&gid) {
            identity.groups.push(gid);
        }
    }
    if identity.groups.is_empty() {
        identity.groups.push(identity.gid);
    }
    Ok(Some(identity))
}

/// Everything needed to start one process.
pub struct SpawnSpec<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub working_dir: Option<&'a Path>,
    pub identity: Option<&'a Identity>,
    pub rlimits: &'a Rlimits,
    /// Capture stdout/stderr through pipes (components); otherwise they go to /dev/null
    /// (exec checks, whose output nobody reads).
    pub capture_output: bool,
    /// With `capture_output`: give the child these as stdout/stderr instead of pipes (a
    /// journald stream connection), so [`Spawned`] has no output to forward.
    pub direct_output: Option<&'a crate::logsink::DirectOutput>,
    /// The component's cgroup, joined between fork and exec (`systemd::cgroup`).
    pub cgroup: Option<&'a crate::systemd::cgroup::JoinOnExec>,
}

/// A started process.
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Starts the process in its own process group; `on_exit` receives its status from the reap
/// loop.
pub fn spawn(spec: &SpawnSpec<'_>, on_exit: OnExit) -> io::Result<Spawned> {
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args)
        .env_clear()
        .envs(spec.env)
        .stdin(Stdio::null())
        .process_group(0);
    if let (true, Some(out)) = (spec.capture_output, spec.direct_output) {
        cmd.stdout(out.stdout.try_clone()?)
            .stderr(out.stderr.try_clone()?);
    } else if spec.capture_output {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    if let Some(dir) = spec.working_dir {
        cmd.current_dir(dir);
    }
    let limits: Vec<(libc::__rlimit_resource_t, u64)> = [
        (libc::RLIMIT_NOFILE, spec.rlimits.nofile),
        (libc::RLIMIT_CORE, spec.rlimits.core),
        (libc::RLIMIT_NPROC, spec.rlimits.nproc),
    ]
    .into_iter()
    .filter_map(|(r, v)| v.map(|v| (r, v)))
    .collect();
    // The supervisor raised its own soft fd limit; give the child the one it replaced, with
    // the hard limit kept, unless the plan sets `nofile`.
    let restore_nofile = match (spec.rlimits.nofile, super::fdlimit::original_soft()) {
        (None, Some(soft)) => {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct we own.
            (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(
                libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: lim.rlim_max,
                },
            )
        }
        _ => None,
    };
    let identity = spec.identity.cloned();
    let cgroup_procs = spec.cgroup.map(|j| j.as_raw_fd());
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // First, so not even an early fork of the child escapes its cgroup.
            if let Some(fd) = cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(lim) = &restore_nofile {
                if libc::setrlimit(libc::RLIMIT_NOFILE, lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (resource, value) in &limits {
                let lim = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                if libc::setrlimit(*resource, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(id) = &identity {
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                    || libc::setgid(id.gid) != 0
                    || libc::setuid(id.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // After the credential change, which would clear it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = reaper::spawn_registered(&mut cmd, on_exit)?;
    Ok(Spawned {
        pid: child.id() as i32,
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// Sends `signal` to the process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill with a negative pid signals a process group; no memory is involved.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}
