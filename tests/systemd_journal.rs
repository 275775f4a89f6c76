//! Children's output and the daemon's own logs in a real journal: each test re-runs itself
//! inside a private mount namespace with a tmpfs on /run, starts `systemd-journald` there (it
//! needs no PID 1), and reads the entries back with `journalctl`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use flowctl::api::protocol::ComponentStatus;
use flowctl::logsink::{LineOrigin, Stream};
use flowctl::plan::ComponentPlan;
use flowctl::systemd::journal::{ChildLogMode, ChildLogs, JournalSockets};

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const INSIDE: &str = "FLOWCTL_TEST_PRIVATE_JOURNAL";

/// Runs `body` in a private namespace with its own journald; returns false (after saying why)
/// when this machine cannot do that, so the caller returns early.
fn with_private_journald(test: &str, body: impl FnOnce()) -> bool {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        // Stopped on the way out even when `body` panics, so no journald outlives the test.
        struct Running(Option<std::process::Child>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(child) = self.0.take() {
                    stop(child);
                }
            }
        }
        let _journald = Running(Some(start_journald()));
        body();
        return true;
    }
    if !Path::new(JOURNALD).exists() || !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root and {JOURNALD} (apt-get install systemd)");
        return false;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inner run failed:\n{stdout}\n{stderr}"
    );
    true
}

fn start_journald() -> std::process::Child {
    for dir in ["/run", "/var/log/journal"] {
        if Path::new(dir).is_dir() {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs", dir])
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount tmpfs on {dir}");
        }
    }
    start_journald_process()
}

fn start_journald_process() -> std::process::Child {
    let child = Command::new(JOURNALD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start journald");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !JournalSockets::system().available() {
        assert!(
            Instant::now() < deadline,
            "journald did not create its sockets"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stop(mut child: std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

/// Journal entries matching `filter` (e.g. `SYSLOG_IDENTIFIER=x`), waiting until `want` exist.
fn entries(filter: &str, want: usize) -> Vec<HashMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("journalctl")
            // --all: MESSAGE values over 4 KiB are otherwise shown as null.
            .args([
                "-D",
                "/run/log/journal",
                "-o",
                "json",
                "--all",
                "--no-pager",
                filter,
            ])
            .output()
            .expect("journalctl");
        let found: Vec<HashMap<String, String>> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object()
                    .unwrap()
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .collect();
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `flowctl logs ARGS` prints; it must succeed.
fn flowctl_logs(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("logs")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowctl logs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn by_message<'a>(es: &'a [HashMap<String, String>], msg: &str) -> &'a HashMap<String, String> {
    es.iter()
        .find(|e| e.get("MESSAGE").map(String::as_str) == Some(msg))
        .unwrap_or_else(|| panic!("no entry {msg:?} in {es:#?}"))
}

#[test]
fn daemon_logs_go_to_journald_with_fields_as_written() {
    with_private_journald("daemon_logs_go_to_journald_with_fields_as_written", || {
        flowctl::systemd::journal::init_daemon_logging("info", &JournalSockets::system()).unwrap();
        tracing::warn!(flowctl_pipeline = "ttp", "component restarted");
        tracing::debug!("filtered out");
        let es = entries("SYSLOG_IDENTIFIER=flowctl-sup", 1);
        let e = by_message(&es, "component restarted");
        assert_eq!(e["PRIORITY"], "4");
        assert_eq!(e["FLOWCTL_PIPELINE"], "ttp");
        assert!(es.iter().all(|e| e["MESSAGE"] != "filtered out"));
    });
}

/// The journald this test process started (the helper's child).
fn our_journald() -> i32 {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields[1] == me && stat.contains("(systemd-journal") {
            return entry.file_name().to_string_lossy().parse().unwrap();
        }
    }
    panic!("no journald child");
}

#[test]
fn fields_sink_reconnects_after_journald_restarts() {
    with_private_journald("fields_sink_reconnects_after_journald_restarts", || {
        let sink = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system()).sink();
        let origin = LineOrigin {
            pipeline: Arc::from("p"),
            component: Arc::from("survivor"),
            restart: 0,
            pid: 1,
        };
        sink.origin_line(&origin, Stream::Stdout, b"before");
        entries("FLOWCTL_COMPONENT=survivor", 1);

        // journald goes away and comes back with a new socket at the same path.
        let first = our_journald();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{first}/stat"))
            .unwrap()
            .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "journald did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_file(flowctl::systemd::journal::NATIVE_SOCKET).ok();
        std::fs::remove_file(flowctl::systemd::journal::STDOUT_SOCKET).ok();
        let second = start_journald_process();
        // Had the sink not reconnected, this line would have gone to stderr instead.
        sink.origin_line(&origin, Stream::Stdout, b"after");
        let es = entries("FLOWCTL_COMPONENT=survivor", 2);
        by_message(&es, "before");
        by_message(&es, "after");
        stop(second);
    });
}

/// Runs `components` (pipeline `ttp`) under a real supervisor whose log sink is `logs`'s,
/// until `until` holds for their statuses (it must not block: the supervisor shares this
/// thread); then stops them. Returns the statuses that satisfied `until`.
fn supervise_all(
    logs: &ChildLogs,
    components: Vec<ComponentPlan>,
    mut until: impl FnMut(&[ComponentStatus]) -> bool,
) -> Vec<ComponentStatus> {
    use flowctl::supervisor::{testplan, Supervisor, SupervisorOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut options = SupervisorOptions::new(dir.path().join("run"));
    options.log_sink = logs.sink();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (sup, handle) =
            Supervisor::new(vec![testplan::pipeline("ttp", components)], options).unwrap();
        let task = tokio::spawn(sup.run());
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = loop {
            let status = handle.status().await.unwrap();
            let cs = status.pipelines[0].components.clone();
            if until(&cs) {
                break cs;
            }
            assert!(Instant::now() < deadline, "timed out: {cs:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        handle.shutdown();
        task.await.unwrap().unwrap();
        seen
    })
}

/// [`supervise_all`] for one component.
fn supervise(
    logs: &ChildLogs,
    component: ComponentPlan,
    mut until: impl FnMut(&ComponentStatus) -> bool,
) -> ComponentStatus {
    let id = component.id.clone();
    let pick = |cs: &[ComponentStatus]| cs.iter().find(|c| c.id == id).unwrap().clone();
    let seen = supervise_all(logs, vec![component], |cs| until(&pick(cs)));
    pick(&seen)
}

fn shell(id: &str, script: &str) -> ComponentPlan {
    let mut c = flowctl::supervisor::testplan::component(id);
    c.command = "sh".into();
    c.args = vec!["-c".into(), script.into()];
    c.restart.initial_delay = Duration::from_millis(20);
    c
}

#[test]
fn relayed_lines_carry_the_restart_count_of_the_process_that_wrote_them() {
    with_private_journald(
        "relayed_lines_carry_the_restart_count_of_the_process_that_wrote_them",
        || {
            let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
            // Three processes have written and exited once the fourth start is under way.
            supervise(&logs, shell("flappy", "echo \"run $$\"; exit 1"), |c| {
                c.restarts >= 3
            });
            let es = entries("FLOWCTL_COMPONENT=flappy", 3);
            let mut seen: Vec<(u32, String)> = es
                .iter()
                .map(|e| {
                    // Each process says its own pid: the entry names that process and its start.
                    assert_eq!(e["MESSAGE"], format!("run {}", e["SYSLOG_PID"]), "{e:#?}");
                    assert_eq!(e["FLOWCTL_PIPELINE"], "ttp");
                    (
                        e["FLOWCTL_RESTART"].parse().unwrap(),
                        e["SYSLOG_PID"].clone(),
                    )
                })
                .collect();
            seen.sort();
            assert!(seen.len() >= 3, "{es:#?}");
            for (i, (restart, _)) in seen.iter().enumerate() {
                assert_eq!(*restart as usize, i, "{seen:?}");
            }
            assert_ne!(seen[0].1, seen[1].1);
        },
    );
}

/// The inode behind `/proc/PID/fd/N` (`socket:[123]`, `pipe:[456]`).
fn fd_target(pid: i32, fd: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn stream_mode_children_write_to_journald_under_their_id_and_priority_and_flowctl_logs_finds_them()
{
    with_private_journald(
        "stream_mode_children_write_to_journald_under_their_id_and_priority_and_flowctl_logs_finds_them",
        || {
            let logs = ChildLogs::new(ChildLogMode::Stream, JournalSockets::system());
            assert_eq!(logs.mode(), ChildLogMode::Stream);
            let script = "echo 'to stdout'; echo '<5>to stdout with a prefix'; \
                          echo '<3>to stderr with a prefix' >&2; echo 'plain stderr' >&2; \
                          exec sleep 1000";
            let mut fds = None;
            let ran = supervise(&logs, shell("streamer", script), |c| {
                let Some(pid) = c.pid else { return false };
                // Both ends are one journald connection, not pipes to the supervisor.
                fds = Some((fd_target(pid, 1), fd_target(pid, 2)));
                entries("SYSLOG_IDENTIFIER=streamer", 0).len() >= 4
            });
            let (out, err) = fds.unwrap();
            assert!(out.starts_with("socket:"), "{out}");
            assert_eq!(out, err);

            let es = entries("SYSLOG_IDENTIFIER=streamer", 4);
            assert_eq!(es.len(), 4, "{es:#?}");
            for e in &es {
                assert_eq!(e["_TRANSPORT"], "stdout", "{e:#?}");
                assert_eq!(e["_PID"], ran.pid.unwrap().to_string());
                assert!(!e.contains_key("FLOWCTL_COMPONENT"), "{e:#?}");
            }
            assert_eq!(by_message(&es, "to stdout")["PRIORITY"], "6");
            assert_eq!(by_message(&es, "to stdout with a prefix")["PRIORITY"], "5");
            assert_eq!(by_message(&es, "to stderr with a prefix")["PRIORITY"], "3");
            assert_eq!(by_message(&es, "plain stderr")["PRIORITY"], "6");

            // No unit outside systemd: `--unit ""` matches the identifier from anywhere.
            let shown = flowctl_logs(&["streamer", "--unit", ""]);
            assert!(shown.contains("streamer["), "{shown}");
            assert!(shown.contains("to stderr with a prefix"), "{shown}");
            assert!(shown.contains("plain stderr"), "{shown}");
        },
    );
}

#[test]
fn stream_mode_relays_with_fields_when_the_stream_socket_refuses() {
    with_private_journald(
        "stream_mode_relays_with_fields_when_the_stream_socket_refuses",
        || {
            // A socket file nobody listens on any more: connect() is refused.
            let dir = tempfile::tempdir().unwrap();
            let stale = dir.path().join("stdout");
            drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
            let sockets = JournalSockets {
                stdout: stale,
                native: flowctl::systemd::journal::NATIVE_SOCKET.into(),
            };
            let logs = ChildLogs::new(ChildLogMode::Stream, sockets);
            assert_eq!(logs.mode(), ChildLogMode::Stream);
            let ran = supervise(
                &logs,
                shell("fallback", "echo 'still here'; exec sleep 1000"),
                |c| c.pid.is_some() && !entries("FLOWCTL_COMPONENT=fallback", 0).is_empty(),
            );
            let pid = ran.pid.unwrap();
            let es = entries("FLOWCTL_COMPONENT=fallback", 1);
            let e = by_message(&es, "still here");
            assert_eq!(e["SYSLOG_IDENTIFIER"], "fallback");
            assert_eq!(e["SYSLOG_PID"], pid.to_string());
            assert_eq!(e["FLOWCTL_RESTART"], "0");
        },
    );
}

#[test]
fn fields_mode_relays_each_line_with_flowctl_fields_and_its_priority() {
    with_private_journald(
        "fields_mode_relays_each_line_with_flowctl_fields_and_its_priority",
        || {
            let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
            assert_eq!(logs.mode(), ChildLogMode::Fields);
            let script = r#"echo "ledger 1 done"; echo "<3>upstream gone" >&2;
                            echo "<5>notice this"; exec sleep 1000"#;
            let ran = supervise(&logs, shell("ttp-processor", script), |c| {
                c.pid.is_some() && entries("FLOWCTL_COMPONENT=ttp-processor", 0).len() >= 3
            });
            let pid = ran.pid.unwrap().to_string();

            let es = entries("FLOWCTL_COMPONENT=ttp-processor", 3);
            assert_eq!(es.len(), 3, "{es:#?}");
            for e in &es {
                assert_eq!(e["_TRANSPORT"], "journal", "{e:#?}");
                assert_eq!(e["SYSLOG_IDENTIFIER"], "ttp-processor", "{e:#?}");
                assert_eq!(e["SYSLOG_PID"], pid, "{e:#?}");
                assert_eq!(e["FLOWCTL_PIPELINE"], "ttp", "{e:#?}");
                // The supervisor's count for this start: the first.
                assert_eq!(e["FLOWCTL_RESTART"], "0", "{e:#?}");
            }
            assert_eq!(by_message(&es, "ledger 1 done")["PRIORITY"], "6");
            // The prefix sets the priority on stderr and stdout alike, and leaves the message.
            assert_eq!(by_message(&es, "upstream gone")["PRIORITY"], "3");
            assert_eq!(by_message(&es, "notice this")["PRIORITY"], "5");
        },
    );
}

#[test]
fn relay_outlives_the_main_process_while_a_grandchild_holds_the_output_open() {
    with_private_journald(
        "relay_outlives_the_main_process_while_a_grandchild_holds_the_output_open",
        || {
            let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
            // The grandchild leaves the process group, which is killed with the main process
            // (so the main process waits until it has left), and writes only once the main
            // process has been reaped. It ignores the SIGTERM that processes outside the
            // group get when their component ends (the SIGKILL comes after the stop timeout).
            let script = r#"main=$$
                setsid sh -c "trap '' TERM; while kill -0 $main 2>/dev/null; do sleep 0.05; done
                              echo grandchild outlived $main" &
                while [ "$(cut -d' ' -f5 /proc/$!/stat)" = "$main" ]; do sleep 0.01; done
                echo "child $main""#;
            let mut forker = shell("forker", script);
            forker.restart.policy = flowctl::plan::RestartPolicy::Never;
            let ran = supervise(&logs, forker, |c| {
                c.last_exit.is_some()
                    && entries("FLOWCTL_COMPONENT=forker", 0)
                        .iter()
                        .any(|e| e["MESSAGE"].starts_with("grandchild"))
            });
            assert!(ran.pid.is_none(), "{ran:#?}");
            let es = entries("FLOWCTL_COMPONENT=forker", 2);
            assert_eq!(es.len(), 2, "{es:#?}");
            let child = es
                .iter()
                .find(|e| e["MESSAGE"].starts_with("child "))
                .unwrap_or_else(|| panic!("{es:#?}"));
            let main_pid = &child["SYSLOG_PID"];
            assert_eq!(child["MESSAGE"], format!("child {main_pid}"));
            let late = by_message(&es, &format!("grandchild outlived {main_pid}"));
            // The grandchild's line is filed under the start whose output it inherited.
            assert_eq!(&late["SYSLOG_PID"], main_pid);
            assert_eq!(late["FLOWCTL_RESTART"], "0");
        },
    );
}

#[test]
fn without_journald_children_fall_back_to_prefixed_stderr() {
    const TEST: &str = "without_journald_children_fall_back_to_prefixed_stderr";
    if std::env::var(INSIDE).as_deref() == Ok(TEST) {
        let sockets = JournalSockets {
            stdout: "/nonexistent/stdout".into(),
            native: "/nonexistent/socket".into(),
        };
        let logs = ChildLogs::new(ChildLogMode::Fields, sockets);
        assert_eq!(logs.mode(), ChildLogMode::Stderr);
        let mut sink = shell("sink", "echo '<4>disk almost full'; echo plain >&2");
        sink.restart.policy = flowctl::plan::RestartPolicy::Never;
        supervise(&logs, sink, |c| c.last_exit.is_some());
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INSIDE, TEST)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The supervisor's stderr format: the `<N>` prefix is kept, there being no priority.
    assert!(stderr.contains("sink| <4>disk almost full\n"), "{stderr}");
    assert!(stderr.contains("sink| plain\n"), "{stderr}");
}

#[test]
fn flowctl_logs_shows_only_that_components_entries() {
    with_private_journald("flowctl_logs_shows_only_that_components_entries", || {
        let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
        supervise_all(
            &logs,
            vec![
                shell("ttp-source", "echo 'source says hi'; exec sleep 1000"),
                shell("ttp-sink", "echo 'sink says hi'; exec sleep 1000"),
            ],
            |_| entries("FLOWCTL_PIPELINE=ttp", 0).len() >= 2,
        );
        let shown = flowctl_logs(&["ttp-sink", "-n", "10", "--pipeline", "ttp"]);
        assert!(shown.contains("ttp-sink["), "{shown}");
        assert!(shown.contains("sink says hi"), "{shown}");
        assert!(!shown.contains("source says hi"), "{shown}");
    });
}

#[test]
fn relayed_lines_longer_than_64_kib_become_several_entries() {
    with_private_journald(
        "relayed_lines_longer_than_64_kib_become_several_entries",
        || {
            let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
            let script = "head -c 70000 /dev/zero | tr '\\0' x; echo; echo after; exec sleep 1000";
            supervise(&logs, shell("chatty", script), |_| {
                entries("FLOWCTL_COMPONENT=chatty", 0).len() >= 3
            });
            let es = entries("FLOWCTL_COMPONENT=chatty", 3);
            let lens: Vec<usize> = es.iter().map(|e| e["MESSAGE"].len()).collect();
            assert_eq!(lens, [64 * 1024, 70000 - 64 * 1024, 5], "{es:#?}");
            assert!(es[..2]
                .iter()
                .all(|e| e["MESSAGE"].bytes().all(|b| b == b'x')));
            assert_eq!(es[2]["MESSAGE"], "after");
        },
    );
}
