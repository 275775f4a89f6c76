//! Per-component cgroups in the subtree systemd delegates to the daemon (`Delegate=yes`).
//!
//! Layout under the delegated cgroup `D` (e.g. `…/system.slice/flowctl.service`):
//!
//! ```text
//! D/supervisor/            the daemon itself: cgroup v2 allows processes only in leaves
//! D/<pipeline>/<component> one leaf per component; its child and every descendant
//! ```
//!
//! A child joins its leaf between fork and exec (it writes `0` to the leaf's `cgroup.procs`),
//! so not even its first fork can escape. Stopping ends with `cgroup.kill`, which reaches
//! double-forked daemons that left the process group. Limits (`memory.max`, `cpu.max`,
//! `pids.max`) are written only where the controller is enabled; where it is not, that is
//! reported (see [`NotEnforced`]) rather than silently ignored. Without a delegated subtree, a
//! supervisor whose own cgroup it may write (root outside systemd, a container) makes the same
//! layout in `OWN/flowctl-<pid>` and removes it when it ends ([`CgroupTree::nested_in_own`]);
//! only where neither is possible does it use process groups alone.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::Resources;

/// Controllers whose limits the supervisor applies.
pub const LIMIT_CONTROLLERS: [Controller; 3] =
    [Controller::Memory, Controller::Cpu, Controller::Pids];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit that was asked for but cannot be applied, e.g. `limits not enforced: no memory
/// controller`. Shown in status and journaled once per controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NotEnforced(pub Controller);

impl fmt::Display for NotEnforced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limits not enforced: no {} controller", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: unexpected content {1:?}")]
    Parse(PathBuf, String),
    #[error("invalid cgroup name {0:?}: use letters, digits, '-', '_', '.' and '@'")]
    BadName(String),
    #[error("{path}: processes still running {waited:?} after cgroup.kill")]
    KillTimeout { path: PathBuf, waited: Duration },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(io_err(path))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    // One write(2) per value: cgroup files parse each write on its own.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(value.as_bytes()).map_err(io_err(path))
}

/// What [`detect`] found about the daemon's own cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// A cgroup v2 subtree the daemon may manage.
    Delegated(PathBuf),
    /// No usable subtree; the reason is for the one line that says so.
    NotDelegated(String),
}

/// Finds the daemon's cgroup and decides whether it is delegated: systemd marks a delegated
/// cgroup with the `trusted.delegate` (and, for unprivileged users, `user.delegate`) xattr;
/// older systemd does not, so a writable cgroup of a running unit (`INVOCATION_ID` set) counts
/// too. A root process on a host without systemd is *not* delegated the root cgroup.
pub fn detect() -> Detection {
    let own = match own_cgroup_dir() {
        Ok(p) => p,
        Err(why) => return Detection::NotDelegated(why),
    };
    if has_delegate_xattr(&own) {
        return Detection::Delegated(own);
    }
    let in_unit = std::env::var_os("INVOCATION_ID").is_some();
    if in_unit && writable(&own) && writable(&own.join("cgroup.procs")) {
        return Detection::Delegated(own);
    }
    Detection::NotDelegated(format!(
        "{} is not delegated to flowctl (run it under systemd with Delegate=yes)",
        own.display()
    ))
}

/// The cgroup v2 directory of this process, from `/proc/self/cgroup` and the mount table.
pub fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cg =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| "no cgroup v2 entry in /proc/self/cgroup".to_string())?;
    let mount = cgroup2_mount().ok_or_else(|| "no cgroup2 file system mounted".to_string())?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// The first cgroup2 mount point in `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mount_point = pre.split(' ').nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn has_delegate_xattr(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| getxattr(dir, name).is_some_and(|v| v == b"1"))
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and the buffer length is passed with it.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Reads a space-separated controller list (`cgroup.controllers`, `cgroup.subtree_control`).
fn controllers(path: &Path) -> Result<BTreeSet<String>, CgroupError> {
    Ok(read(path)?.split_whitespace().map(str::to_string).collect())
}

/// `@` is allowed as in systemd's own instance units: a replay `NAME@FROM-TO` gets a
/// cgroup beside its pipeline's.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with("cgroup.")
        && name != "supervisor"
        // '@' as in systemd's own `user@1000.service`: a replay instance is `NAME@FROM-TO`.
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName(name.to_string()))
    }
}

/// The delegated subtree, once the daemon has moved itself into its leaf.
#[derive(Debug)]
pub struct CgroupTree {
    root: PathBuf,
    /// The cgroup the supervisor came from, when it made `root` there itself (not delegated):
    /// it goes back there and removes `root` at the end ([`CgroupTree::dissolve`]).
    home: Option<PathBuf>,
    /// Limit controllers enabled for the components (delegated to `root`'s children).
    enabled: BTreeSet<Controller>,
}

impl CgroupTree {
    /// Takes over `root`: moves this process into `root/supervisor`, then enables every limit
    /// controller `root` offers for the subtree. (The order matters: a cgroup with processes
    /// cannot hand controllers to its children.)
    pub fn take_over(root: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let root = root.into();
        let leaf = root.join("supervisor");
        match fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&leaf)(e)),
        }
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        let enabled = enable_limit_controllers(&root)?;
        Ok(CgroupTree {
            root,
            home: None,
            enabled,
        })
    }

    /// A subtree the supervisor makes in its own cgroup when that is not delegated but
    /// writable: `OWN/flowctl-<pid>`, taken over as [`CgroupTree::take_over`] does. Empty
    /// subtrees that supervisors which are gone left behind are removed first.
    pub fn nested_in_own() -> Result<Self, String> {
        let own = own_cgroup_dir()?;
        if !(writable(&own) && writable(&own.join("cgroup.procs"))) {
            return Err(format!("{} is not writable", own.display()));
        }
        remove_stale_subtrees(&own);
        let root = own.join(format!("flowctl-{}", std::process::id()));
        fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        match CgroupTree::take_over(&root) {
            Ok(mut tree) => {
                tree.home = Some(own);
                Ok(tree)
            }
            Err(e) => {
                let _ = write(&own.join("cgroup.procs"), &std::process::id().to_string());
                remove_tree(&root);
                Err(format!("cannot take over {}: {e}", root.display()))
            }
        }
    }

    /// Whether the supervisor made this subtree itself (not delegated).
    pub fn is_nested(&self) -> bool {
        self.home.is_some()
    }

    /// At the end of a supervisor that made its subtree itself: moves it back to the cgroup
    /// it came from and removes the subtree once its components' cgroups have emptied (up to
    /// a second). A delegated subtree is left to systemd.
    pub fn dissolve(&self) {
        let Some(home) = &self.home else { return };
        let _ = write(&home.join("cgroup.procs"), &std::process::id().to_string());
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.root.exists() && Instant::now() < deadline {
            remove_tree(&self.root);
            if self.root.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Limit controllers the components get.
    pub fn enabled(&self) -> &BTreeSet<Controller> {
        &self.enabled
    }

    /// Controllers with no enforcement, in order: report each once.
    pub fn not_enforced(&self) -> Vec<NotEnforced> {
        LIMIT_CONTROLLERS
            .iter()
            .filter(|c| !self.enabled.contains(c))
            .map(|&c| NotEnforced(c))
            .collect()
    }

    /// Creates (or reuses) `root/<pipeline>/<component>`.
    pub fn component(
        &self,
        pipeline: &str,
        component: &str,
    ) -> Result<ComponentCgroup, CgroupError> {
        check_name(pipeline)?;
        check_name(component)?;
        let pdir = self.root.join(pipeline);
        if !pdir.is_dir() {
            fs::create_dir(&pdir).or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(io_err(&pdir)(e))
                }
            })?;
        }
        let want: BTreeSet<Controller> = enable_limit_controllers(&pdir)?;
        let dir = pdir.join(component);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        Ok(ComponentCgroup { dir, enabled: want })
    }

    /// Removes a pipeline's node after its components were removed.
    pub fn remove_pipeline(&self, pipeline: &str) -> Result<(), CgroupError> {
        check_name(pipeline)?;
        let pdir = self.root.join(pipeline);
        match fs::remove_dir(&pdir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&pdir)(e)),
        }
    }
}

/// Removes `dir` and the cgroups below it, deepest first; populated ones stay.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Ends and removes the `flowctl-<pid>` subtrees of `own` whose supervisor is gone (a killed
/// one's): what it contained is still running only because it was killed.
fn remove_stale_subtrees(own: &Path) {
    let Ok(entries) = fs::read_dir(own) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("flowctl-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        if dir.join("cgroup.kill").exists() && write(&dir.join("cgroup.kill"), "1").is_ok() {
            let deadline = Instant::now() + Duration::from_secs(1);
            let populated = || {
                read(&dir.join("cgroup.events"))
                    .ok()
                    .and_then(|t| flat_keyed(&t, "populated"))
                    != Some(0)
            };
            while populated() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        remove_tree(&dir);
    }
}

/// Enables in `dir/cgroup.subtree_control` every limit controller `dir` has.
fn enable_limit_controllers(dir: &Path) -> Result<BTreeSet<Controller>, CgroupError> {
    let available = controllers(&dir.join("cgroup.controllers"))?;
    let active = controllers(&dir.join("cgroup.subtree_control"))?;
    let mut enabled = BTreeSet::new();
    for c in LIMIT_CONTROLLERS {
        if !available.contains(c.name()) {
            continue;
        }
        if !active.contains(c.name()) {
            write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
        enabled.insert(c);
    }
    Ok(enabled)
}

/// One component's leaf cgroup.
#[derive(Debug, Clone)]
pub struct ComponentCgroup {
    dir: PathBuf,
    enabled: BTreeSet<Controller>,
}

/// Memory and CPU of a component, for status and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `memory.current`, when the memory controller is enabled.
    pub memory_bytes: Option<u64>,
    /// `usage_usec` from `cpu.stat` (present with or without the cpu controller).
    pub cpu_usec: Option<u64>,
}

impl ComponentCgroup {
    /// A leaf at a known path (tests, or a tree made elsewhere). Controllers are read from it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let dir = dir.into();
        let have = controllers(&dir.join("cgroup.controllers"))?;
        let enabled = LIMIT_CONTROLLERS
            .into_iter()
            .filter(|c| have.contains(c.name()))
            .collect();
        Ok(ComponentCgroup { dir, enabled })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes the limits whose controller is enabled; returns the ones that could not be
    /// enforced. `None` fields reset the limit to `max`, so a reload can lift a limit.
    pub fn apply_limits(&self, r: &Resources) -> Result<Vec<NotEnforced>, CgroupError> {
        let mut missing = Vec::new();
        let mut set =
            |c: Controller, file: &str, value: Option<String>| -> Result<(), CgroupError> {
                if !self.enabled.contains(&c) {
                    if value.is_some() {
                        missing.push(NotEnforced(c));
                    }
                    return Ok(());
                }
                write(&self.dir.join(file), value.as_deref().unwrap_or("max"))
            };
        set(
            Controller::Memory,
            "memory.max",
            r.memory_max.map(|b| b.to_string()),
        )?;
        set(Controller::Cpu, "cpu.max", r.cpu_max.map(cpu_max_value))?;
        set(
            Controller::Pids,
            "pids.max",
            r.pids_max.map(|n| n.to_string()),
        )?;
        Ok(missing)
    }

    /// Opens this leaf's `cgroup.procs` for [`JoinOnExec`]: do it before the fork.
    pub fn join_on_exec(&self) -> Result<JoinOnExec, CgroupError> {
        let path = self.dir.join("cgroup.procs");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(JoinOnExec { procs: f.into() })
    }

    /// Moves a running process into this leaf (prefer [`ComponentCgroup::join_on_exec`]: a
    /// process moved after the spawn may already have forked).
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Pids in this leaf now.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.dir.join("cgroup.procs");
        let text = read(&path)?;
        text.lines()
            .map(|l| {
                l.trim()
                    .parse()
                    .map_err(|_| CgroupError::Parse(path.clone(), l.to_string()))
            })
            .collect()
    }

    /// True while any process is in the leaf (`populated` in `cgroup.events`).
    pub fn populated(&self) -> Result<bool, CgroupError> {
        let path = self.dir.join("cgroup.events");
        let text = read(&path)?;
        flat_keyed(&text, "populated")
            .map(|v| v != 0)
            .ok_or(CgroupError::Parse(path, text))
    }

    /// SIGKILLs every process in the leaf, including any that left the process group, and
    /// waits up to `wait` for it to empty. (`cgroup.kill` exists since Linux 5.14; before
    /// that each pid is killed until none is left.)
    pub fn kill(&self, wait: Duration) -> Result<(), CgroupError> {
        let kill_file = self.dir.join("cgroup.kill");
        let has_kill_file = kill_file.exists();
        let start = Instant::now();
        loop {
            if has_kill_file {
                write(&kill_file, "1")?;
            } else {
                for pid in self.pids()? {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !self.populated()? {
                return Ok(());
            }
            if start.elapsed() >= wait {
                return Err(CgroupError::KillTimeout {
                    path: self.dir.clone(),
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs everything in the leaf without waiting for it to empty (for an event loop
    /// that must not block; the processes are gone within moments).
    pub fn kill_now(&self) -> Result<(), CgroupError> {
        let kill_file = self.dir.join("cgroup.kill");
        if kill_file.exists() {
            return write(&kill_file, "1");
        }
        for pid in self.pids()? {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer has killed a process here (`oom_kill` in
    /// `memory.events`); `None` without the memory controller. Compare the count before and
    /// after a child's exit to name the OOM kill as its exit reason.
    pub fn oom_kills(&self) -> Result<Option<u64>, CgroupError> {
        if !self.enabled.contains(&Controller::Memory) {
            return Ok(None);
        }
        let path = self.dir.join("memory.events");
        let text = read(&path)?;
        Ok(Some(
            flat_keyed(&text, "oom_kill").ok_or(CgroupError::Parse(path, text))?,
        ))
    }

    /// Current memory and total CPU time.
    pub fn usage(&self) -> Result<Usage, CgroupError> {
        let memory_bytes = if self.enabled.contains(&Controller::Memory) {
            let path = self.dir.join("memory.current");
            let text = read(&path)?;
            Some(
                text.trim()
                    .parse()
                    .map_err(|_| CgroupError::Parse(path, text.clone()))?,
            )
        } else {
            None
        };
        let cpu_usec = match fs::read_to_string(self.dir.join("cpu.stat")) {
            Ok(text) => flat_keyed(&text, "usage_usec"),
            Err(_) => None,
        };
        Ok(Usage {
            memory_bytes,
            cpu_usec,
        })
    }

    /// Removes the (empty) leaf.
    pub fn remove(&self) -> Result<(), CgroupError> {
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.dir)(e)),
        }
    }
}

/// `cpu.max` for a number of CPUs: quota per 100 ms period (0.5 → `50000 100000`).
pub fn cpu_max_value(cpus: f64) -> String {
    const PERIOD: u64 = 100_000;
    // The kernel refuses quotas under 1 ms.
    let quota = ((cpus * PERIOD as f64).round() as u64).max(1_000);
    format!("{quota} {PERIOD}")
}

/// A value from a flat-keyed cgroup file (`key value` lines).
fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// An open `cgroup.procs` of a component leaf; the child joins it between fork and exec.
#[derive(Debug)]
pub struct JoinOnExec {
    procs: OwnedFd,
}

impl JoinOnExec {
    /// Writes `0` (the calling process) to the leaf's `cgroup.procs`. Only `write(2)`, so it is
    /// safe between fork and exec.
    pub fn join_self(&self) -> io::Result<()> {
        // SAFETY: writing one byte from a static buffer to an fd we own.
        let n = unsafe { libc::write(self.procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The open `cgroup.procs`, for a spawn hook that writes `0` to it itself; it stays
    /// valid while this value lives (close-on-exec, so the child never keeps it).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.procs.as_raw_fd()
    }

    /// Makes `cmd`'s child join the leaf before it execs.
    pub fn install(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook only calls write(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || self.join_self());
        }
    }

    /// The same for a tokio command.
    pub fn install_tokio(self, cmd: &mut tokio::process::Command) {
        // SAFETY: the hook only calls write(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || self.join_self());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_quota_per_100ms_period() {
        assert_eq!(cpu_max_value(0.5), "50000 100000");
        assert_eq!(cpu_max_value(2.0), "200000 100000");
        assert_eq!(cpu_max_value(0.001), "1000 100000");
    }

    #[test]
    fn flat_keyed_reads_one_value() {
        let t = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(flat_keyed(t, "oom_kill"), Some(2));
        assert_eq!(flat_keyed(t, "oom"), Some(1));
        assert_eq!(flat_keyed(t, "nope"), None);
    }

    #[test]
    fn names_that_would_escape_or_clash_are_refused() {
        for bad in ["", ".", "..", "a/b", "cgroup.procs", "supervisor", "x y"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        check_name("ttp-pipeline_1.2").unwrap();
        check_name("ttp-pipeline@998-1005").unwrap();
    }

    #[test]
    fn not_enforced_reads_plainly() {
        assert_eq!(
            NotEnforced(Controller::Memory).to_string(),
            "limits not enforced: no memory controller"
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }
}

/// How the daemon contains its components: per-component cgroups when it has a delegated
/// subtree, process groups otherwise. Made once at start; every fallback and every limit
/// that cannot be enforced is journaled once, not per component.
#[derive(Debug)]
pub enum Containment {
    Cgroups(CgroupTree),
    ProcessGroups { reason: String },
}

impl Containment {
    /// Detects delegation and takes the subtree over, or else makes a subtree in the
    /// supervisor's own cgroup where it may (unless `enabled` is false).
    pub fn setup(enabled: bool) -> Containment {
        let found = if enabled {
            detect()
        } else {
            Detection::NotDelegated("cgroups are turned off in the configuration".into())
        };
        let outcome = match found {
            Detection::Delegated(root) => match CgroupTree::take_over(&root) {
                Ok(tree) => Ok(tree),
                Err(e) => Err(format!("cannot take over {}: {e}", root.display())),
            },
            Detection::NotDelegated(why) if enabled => CgroupTree::nested_in_own()
                .map_err(|e| format!("{why}, and no cgroup of its own: {e}")),
            Detection::NotDelegated(why) => Err(why),
        };
        match outcome {
            Ok(tree) => {
                for missing in tree.not_enforced() {
                    tracing::warn!("{missing}: resources.limits of that kind are ignored");
                }
                if tree.is_nested() {
                    tracing::info!(
                        cgroup = %tree.root().display(),
                        "one cgroup per component, in a subtree of the supervisor's own cgroup \
                         (not delegated; removed at exit)"
                    );
                } else {
                    tracing::info!(cgroup = %tree.root().display(), "one cgroup per component");
                }
                Containment::Cgroups(tree)
            }
            Err(reason) => {
                tracing::warn!(
                    "no cgroup for the components ({reason}): they run in process groups; \
                     limits are not enforced, and a process that leaves its group is found in \
                     /proc and stopped with its component"
                );
                Containment::ProcessGroups { reason }
            }
        }
    }

    /// The limit notes for status: one line per limit kind asked for and not enforced.
    pub fn status_notes(&self, r: &Resources) -> Vec<String> {
        let asked = [
            (Controller::Memory, r.memory_max.is_some()),
            (Controller::Cpu, r.cpu_max.is_some()),
            (Controller::Pids, r.pids_max.is_some()),
        ];
        asked
            .into_iter()
            .filter(|&(c, wanted)| {
                wanted
                    && match self {
                        Containment::Cgroups(tree) => !tree.enabled().contains(&c),
                        Containment::ProcessGroups { .. } => true,
                    }
            })
            .map(|(c, _)| NotEnforced(c).to_string())
            .collect()
    }
}
