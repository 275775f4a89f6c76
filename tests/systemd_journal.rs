//! Children's output and the daemon's own logs in a real journal: each test re-runs itself
//! inside a private mount namespace with a tmpfs on /run, starts `systemd-journald` there (it
//! needs no PID 1), and reads the entries back with `journalctl`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::systemd::journal::{ChildIdentity, ChildLogMode, ChildLogs, JournalSockets};

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const INSIDE: &str = "FLOWCTL_TEST_PRIVATE_JOURNAL";

/// Runs `body` in a private namespace with its own journald; returns false (after saying why)
/// when this machine cannot do that, so the caller returns early.
fn with_private_journald(test: &str, body: impl FnOnce()) -> bool {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        let journald = start_journald();
        body();
        stop(journald);
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
            .args(["-D", "/run/log/journal", "-o", "json", "--no-pager", filter])
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

fn by_message<'a>(es: &'a [HashMap<String, String>], msg: &str) -> &'a HashMap<String, String> {
    es.iter()
        .find(|e| e.get("MESSAGE").map(String::as_str) == Some(msg))
        .unwrap_or_else(|| panic!("no entry {msg:?} in {es:#?}"))
}

const SCRIPT: &str = r#"echo "ledger 1 done"; echo "<3>upstream gone" >&2; echo "<5>notice this""#;

#[test]
fn stream_mode_child_writes_straight_to_journald_with_identifier_and_priority() {
    with_private_journald(
        "stream_mode_child_writes_straight_to_journald_with_identifier_and_priority",
        || {
            let logs = ChildLogs::new(ChildLogMode::Stream, JournalSockets::system());
            assert_eq!(logs.mode(), ChildLogMode::Stream);
            let out = logs
                .attach(&ChildIdentity {
                    pipeline: "ttp".into(),
                    component: "ttp-source".into(),
                    restart: Some(0),
                })
                .unwrap();
            let mut child = Command::new("sh")
                .args(["-c", SCRIPT])
                .stdout(out.stdout.try_clone().unwrap())
                .stderr(out.stderr.try_clone().unwrap())
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            // The relay is None in stream mode: no byte passes through us.
            let rt = tokio::runtime::Runtime::new().unwrap();
            let _guard = rt.enter();
            assert!(out.start(child.id()).unwrap().is_none());
            assert!(child.wait().unwrap().success());

            let es = entries("SYSLOG_IDENTIFIER=ttp-source", 3);
            let e = by_message(&es, "ledger 1 done");
            assert_eq!(e["PRIORITY"], "6");
            assert_eq!(e["_TRANSPORT"], "stdout");
            assert_eq!(e["_PID"], pid);
            assert_eq!(by_message(&es, "upstream gone")["PRIORITY"], "3");
            assert_eq!(by_message(&es, "notice this")["PRIORITY"], "5");
        },
    );
}

#[test]
fn fields_mode_relays_lines_with_flowctl_fields() {
    with_private_journald("fields_mode_relays_lines_with_flowctl_fields", || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
            assert_eq!(logs.mode(), ChildLogMode::Fields);
            let out = logs
                .attach(&ChildIdentity {
                    pipeline: "ttp".into(),
                    component: "ttp-processor".into(),
                    restart: Some(2),
                })
                .unwrap();
            let mut child = tokio::process::Command::new("sh")
                .args(["-c", SCRIPT])
                .stdout(out.stdout.try_clone().unwrap())
                .stderr(out.stderr.try_clone().unwrap())
                .spawn()
                .unwrap();
            let pid = child.id().unwrap();
            let relay = out.start(pid).unwrap().expect("a relay task");
            assert!(child.wait().await.unwrap().success());
            tokio::time::timeout(Duration::from_secs(10), relay)
                .await
                .expect("relay ends at EOF")
                .unwrap();

            let es = entries("FLOWCTL_COMPONENT=ttp-processor", 3);
            assert_eq!(es.len(), 3, "{es:#?}");
            let e = by_message(&es, "ledger 1 done");
            assert_eq!(e["PRIORITY"], "6");
            assert_eq!(e["SYSLOG_IDENTIFIER"], "ttp-processor");
            assert_eq!(e["SYSLOG_PID"], pid.to_string());
            assert_eq!(e["FLOWCTL_PIPELINE"], "ttp");
            assert_eq!(e["FLOWCTL_RESTART"], "2");
            assert_eq!(by_message(&es, "upstream gone")["PRIORITY"], "3");
            assert_eq!(by_message(&es, "notice this")["PRIORITY"], "5");
        });
    });
}

#[test]
fn relay_waits_for_a_grandchild_holding_the_output_open() {
    with_private_journald(
        "relay_waits_for_a_grandchild_holding_the_output_open",
        || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
                let out = logs
                    .attach(&ChildIdentity {
                        pipeline: "p".into(),
                        component: "forker".into(),
                        restart: Some(0),
                    })
                    .unwrap();
                let mut child = tokio::process::Command::new("sh")
                    .args(["-c", "(sleep 0.3; echo from-grandchild) & echo from-child"])
                    .stdout(out.stdout.try_clone().unwrap())
                    .stderr(out.stderr.try_clone().unwrap())
                    .spawn()
                    .unwrap();
                let relay = out.start(child.id().unwrap()).unwrap().unwrap();
                child.wait().await.unwrap();
                tokio::time::timeout(Duration::from_secs(10), relay)
                    .await
                    .unwrap()
                    .unwrap();
                let es = entries("FLOWCTL_COMPONENT=forker", 2);
                by_message(&es, "from-child");
                by_message(&es, "from-grandchild");
            });
        },
    );
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
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let out = logs
                .attach(&ChildIdentity {
                    pipeline: "p".into(),
                    component: "sink".into(),
                    restart: Some(0),
                })
                .unwrap();
            let mut child = tokio::process::Command::new("sh")
                .args(["-c", "echo '<4>disk almost full'; echo plain >&2"])
                .stdout(out.stdout.try_clone().unwrap())
                .stderr(out.stderr.try_clone().unwrap())
                .spawn()
                .unwrap();
            let relay = out.start(child.id().unwrap()).unwrap().unwrap();
            child.wait().await.unwrap();
            relay.await.unwrap();
        });
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INSIDE, TEST)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sink | disk almost full\n"), "{stderr}");
    assert!(stderr.contains("sink | plain\n"), "{stderr}");
}

#[test]
fn flowctl_logs_shows_only_that_components_entries() {
    with_private_journald("flowctl_logs_shows_only_that_components_entries", || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let logs = ChildLogs::new(ChildLogMode::Fields, JournalSockets::system());
            for (component, line) in [
                ("ttp-source", "source says hi"),
                ("ttp-sink", "sink says hi"),
            ] {
                let out = logs
                    .attach(&ChildIdentity {
                        pipeline: "ttp".into(),
                        component: component.into(),
                        restart: Some(0),
                    })
                    .unwrap();
                let mut child = tokio::process::Command::new("echo")
                    .arg(line)
                    .stdout(out.stdout.try_clone().unwrap())
                    .stderr(out.stderr.try_clone().unwrap())
                    .spawn()
                    .unwrap();
                let relay = out.start(child.id().unwrap()).unwrap().unwrap();
                child.wait().await.unwrap();
                relay.await.unwrap();
            }
        });
        entries("FLOWCTL_PIPELINE=ttp", 2);
        let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .args(["logs", "ttp-sink", "-n", "10", "--pipeline", "ttp"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.contains("ttp-sink["), "{shown}");
        assert!(shown.contains("sink says hi"), "{shown}");
        assert!(!shown.contains("source says hi"), "{shown}");
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
fn native_journal_reconnects_after_journald_restarts() {
    with_private_journald("native_journal_reconnects_after_journald_restarts", || {
        use flowctl::systemd::journal::{NativeJournal, NATIVE_SOCKET};
        let who = ChildIdentity {
            pipeline: "p".into(),
            component: "survivor".into(),
            restart: Some(0),
        };
        let j = NativeJournal::connect(Path::new(NATIVE_SOCKET)).unwrap();
        j.line(&who, Some(1), b"before").unwrap();
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
        std::fs::remove_file(NATIVE_SOCKET).ok();
        std::fs::remove_file(flowctl::systemd::journal::STDOUT_SOCKET).ok();
        let second = start_journald_process();
        j.line(&who, Some(1), b"after").unwrap();
        let es = entries("FLOWCTL_COMPONENT=survivor", 2);
        by_message(&es, "before");
        by_message(&es, "after");
        stop(second);
    });
}

/// Runs `component` (pipeline `ttp`) under a real supervisor whose log sink is `logs`'s, until
/// `until` holds for its status (it must not block: the supervisor shares this thread); then
/// stops it. Returns the status that satisfied `until`.
fn supervise(
    logs: &ChildLogs,
    component: flowctl::plan::ComponentPlan,
    mut until: impl FnMut(&flowctl::api::protocol::ComponentStatus) -> bool,
) -> flowctl::api::protocol::ComponentStatus {
    use flowctl::supervisor::{testplan, Supervisor, SupervisorOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut options = SupervisorOptions::new(dir.path().join("run"));
    options.log_sink = logs.sink();
    let id = component.id.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (sup, handle) =
            Supervisor::new(vec![testplan::pipeline("ttp", vec![component])], options).unwrap();
        let task = tokio::spawn(sup.run());
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = loop {
            let status = handle.status().await.unwrap();
            let c = status.pipelines[0]
                .components
                .iter()
                .find(|c| c.id == id)
                .unwrap()
                .clone();
            if until(&c) {
                break c;
            }
            assert!(Instant::now() < deadline, "timed out: {c:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        handle.shutdown();
        task.await.unwrap().unwrap();
        seen
    })
}

fn shell(id: &str, script: &str) -> flowctl::plan::ComponentPlan {
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
fn stream_mode_supervisor_hands_children_a_journald_stream_that_flowctl_logs_finds() {
    with_private_journald(
        "stream_mode_supervisor_hands_children_a_journald_stream_that_flowctl_logs_finds",
        || {
            let logs = ChildLogs::new(ChildLogMode::Stream, JournalSockets::system());
            assert_eq!(logs.mode(), ChildLogMode::Stream);
            let script = "echo 'to stdout'; echo '<3>to stderr with a prefix' >&2; \
                          echo 'plain stderr' >&2; exec sleep 1000";
            let mut fds = None;
            let ran = supervise(&logs, shell("streamer", script), |c| {
                let Some(pid) = c.pid else { return false };
                // Both ends are one journald connection, not pipes to the supervisor.
                fds = Some((fd_target(pid, 1), fd_target(pid, 2)));
                entries("SYSLOG_IDENTIFIER=streamer", 0).len() >= 3
            });
            let (out, err) = fds.unwrap();
            assert!(out.starts_with("socket:"), "{out}");
            assert_eq!(out, err);

            let es = entries("SYSLOG_IDENTIFIER=streamer", 3);
            assert_eq!(es.len(), 3, "{es:#?}");
            for e in &es {
                assert_eq!(e["_TRANSPORT"], "stdout", "{e:#?}");
                assert_eq!(e["_PID"], ran.pid.unwrap().to_string());
                assert!(!e.contains_key("FLOWCTL_COMPONENT"), "{e:#?}");
            }
            assert_eq!(by_message(&es, "to stdout")["PRIORITY"], "6");
            assert_eq!(by_message(&es, "to stderr with a prefix")["PRIORITY"], "3");
            assert_eq!(by_message(&es, "plain stderr")["PRIORITY"], "6");

            // No unit outside systemd: `--unit ""` matches the identifier from anywhere.
            let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
                .args(["logs", "streamer", "--unit", ""])
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
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
