//! Shared by the `supervisor_*` tests: the test component, plans, a running supervisor.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowctl::api::protocol::{ComponentStatus, SupervisorStatus};
use flowctl::logsink::{LogSink, Stream};
use flowctl::plan::{ComponentPlan, PipelinePlan};
use flowctl::supervisor::{testplan, RunSummary, Supervisor, SupervisorHandle, SupervisorOptions};

/// The `flowctl-testkit` binary, built with the workspace (built here if it is missing).
pub fn testkit() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/flowctl-testkit
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("flowctl-testkit");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "flowctl-testkit"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p flowctl-testkit");
        assert!(status.success(), "cargo build -p flowctl-testkit failed");
    }
    assert!(
        path.exists(),
        "{} missing: run cargo build -p flowctl-testkit",
        path.display()
    );
    path
}

/// A component running the test kit with `args`.
pub fn kit(id: &str, args: &[&str]) -> ComponentPlan {
    let mut c = testplan::component(id);
    c.command = testkit().display().to_string();
    c.args = args.iter().map(|s| s.to_string()).collect();
    c
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Output lines the supervisor forwarded, in order.
#[derive(Default)]
pub struct CaptureSink(pub Mutex<Vec<(String, Stream, String)>>);

impl LogSink for CaptureSink {
    fn line(&self, _pipeline: &str, component: &str, stream: Stream, line: &[u8]) {
        self.0.lock().unwrap().push((
            component.to_string(),
            stream,
            String::from_utf8_lossy(line).into_owned(),
        ));
    }
}

pub struct Running {
    pub handle: SupervisorHandle,
    pub task: tokio::task::JoinHandle<RunSummary>,
    pub dir: tempfile::TempDir,
}

pub fn options(dir: &Path) -> SupervisorOptions {
    let mut o = SupervisorOptions::new(dir.join("run"));
    o.log_sink = Arc::new(CaptureSink::default());
    o
}

/// Starts a supervisor for `pipeline` on the current runtime.
pub fn start(pipeline: PipelinePlan) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    start_with(pipeline, opts, dir)
}

pub fn start_with(
    pipeline: PipelinePlan,
    opts: SupervisorOptions,
    dir: tempfile::TempDir,
) -> Running {
    let (sup, handle) = Supervisor::new(vec![pipeline], opts).unwrap();
    let task = tokio::spawn(async move { sup.run().await.unwrap() });
    Running { handle, task, dir }
}

pub async fn status(handle: &SupervisorHandle) -> SupervisorStatus {
    handle.status().await.expect("supervisor answers status")
}

pub async fn component(handle: &SupervisorHandle, id: &str) -> ComponentStatus {
    status(handle)
        .await
        .pipelines
        .into_iter()
        .flat_map(|p| p.components)
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no component {id}"))
}

/// Polls `id`'s status every 5 ms until `pred` holds; panics with the last status after
/// `timeout`.
pub async fn wait_for(
    handle: &SupervisorHandle,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&ComponentStatus) -> bool,
) -> ComponentStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let c = component(handle, id).await;
        if pred(&c) {
            return c;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting on {id}: {c:#?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for a file to exist and returns its contents.
pub async fn read_when_present(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Zombie children of this process.
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.first() == Some(&"Z") && rest.get(1).and_then(|p| p.parse().ok()) == Some(me) {
            zombies.push(pid);
        }
    }
    zombies
}

/// The `start`/`exit` stamps the test kit appended, as (what, nanoseconds).
pub fn stamps(path: &Path) -> Vec<(String, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (what, ns) = l.split_once(' ')?;
            Some((what.to_string(), ns.parse().ok()?))
        })
        .collect()
}
