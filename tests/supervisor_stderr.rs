//! The supervisor's own stderr never blocks it: `flowctl run` with its stderr on a pipe nobody
//! reads keeps supervising, and says how many lines it dropped once the pipe is read again.

mod supervisor_common;

use std::io::{BufRead, BufReader, PipeReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::api::protocol::Request;
use supervisor_common::testkit;

/// A component that prints 2,000 lines (200 KB) to stderr and crashes, restarted every 50 ms
/// for ever.
fn crash_loop_file(dir: &Path) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    let text = format!(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: flood\nspec:\n  sources:\n\
         \x20   - id: spew\n      command: {}\n      args: [--print-lines, '2000', --crash]\n\
         \x20     restart:\n        policy: always\n        initial_delay: 50ms\n        max_delay: 50ms\n\
         \x20       start_limit_burst: 1000000\n      stop:\n        timeout: 5s\n",
        testkit().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `flowctl run` with its stderr on a pipe whose read end is returned, unread.
fn run_with_unread_stderr(dir: &Path) -> (Child, PipeReader) {
    let file = crash_loop_file(dir);
    let (reader, writer) = std::io::pipe().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("run")
        .arg(&file)
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--no-registry")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    (child, reader)
}

/// The restart count of `spew`, from the control socket; panics if the status does not come.
fn restarts(socket: &Path) -> u32 {
    let response = flowctl::api::client::request(socket, &Request::Status)
        .unwrap_or_else(|e| panic!("status over {}: {e}", socket.display()));
    response.status.expect("a status").pipelines[0].components[0].restarts
}

fn wait_for_restarts(socket: &Path, at_least: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        let n = restarts(socket);
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} restarts while stderr is not read"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Zombie children of `parent` now.
fn zombies_of(parent: u32) -> Vec<i32> {
    let mut found = Vec::new();
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
        if rest.first() == Some(&"Z") && rest.get(1) == Some(&parent.to_string().as_str()) {
            found.push(pid);
        }
    }
    found
}

/// SIGTERM, then waits for the exit; panics if it takes longer than `within`.
fn terminate_and_wait(child: &mut Child, within: Duration) {
    let start = Instant::now();
    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowctl run still running {within:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_supervisor_whose_stderr_is_not_read_still_answers_reaps_crashed_children_and_stops_on_sigterm()
{
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/flowctl.sock");
    let (mut run, _unread) = run_with_unread_stderr(dir.path());
    // Each start prints 200 KB: the 64 KiB pipe was full during the first one.
    wait_for_restarts(&socket, 15);
    // A crashed child may be a zombie for the moment before it is reaped, never for seconds.
    let before = zombies_of(run.id());
    std::thread::sleep(Duration::from_secs(2));
    let stuck: Vec<i32> = zombies_of(run.id())
        .into_iter()
        .filter(|z| before.contains(z))
        .collect();
    assert!(stuck.is_empty(), "zombies not reaped for 2 s: {stuck:?}");
    // …and the crash loop goes on being supervised.
    let later = restarts(&socket);
    wait_for_restarts(&socket, later + 3);
    // The stop timeout is 5 s; flowctl gives its unread stderr 1 s more before exiting.
    terminate_and_wait(&mut run, Duration::from_secs(12));
}

#[test]
fn lines_dropped_while_stderr_was_not_read_are_counted_in_one_notice_once_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/flowctl.sock");
    let (mut run, unread) = run_with_unread_stderr(dir.path());
    // 20 starts print 4 MB, more than the pipe and the 1 MiB queue together hold.
    wait_for_restarts(&socket, 20);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(unread).lines() {
            let Ok(line) = line else { return };
            if line.starts_with("flowctl: dropped ") && tx.send(line).is_err() {
                return;
            }
        }
    });
    let notice = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a notice of dropped lines once stderr is read");
    let n: u64 = notice
        .strip_prefix("flowctl: dropped ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {notice:?}"));
    assert!(n > 0, "{notice}");
    assert!(
        notice.ends_with(" of output: stderr was not being read"),
        "{notice}"
    );
    terminate_and_wait(&mut run, Duration::from_secs(12));
}
