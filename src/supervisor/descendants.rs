//! Processes a component leaves outside its process group, in process-group mode.
//!
//! A component that forks, `setsid`s and forks again (a classic daemon) is in no group the
//! supervisor signals, and once its first fork exits it is re-parented to the supervisor (the
//! subreaper). [`survey`] finds such processes in `/proc` and says which component each came
//! from: by its ancestry while the component's process still runs, otherwise by the
//! `FLOWCTL_COMPONENT_ID` it inherited. The runner ends them with their component.
//!
//! A killed supervisor cannot do that, so the runner keeps a [`Record`] of every process it
//! supervises (pid and start time) in its runtime directory; the next supervisor ends what is
//! still alive of it ([`end_predecessors`]). A pid is only ever signalled when its start time
//! is still the recorded one, so a reused pid is never touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A process beyond its pid: the pid and its start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`), which together never name two processes during one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

/// What `/proc/PID/stat` says of a live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub id: ProcId,
    pub ppid: i32,
    pub pgid: i32,
}

/// Parses `/proc/PID/stat`; `None` for zombies (they are dead, only not reaped yet).
pub fn parse_stat(pid: i32, text: &str) -> Option<ProcInfo> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    if matches!(fields.first(), Some(&("Z" | "X" | "x"))) {
        return None;
    }
    Some(ProcInfo {
        id: ProcId {
            pid,
            start: fields.get(19)?.parse().ok()?,
        },
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
    })
}

/// The live process `pid`, if any.
pub fn stat(pid: i32) -> Option<ProcInfo> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `id` still runs: its pid is live and has the same start time.
pub fn alive(id: ProcId) -> bool {
    stat(id.pid).is_some_and(|p| p.id.start == id.start)
}

/// Every live process.
pub fn all() -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// The pid most recently handed out (the fifth field of `/proc/loadavg`): while it stays the
/// same, no process was created, so a new survey would find nothing new to attribute.
pub fn last_pid() -> Option<i32> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().nth(4)?.parse().ok()
}

/// `FLOWCTL_COMPONENT_ID` from the environment `pid` was started with, when readable.
pub fn component_id_of(pid: i32) -> Option<String> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        kv.strip_prefix(b"FLOWCTL_COMPONENT_ID=")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Where a surveyed process came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<K> {
    /// Below the running main process of this component, outside its process group.
    Under(K),
    /// Re-parented to the supervisor (or below such a process): whose it is, is decided by
    /// the caller from what it knew before or from the environment.
    Orphan { top: i32 },
}

/// Classifies the supervisor's descendants in `procs`. `mains` are the components' running
/// main processes (their process group is their pid), `ours` every pid the supervisor
/// started itself (mains and checks). Members of a main's process group are left out: the
/// group signal reaches them.
pub fn survey<K: Clone>(
    supervisor: i32,
    procs: &[ProcInfo],
    mains: &HashMap<i32, K>,
    ours: &dyn Fn(i32) -> bool,
) -> Vec<(ProcInfo, Origin<K>)> {
    let by_pid: HashMap<i32, &ProcInfo> = procs.iter().map(|p| (p.id.pid, p)).collect();
    let mut found = Vec::new();
    for p in procs {
        if p.id.pid == supervisor || mains.contains_key(&p.id.pid) {
            continue;
        }
        // Walk up to the supervisor; the last step below it says whose this is.
        let mut at = p;
        let mut steps = 0;
        let origin = loop {
            if let Some(k) = mains.get(&at.ppid) {
                // In the main's group, the group signal reaches it.
                break (p.pgid != at.ppid).then(|| Origin::Under(k.clone()));
            }
            if at.ppid == supervisor {
                break (!ours(at.id.pid)).then_some(Origin::Orphan { top: at.id.pid });
            }
            match by_pid.get(&at.ppid) {
                Some(parent) if steps < 64 => {
                    at = parent;
                    steps += 1;
                }
                _ => break None, // not ours
            }
        };
        if let Some(origin) = origin {
            found.push((*p, origin));
        }
    }
    found
}

/// The file a supervisor keeps of the processes it supervises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// `/proc/sys/kernel/random/boot_id`: pids of another boot mean nothing.
    pub boot: String,
    pub supervisor: Option<ProcId>,
    /// Components' main processes; each leads a process group.
    pub mains: BTreeSet<ProcId>,
    /// Processes that left their component's group.
    pub leftovers: BTreeSet<ProcId>,
}

pub fn record_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("supervised-pids")
}

pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Record {
    pub fn render(&self) -> String {
        let mut out = format!("boot {}\n", self.boot);
        let mut line =
            |kind: &str, id: &ProcId| out.push_str(&format!("{kind} {} {}\n", id.pid, id.start));
        if let Some(s) = &self.supervisor {
            line("supervisor", s);
        }
        self.mains.iter().for_each(|id| line("main", id));
        self.leftovers.iter().for_each(|id| line("leftover", id));
        out
    }

    /// Reads a record; lines that do not parse are skipped (the file is only ever written
    /// whole, by rename, so this is damage, not a format to honour).
    pub fn parse(text: &str) -> Record {
        let mut r = Record::default();
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let kind = f.next();
            if kind == Some("boot") {
                r.boot = f.next().unwrap_or_default().to_string();
                continue;
            }
            let (Some(pid), Some(start)) = (
                f.next().and_then(|v| v.parse().ok()),
                f.next().and_then(|v| v.parse().ok()),
            ) else {
                continue;
            };
            let id = ProcId { pid, start };
            match kind {
                Some("supervisor") => r.supervisor = Some(id),
                Some("main") => {
                    r.mains.insert(id);
                }
                Some("leftover") => {
                    r.leftovers.insert(id);
                }
                _ => {}
            }
        }
        r
    }

    /// Writes the record atomically (temporary file, then rename), owner-only. The temporary
    /// file is created anew, so nothing planted under its name (a symlink) is written through.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(self.render().as_bytes())?;
        drop(f);
        fs::rename(&tmp, path)
    }

    /// Reads the record at `path` if this user wrote it: a file anyone else could have
    /// written must not choose which processes get killed.
    pub fn load(path: &Path) -> Option<Record> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(path).ok()?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
            return None;
        }
        Some(Record::parse(&fs::read_to_string(path).ok()?))
    }
}

/// Ends what a killed supervisor left of the processes recorded at `path`: recorded leftovers
/// whose start time still matches, and the members of its components' process groups. SIGTERM,
/// then SIGKILL after `grace`. Nothing is done while the recorded supervisor still runs (it
/// was not killed), when the record is from another boot, or when it is not this user's own
/// file. Returns what was ended.
pub fn end_predecessors(path: &Path, grace: Duration) -> Vec<ProcId> {
    let Some(record) = Record::load(path) else {
        return Vec::new();
    };
    if record.boot != boot_id() || record.supervisor.is_some_and(alive) {
        return Vec::new();
    }
    let procs = all();
    let mut targets: BTreeSet<ProcId> = record
        .leftovers
        .iter()
        .copied()
        .filter(|id| procs.iter().any(|p| p.id == *id))
        .collect();
    for main in &record.mains {
        // A group outlives its leader, and its id cannot be reused while it has members; a
        // reused pid leading a new group would show a different start time.
        let reused = procs
            .iter()
            .any(|p| p.id.pid == main.pid && p.id.start != main.start);
        if reused {
            continue;
        }
        targets.extend(
            procs
                .iter()
                .filter(|p| p.pgid == main.pid && p.id.start >= main.start)
                .map(|p| p.id),
        );
    }
    let me = std::process::id() as i32;
    targets.retain(|id| id.pid != me && id.pid > 1);
    for id in &targets {
        signal_if_same(*id, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while targets.iter().any(|id| alive(*id)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in &targets {
        signal_if_same(*id, libc::SIGKILL);
    }
    targets.into_iter().collect()
}

/// Signals `id` unless its pid now belongs to another process. (The check and the signal are
/// not atomic, but a pid is reused only after a full wrap of the pid space.)
pub fn signal_if_same(id: ProcId, signal: i32) -> bool {
    if !alive(id) {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(id.pid, signal) == 0 }
}

/// The leftovers a runner tracks: whose each one is, and when it was asked to stop.
#[derive(Debug, Clone, Default)]
pub struct Leftovers<K> {
    pub procs: BTreeMap<ProcId, Leftover<K>>,
}

#[derive(Debug, Clone)]
pub struct Leftover<K> {
    pub owner: K,
    /// Which of the owner's processes it came from (its spawn count then).
    pub generation: u64,
    /// When the stop signal was sent; SIGKILL follows after the owner's stop timeout.
    pub signalled: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgid: i32) -> ProcInfo {
        ProcInfo {
            id: ProcId { pid, start: 100 },
            ppid,
            pgid,
        }
    }

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis_and_zombies_are_dead() {
        let text = "42 (a (weird) name) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let info = parse_stat(42, text).unwrap();
        assert_eq!(info.ppid, 7);
        assert_eq!(info.pgid, 42);
        assert_eq!(info.id.start, 12345);
        assert_eq!(parse_stat(42, &text.replace(") S", ") Z")), None);
    }

    #[test]
    fn survey_finds_orphans_and_descendants_that_left_the_group_not_group_members() {
        let sup = 10;
        let procs = vec![
            p(sup, 1, sup),
            p(20, sup, 20), // main of component "a"
            p(21, 20, 20),  // in a's group: the group signal reaches it
            p(22, 20, 22),  // a's child in a session of its own
            p(23, 22, 22),  // its child
            p(30, sup, 30), // orphan: a daemon whose parent exited
            p(31, 30, 30),  // the orphan's child
            p(40, sup, 40), // an exec check the supervisor started
            p(50, 1, 50),   // not ours
        ];
        let mains = HashMap::from([(20, "a")]);
        let found = survey(sup, &procs, &mains, &|pid| pid == 20 || pid == 40);
        let got: Vec<(i32, Origin<&str>)> = found.into_iter().map(|(p, o)| (p.id.pid, o)).collect();
        assert_eq!(
            got,
            vec![
                (22, Origin::Under("a")),
                (23, Origin::Under("a")),
                (30, Origin::Orphan { top: 30 }),
                (31, Origin::Orphan { top: 30 }),
            ]
        );
    }

    #[test]
    fn a_record_reads_back_what_was_written_and_skips_damage() {
        let r = Record {
            boot: "b00t".into(),
            supervisor: Some(ProcId { pid: 5, start: 9 }),
            mains: [ProcId { pid: 6, start: 10 }].into(),
            leftovers: [ProcId { pid: 7, start: 11 }].into(),
        };
        assert_eq!(Record::parse(&r.render()), r);
        let damaged = format!("{}leftover x y\nmain 8\n", r.render());
        assert_eq!(Record::parse(&damaged), r);
    }
}
