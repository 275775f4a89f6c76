//! `flowctl run FILE` as an operator runs it: a pipeline file, the binary, its exit code.

mod supervisor_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_common::{alive, testkit};

fn pipeline_file(dir: &Path, components: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.yaml");
    let text = format!(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: cli-test\nspec:\n{components}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn flowctl_run(dir: &Path, file: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowctl"));
    cmd.arg("run")
        .arg(file)
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn flowctl_run_exits_zero_when_a_bounded_pipeline_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let kit = testkit();
    let file = pipeline_file(
        dir.path(),
        &format!(
            "  sources:\n    - id: source\n      command: {k}\n      args: [--exit-code, '0', --after-ms, '100', --say, 'ledger 5']\n\
             \x20 sinks:\n    - id: sink\n      command: {k}\n      inputs: [source]\n      args: [--exit-code, '0', --after-ms, '200']\n",
            k = kit.display()
        ),
    );
    let out = flowctl_run(dir.path(), &file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let socket = dir.path().join("run/flowctl.sock");
    assert!(
        stderr.contains(&format!("control socket {}", socket.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("source| ledger 5"),
        "children's lines prefixed by id: {stderr}"
    );
}

#[test]
fn flowctl_run_exits_one_naming_the_failed_component_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(
        dir.path(),
        &format!(
            "  sources:\n    - id: source\n      command: {}\n\
             \x20 sinks:\n    - id: broken-sink\n      command: flowctl-no-such-sink\n      inputs: [source]\n",
            testkit().display()
        ),
    );
    let out = flowctl_run(dir.path(), &file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("component `broken-sink` of pipeline `cli-test` failed")
            && stderr.contains("No such file or directory (os error 2)"),
        "{stderr}"
    );
}

#[test]
fn flowctl_run_reports_pipeline_file_errors_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), "  sources:\n    - id: a\n      comand: x\n");
    let out = flowctl_run(dir.path(), &file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:8:", file.display())),
        "{stderr}"
    );
}

#[test]
fn flowctl_run_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let file = pipeline_file(
        dir.path(),
        &format!(
            "  sources:\n    - id: forever\n      command: {}\n      args: [--pid-file, {}]\n",
            testkit().display(),
            pid_file.display()
        ),
    );
    let mut run = flowctl_run(dir.path(), &file).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let child: i32 = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            break pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the component never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!alive(child), "the component outlived flowctl run");
    assert!(!dir.path().join("run/flowctl.sock").exists());
}

#[test]
fn a_stop_that_needed_sigkill_makes_flowctl_run_exit_nonzero_naming_the_component() {
    let dir = tempfile::tempdir().unwrap();
    let stubborn_pid = dir.path().join("stubborn.pid");
    let polite_pid = dir.path().join("polite.pid");
    let file = pipeline_file(
        dir.path(),
        &format!(
            "  sources:\n    - id: stubborn\n      command: {k}\n      args: [--ignore-sigterm, --pid-file, {s}]\n      stop:\n        timeout: 1s\n\
             \x20 sinks:\n    - id: polite\n      command: {k}\n      inputs: [stubborn]\n      args: [--pid-file, {p}]\n      stop:\n        timeout: 1s\n",
            k = testkit().display(),
            s = stubborn_pid.display(),
            p = polite_pid.display()
        ),
    );
    let run = flowctl_run(dir.path(), &file).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(stubborn_pid.exists() && polite_pid.exists()) {
        assert!(Instant::now() < deadline, "the components never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The pid file is written after the SIGTERM handler is set.
    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "component `stubborn` of pipeline `cli-test` did not stop within its stop timeout (1s) and was killed with SIGKILL"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("`polite` of pipeline `cli-test` did not stop"),
        "only the component that ignored SIGTERM is named: {stderr}"
    );
}

#[test]
fn flowctl_run_reports_each_components_cpu_time_and_peak_memory_as_the_kernel_counted_them() {
    let dir = tempfile::tempdir().unwrap();
    // The shell holds 48 MB in a variable, built by children it waits for: the figure covers
    // the process and what it reaped, as systemd's "Consumed" line does.
    let file = pipeline_file(
        dir.path(),
        "  sources:\n    - id: hungry\n      command: /bin/sh\n      args: ['-c', 'x=$(head -c 48000000 /dev/zero | tr \"\\\\0\" a); echo $${#x}']\n",
    );
    let out = flowctl_run(dir.path(), &file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("hungry| 48000000"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("flowctl: `hungry` used "))
        .unwrap_or_else(|| panic!("no usage line: {stderr}"));
    // flowctl: `hungry` used 0.12 s CPU, peak RSS 47.3 MiB
    let words: Vec<&str> = line.split_whitespace().collect();
    let cpu: f64 = words[3].parse().unwrap();
    let mib: f64 = words[8].parse().unwrap();
    assert!(cpu > 0.0, "{line}");
    assert!((45.0..500.0).contains(&mib), "{line}");
}

#[test]
fn flowctl_run_raises_its_fd_limit_and_children_get_the_original_soft_limit() {
    let dir = tempfile::tempdir().unwrap();
    let kit = testkit();
    let (child, parent) = (dir.path().join("child"), dir.path().join("parent"));
    let file = pipeline_file(
        dir.path(),
        &format!(
            "  sources:\n    - id: source\n      command: /bin/sh\n      args: ['-c', 'ulimit -Sn > {c}; grep \"Max open files\" /proc/$PPID/limits > {p}']\n\
             \x20 sinks:\n    - id: sink\n      command: {k}\n      inputs: [source]\n      args: [--exit-code, '0', --after-ms, '200']\n",
            c = child.display(),
            p = parent.display(),
            k = kit.display()
        ),
    );
    let run = flowctl_run(dir.path(), &file);
    // Start flowctl with a low soft limit, as a login shell's default would be.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
        .arg(run.get_program())
        .args(run.get_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let child_soft = std::fs::read_to_string(&child).unwrap();
    assert_eq!(child_soft.trim(), "256", "the child's soft limit: {stderr}");
    let parent_line = std::fs::read_to_string(&parent).unwrap();
    let fields: Vec<&str> = parent_line.split_whitespace().collect();
    // "Max open files SOFT HARD files"
    assert_eq!(
        fields[3], fields[4],
        "flowctl's soft limit is its hard limit: {parent_line}"
    );
    assert_ne!(fields[3], "256", "{parent_line}");
}
