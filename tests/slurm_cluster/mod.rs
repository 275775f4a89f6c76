//! A Slurm cluster of simulated hosts on this machine, for tests: each host is a network
//! namespace on one bridge with a `slurmd` of its own, and the bridge side runs `munged` and
//! `slurmctld`. The hosts share the filesystem (one munge socket, one `slurm.conf`), as hosts
//! with a shared home would. Everything is killed and deleted on drop, also on panic; what a
//! run killed outright left behind is swept by the next one.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every name made here begins with this and the test's pid, so runs never collide and a
/// dead run's leftovers are recognised.
const PREFIX: &str = "fsl";
/// Each host's `slurmd` listens on the same port, in its own namespace.
const SLURMD_PORT: u16 = 6818;

const PROGRAMS: [&str; 8] = [
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "ip",
    "nsenter",
];

pub struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    tag: String,
    /// The bridge's address: slurmctld's, and how the hosts reach this side (PostgreSQL).
    gateway: String,
    hosts: Vec<Host>,
    daemons: Vec<Child>,
    bridge_made: bool,
}

pub struct Host {
    pub name: String,
    pub addr: String,
    netns: String,
}

/// One task of an array job, as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub index: usize,
    pub node: String,
    pub state: String,
}

/// One task of an array job once it ended, as `scontrol show job` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub index: usize,
    pub state: String,
    pub exit_code: String,
    pub restarts: u32,
    pub node: String,
}

/// `CI` set to anything but empty, `0` or `false`.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    found
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("ip runs")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid a leftover name carries (`fsl1234h1`, `fsl1234br`, the dir `fsl1234-…` → 1234),
/// if it is one of ours.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    (tail.starts_with('h') || tail.starts_with('-') || tail == "br")
        .then(|| digits.parse().ok())
        .flatten()
}

/// SIGKILLs every process in network namespace `netns` until none is left: the host is lost.
fn kill_netns(netns: &str) {
    for _ in 0..50 {
        let out = ip(&["netns", "pids", netns]);
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes the namespaces, bridges and temp dirs of runs whose process is gone (killed
/// before their drop could run).
fn sweep_leftovers() {
    let netns = String::from_utf8_lossy(&ip(&["netns", "list"]).stdout).to_string();
    for name in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner(name).is_some_and(|pid| !pid_alive(pid)) {
            kill_netns(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
    let links =
        String::from_utf8_lossy(&ip(&["-o", "link", "show", "type", "bridge"]).stdout).to_string();
    for name in links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
    {
        if owner(name).is_some_and(|pid| !pid_alive(pid)) {
            let _ = ip(&["link", "del", name]);
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if owner(&name).is_some_and(|pid| !pid_alive(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A daemon in the foreground, in its own process group, SIGKILLed if the test dies first.
fn daemon(mut cmd: Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("daemon log");
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log fd"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// This host's short name: slurmctld runs only where `SlurmctldHost` names it.
fn short_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the hostname")
        .trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string()
}

fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            eprintln!("timed out waiting for {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

impl Cluster {
    /// A cluster of `hosts` hosts (`host1`…) of `cpus` CPUs each, all idle; `None` after a
    /// skip message without root (as the systemd sandbox tests), or when Slurm or munge is
    /// missing and `CI` is not set (`.ci/run` installs them, so under CI that is a failure).
    pub fn start(hosts: usize, cpus: u32) -> Option<Cluster> {
        let missing: Vec<&str> = PROGRAMS
            .iter()
            .copied()
            .filter(|p| find(p).is_none())
            .collect();
        let root = nix::unistd::geteuid().is_root();
        if !missing.is_empty() || !root {
            let why = if missing.is_empty() {
                "network namespaces need root".to_string()
            } else {
                format!(
                    "{} not found (apt-get install slurmctld slurmd slurm-client munge iproute2)",
                    missing.join(", ")
                )
            };
            assert!(
                !root || !under_ci(),
                "the Slurm test cannot run under CI: {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        sweep_leftovers();
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{pid}-"))
            .tempdir()
            .expect("a temp dir for the cluster");
        // 10.A.B.0/24 from the pid: concurrent runs get their own subnet.
        let (a, b) = (100 + (pid >> 8) % 100, pid & 0xff);
        let mut cluster = Cluster {
            conf: dir.path().join("slurm.conf"),
            dir,
            tag: format!("{PREFIX}{pid}"),
            gateway: format!("10.{a}.{b}.1"),
            hosts: (1..=hosts)
                .map(|i| Host {
                    name: format!("host{i}"),
                    addr: format!("10.{a}.{b}.{}", 10 + i),
                    netns: format!("{PREFIX}{pid}h{i}"),
                })
                .collect(),
            daemons: Vec::new(),
            bridge_made: false,
        };
        cluster.network();
        cluster.munge();
        cluster.write_conf(cpus);
        cluster.slurm();
        Some(cluster)
    }

    /// The bridge, and each host's namespace joined to it by a veth pair.
    fn network(&mut self) {
        let bridge = format!("{}br", self.tag);
        ip_ok(&["link", "add", &bridge, "type", "bridge"]);
        self.bridge_made = true;
        ip_ok(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &bridge,
        ]);
        ip_ok(&["link", "set", &bridge, "up"]);
        for (i, h) in self.hosts.iter().enumerate() {
            let (outer, inner) = (
                format!("{}v{}", self.tag, i + 1),
                format!("{}p{}", self.tag, i + 1),
            );
            ip_ok(&["netns", "add", &h.netns]);
            ip_ok(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            ip_ok(&["link", "set", &inner, "netns", &h.netns]);
            ip_ok(&["link", "set", &outer, "master", &bridge, "up"]);
            let n = |args: &[&str]| {
                let mut all = vec!["-n", h.netns.as_str()];
                all.extend_from_slice(args);
                ip_ok(&all);
            };
            n(&["addr", "add", &format!("{}/24", h.addr), "dev", &inner]);
            n(&["link", "set", &inner, "up"]);
            n(&["link", "set", "lo", "up"]);
            n(&["route", "add", "default", "via", &self.gateway]);
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One `munged` with a fresh key; every host reaches its socket on the shared filesystem.
    fn munge(&mut self) {
        let m = self.path("munge");
        std::fs::create_dir(&m).unwrap();
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut key = vec![0u8; 1024];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut key)
            .unwrap();
        std::fs::write(m.join("munge.key"), key).unwrap();
        std::fs::set_permissions(m.join("munge.key"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        let mut cmd = Command::new(find("munged").unwrap());
        cmd.args(["--foreground", "--force"])
            .arg(format!("--key-file={}", m.join("munge.key").display()))
            .arg(format!("--socket={}", m.join("munge.socket").display()))
            .arg(format!("--pid-file={}", m.join("munged.pid").display()))
            .arg(format!("--log-file={}", m.join("munged.log").display()))
            .arg(format!("--seed-file={}", m.join("munged.seed").display()));
        self.daemons.push(daemon(cmd, &m.join("munged.out")));
        let socket = m.join("munge.socket");
        assert!(
            wait("munged's socket", Duration::from_secs(10), || socket
                .exists()),
            "munged did not start: {}",
            std::fs::read_to_string(m.join("munged.out")).unwrap_or_default()
        );
    }

    fn write_conf(&self, cpus: u32) {
        let d = self.dir.path().display();
        std::fs::create_dir(self.path("state")).unwrap();
        for h in &self.hosts {
            std::fs::create_dir_all(self.path(&format!("spool/{}", h.name))).unwrap();
        }
        // No cgroup controllers here: processes are tracked through /proc, tasks unbound.
        let mut conf = format!(
            "ClusterName={tag}
SlurmctldHost={host}({gateway})
SlurmctldPort={ctl_port}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued task waits before it may start again.
AuthInfo=socket={d}/munge/munge.socket,cred_expire=5
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
# A freed host's next task starts within a second, not at the next 3-second tick.
SchedulerParameters=batch_sched_delay=0
JobRequeue=1
ReturnToService=2
SlurmdTimeout=300
",
            tag = self.tag,
            host = short_hostname(),
            gateway = self.gateway,
            ctl_port = free_port(),
        );
        for h in &self.hosts {
            conf.push_str(&format!(
                "NodeName={} NodeAddr={} CPUs={cpus} RealMemory=1000 State=UNKNOWN\n",
                h.name, h.addr
            ));
        }
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        conf.push_str(&format!(
            "PartitionName=all Nodes={} Default=YES MaxTime=INFINITE State=UP\n",
            names.join(",")
        ));
        std::fs::write(&self.conf, conf).unwrap();
    }

    /// slurmctld on the bridge side, a slurmd in each host's namespace (`nsenter --net`, which
    /// keeps /sys and /proc, unlike `ip netns exec`), until every node is idle.
    fn slurm(&mut self) {
        let mut ctl = Command::new(find("slurmctld").unwrap());
        ctl.args(["-D", "-i", "-f"]).arg(&self.conf);
        self.daemons.push(daemon(ctl, &self.path("slurmctld.out")));
        for h in &self.hosts {
            let mut d = Command::new(find("nsenter").unwrap());
            d.arg(format!("--net=/run/netns/{}", h.netns))
                .arg(find("slurmd").unwrap())
                .args(["-D", "-N", &h.name, "-f"])
                .arg(&self.conf);
            let log = self.path(&format!("slurmd-{}.out", h.name));
            self.daemons.push(daemon(d, &log));
        }
        let idle = wait("every node to be idle", Duration::from_secs(60), || {
            let out = self.cmd("sinfo").args(["-h", "-N", "-o", "%N %t"]).output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string());
            let text = text.unwrap_or_default();
            self.hosts
                .iter()
                .all(|h| text.lines().any(|l| l == format!("{} idle", h.name)))
        });
        assert!(idle, "the cluster did not come up:\n{}", self.logs());
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// This side's address on the bridge, which every host reaches.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// A Slurm client program (`sbatch`, `squeue`, `scontrol`…) talking to this cluster.
    pub fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(find(program).unwrap_or_else(|| program.into()));
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// `SLURM_CONF` for programs that call Slurm's clients themselves.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// `sbatch --parsable ARGS SCRIPT` from `cwd` with `env` (which sbatch hands to the
    /// tasks); `cwd` is also the tasks' `TMPDIR`, so that two clusters' job ids never meet in
    /// one runtime dir. The job id.
    pub fn submit(&self, script: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> String {
        let out = self
            .cmd("sbatch")
            .arg("--parsable")
            .args(args)
            .arg(script)
            .current_dir(cwd)
            .env("TMPDIR", cwd)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        id.split(';').next().unwrap().to_string()
    }

    /// The tasks of array job `job` still queued, running or completing.
    pub fn tasks(&self, job: &str) -> Vec<Task> {
        let out = self
            .cmd("squeue")
            .args(["-h", "-r", "-j", job, "-o", "%K|%N|%T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                Some(Task {
                    index: f.next()?.trim().parse().ok()?,
                    node: f.next()?.trim().to_string(),
                    state: f.next()?.trim().to_string(),
                })
            })
            .collect()
    }

    /// Waits until no task of `job` is left in the queue, at most `limit`; then each task's
    /// end as Slurm records it.
    pub fn wait_ended(&self, job: &str, limit: Duration) -> Vec<Ended> {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.cmd("squeue").args(["-h", "-j", job]).output().unwrap();
            if out.status.success() && out.stdout.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not end in {limit:?}: {:?}\n{}",
                self.tasks(job),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ended(job)
    }

    /// Each task of `job` as `scontrol show job` records it.
    pub fn ended(&self, job: &str) -> Vec<Ended> {
        let out = self
            .cmd("scontrol")
            .args(["-o", "show", "job", job])
            .output()
            .unwrap();
        let mut v: Vec<Ended> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let field = |k: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{k}=")))
                        .map(str::to_string)
                };
                Some(Ended {
                    index: field("ArrayTaskId")?.parse().ok()?,
                    state: field("JobState")?,
                    exit_code: field("ExitCode")?,
                    restarts: field("Restarts")?.parse().ok()?,
                    node: field("NodeList").unwrap_or_default(),
                })
            })
            .collect();
        v.sort_by_key(|e| e.index);
        v
    }

    /// The host is lost: its slurmd and everything it ran are SIGKILLed.
    pub fn lose(&self, host: &str) {
        kill_netns(&self.host(host).netns);
    }

    /// `scontrol update nodename=HOST state=down reason=REASON`: Slurm requeues its tasks.
    pub fn set_down(&self, host: &str, reason: &str) {
        let out = self
            .cmd("scontrol")
            .args(["update", &format!("nodename={host}"), "state=down"])
            .arg(format!("reason={reason}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scontrol update: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The end of the daemons' logs, for a failure's message.
    pub fn logs(&self) -> String {
        let mut names = vec!["slurmctld.log".to_string(), "slurmctld.out".to_string()];
        for h in &self.hosts {
            names.push(format!("slurmd-{}.log", h.name));
            names.push(format!("slurmd-{}.out", h.name));
        }
        let mut out = String::new();
        for n in names {
            let text = std::fs::read_to_string(self.path(&n)).unwrap_or_default();
            // Debian's Slurm tries a PMIx it does not ship, at every start.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("pmix") && !l.contains("MPI:"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!("--- {n}\n{}\n", tail.join("\n")));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for h in &self.hosts {
            kill_netns(&h.netns);
        }
        for d in &mut self.daemons {
            unsafe { libc::kill(-(d.id() as i32), libc::SIGKILL) };
            let _ = d.kill();
            let _ = d.wait();
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let _ = ip(&["netns", "del", &h.netns]);
            // Gone with its peer in the namespace, unless that deletion failed.
            let _ = ip(&["link", "del", &format!("{}v{}", self.tag, i + 1)]);
        }
        if self.bridge_made {
            let _ = ip(&["link", "del", &format!("{}br", self.tag)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn leftovers_are_known_by_their_prefix_and_pid() {
        assert_eq!(owner("fsl1234h2"), Some(1234));
        assert_eq!(owner("fsl1234br"), Some(1234));
        assert_eq!(owner("fsl1234-x1Yz"), Some(1234));
        assert_eq!(owner("fsl1234v2"), None);
        assert_eq!(owner("eth0"), None);
    }
}
