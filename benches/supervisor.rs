//! Supervisor figures comparable to docs/anchors.md:
//! - crash → replacement running, zero backoff (p50, p99), next to the floor of a bare
//!   spawn/wait/respawn loop measured the same way;
//! - supervisor RSS with 50 idle children;
//! - supervisor CPU while idle with 50 children HTTP-probed every second.
//!
//! Run: `cargo build --release -p flowctl-testkit && cargo bench --bench supervisor`.
//! The supervisor under measurement runs in a child process (this binary re-executed), so its
//! RSS and CPU are its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowctl::logsink::{LogSink, Stream};
use flowctl::plan::{ComponentPlan, ProbeCheck};
use flowctl::supervisor::{testplan, Supervisor, SupervisorOptions};

const ROLE: &str = "FLOWCTL_BENCH_ROLE";
const DIR: &str = "FLOWCTL_BENCH_DIR";
const CHILDREN: usize = 50;
const RESTARTS: usize = 1000;
const CPU_WINDOW: Duration = Duration::from_secs(30);

struct Discard;
impl LogSink for Discard {
    fn line(&self, _: &str, _: &str, _: Stream, _: &[u8]) {}
}

fn testkit() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("flowctl-testkit");
    assert!(
        path.exists(),
        "{} missing: cargo build --release -p flowctl-testkit",
        path.display()
    );
    path
}

fn kit(id: &str, args: &[String]) -> ComponentPlan {
    let mut c = testplan::component(id);
    c.command = testkit().display().to_string();
    c.args = args.to_vec();
    c.restart.initial_delay = Duration::ZERO;
    c.restart.start_limit_burst = 0;
    c.rlimits.core = Some(0);
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn options(dir: &Path) -> SupervisorOptions {
    let mut o = SupervisorOptions::new(dir.join("run"));
    o.log_sink = Arc::new(Discard);
    o
}

/// Pairs each "exit" stamp with the following "start": the restart gaps in µs.
fn gaps_us(stamp_file: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(stamp_file).unwrap();
    let stamps: Vec<(&str, u128)> = text
        .lines()
        .filter_map(|l| {
            let (w, ns) = l.split_once(' ')?;
            Some((w, ns.parse().ok()?))
        })
        .collect();
    let mut gaps: Vec<f64> = stamps
        .windows(2)
        .filter(|w| w[0].0 == "exit" && w[1].0 == "start")
        .map(|w| (w[1].1 - w[0].1) as f64 / 1000.0)
        .collect();
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    gaps
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Our supervisor: one component that crashes (SIGABRT) at once, zero backoff.
fn restart_latency(dir: &Path) -> Vec<f64> {
    let stamp = dir.join("sup.stamps");
    let c = kit(
        "crasher",
        &[
            "--crash".into(),
            "--stamp-file".into(),
            stamp.display().to_string(),
        ],
    );
    runtime().block_on(async {
        let (sup, handle) =
            Supervisor::new(vec![testplan::pipeline("bench", vec![c])], options(dir)).unwrap();
        let task = tokio::spawn(sup.run());
        loop {
            let s = handle.status().await.unwrap();
            if s.pipelines[0].components[0].restarts as usize >= RESTARTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.shutdown();
        task.await.unwrap().unwrap();
    });
    gaps_us(&stamp)
}

/// The floor: spawn, wait, respawn in a plain loop, same program, same stamps.
fn floor_latency(dir: &Path) -> Vec<f64> {
    let stamp = dir.join("floor.stamps");
    for _ in 0..=RESTARTS {
        Command::new(testkit())
            .args(["--crash", "--stamp-file"])
            .arg(&stamp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
    }
    gaps_us(&stamp)
}

/// A supervisor of 50 children in its own process (`probed`: each serves /health and is
/// checked every second).
fn supervise(role: &str, dir: &Path) {
    let probed = role == "probed";
    let components = (0..CHILDREN)
        .map(|i| {
            let mut args = Vec::new();
            let mut c;
            if probed {
                args.push("--serve-health".to_string());
                c = kit(&format!("c{i}"), &args);
                c.health_port = free_port();
                let mut probe = testplan::probe(
                    ProbeCheck::Http {
                        port: c.health_port,
                        path: "/health".into(),
                    },
                    Duration::from_secs(1),
                );
                probe.initial_delay = Duration::from_millis(100);
                c.readiness = Some(probe);
            } else {
                c = kit(&format!("c{i}"), &args);
            }
            c
        })
        .collect();
    let ready_file = dir.join(format!("{role}.ready"));
    runtime().block_on(async {
        let (sup, handle) =
            Supervisor::new(vec![testplan::pipeline(role, components)], options(dir)).unwrap();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = handle.status().await.unwrap();
                if s.pipelines[0].components.iter().all(|c| c.ready) {
                    std::fs::write(&ready_file, "ready").unwrap();
                    return;
                }
            }
        });
        sup.run().await.unwrap();
    });
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command: state(0) … utime(11) stime(12)
    (f[11].parse().unwrap(), f[12].parse().unwrap())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Starts a supervising child, waits for its 50 components to be ready, then measures.
fn measure(role: &str, dir: &Path) -> (u64, f64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = dir.join(format!("{role}.ready"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "{role}: components never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id());
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (u0, s0) = proc_stat(child.id());
    let t0 = Instant::now();
    std::thread::sleep(CPU_WINDOW);
    let (u1, s1) = proc_stat(child.id());
    let cpu = ((u1 + s1 - u0 - s0) as f64 / ticks) / t0.elapsed().as_secs_f64() * 100.0;
    // SIGKILL: its components die with it (PDEATHSIG).
    child.kill().unwrap();
    child.wait().unwrap();
    (rss, cpu)
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let dir = PathBuf::from(std::env::var(DIR).unwrap());
        supervise(&role, &dir);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / test harness probing
    }
    let dir = tempfile::tempdir().unwrap();

    let floor = floor_latency(dir.path());
    let ours = restart_latency(dir.path());
    println!(
        "crash -> replacement running, zero backoff ({} restarts)",
        ours.len()
    );
    println!(
        "  flowctl supervisor      p50 {:7.3} ms   p99 {:7.3} ms",
        percentile(&ours, 0.5) / 1000.0,
        percentile(&ours, 0.99) / 1000.0
    );
    println!(
        "  floor (spawn/wait loop) p50 {:7.3} ms   p99 {:7.3} ms",
        percentile(&floor, 0.5) / 1000.0,
        percentile(&floor, 0.99) / 1000.0
    );
    let (idle_rss, idle_cpu) = measure("idle", dir.path());
    println!("supervisor with {CHILDREN} idle children");
    println!(
        "  RSS {:.2} MiB   CPU {:.3}% of a core (over {}s)",
        idle_rss as f64 / 1024.0,
        idle_cpu,
        CPU_WINDOW.as_secs()
    );
    let (probed_rss, probed_cpu) = measure("probed", dir.path());
    println!("supervisor with {CHILDREN} children, HTTP check every second each");
    println!(
        "  RSS {:.2} MiB   CPU {:.3}% of a core (over {}s)",
        probed_rss as f64 / 1024.0,
        probed_cpu,
        CPU_WINDOW.as_secs()
    );
    println!("targets: restart p50 < 5 ms (goal <= 1), RSS < 15 MiB (goal <= 8), idle CPU < 1% (goal <= 0.3%)");
}
