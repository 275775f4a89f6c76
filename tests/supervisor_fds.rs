//! A supervisor out of file descriptors: a component whose start fails for lack of fds is
//! retried, and runs again once fds are free, instead of staying failed. Real `flowctl run`
//! under a small `ulimit -n`, real connections eating its fds.

mod supervisor_common;

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_common::testkit;

fn starts(stamp: &std::path::Path) -> usize {
    std::fs::read_to_string(stamp)
        .map(|t| t.lines().filter(|l| l.contains("start")).count())
        .unwrap_or(0)
}

fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_start_that_fails_for_want_of_fds_is_retried_and_succeeds_once_fds_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("starts");
    let kit = testkit();
    let file = dir.path().join("fds.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: fds
spec:
  sources:
    - id: looper
      command: {kit}
      args: [--exit-code, '1', --after-ms, '200', --stamp-file, {stamp}]
      restart:
        policy: always
        initial_delay: 100ms
        max_delay: 200ms
        start_limit_burst: 1000000
        start_limit_interval: 1s
  sinks:
    - id: steady
      command: {kit}
      inputs: [looper]
",
            kit = kit.display(),
            stamp = stamp.display()
        ),
    )
    .unwrap();
    let stderr_path = dir.path().join("stderr");
    let runtime = dir.path().join("run");
    let mut run = Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" run \"$1\" --runtime-dir \"$2\" --no-registry")
        .arg(env!("CARGO_BIN_EXE_flowctl"))
        .arg(&file)
        .arg(&runtime)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait("two starts of the looper", Duration::from_secs(30), || {
        starts(&stamp) >= 2
    });

    // Every control connection the supervisor accepts takes one of its 48 fds.
    let socket = runtime.join("flowctl.sock");
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(c) = UnixStream::connect(&socket) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Out of fds, the looper cannot be started again (its pipes are fds too).
    wait("starts to stall", Duration::from_secs(30), || {
        let seen = starts(&stamp);
        std::thread::sleep(Duration::from_millis(1500));
        starts(&stamp) == seen
    });
    let before = starts(&stamp);
    drop(held);
    wait(
        "the looper started again once fds were free",
        Duration::from_secs(30),
        || starts(&stamp) >= before + 2,
    );
    let status = Command::new(env!("CARGO_BIN_EXE_flowctl-sup"))
        .arg("--socket")
        .arg(&socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("\"looper\""), "{text}");
    assert!(!text.contains("\"failed\""), "{text}");
    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let _ = run.wait();
    assert!(!stderr().contains("panicked"), "{}", stderr());
}
