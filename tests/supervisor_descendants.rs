//! Processes that leave their component's process group (fork, `setsid`, fork again) are
//! still ended with the component, and what a killed supervisor left behind is ended by the
//! next one.

mod supervisor_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::api::protocol::Request;
use flowctl::supervisor::descendants::{self, ProcId, Record};
use supervisor_common::{alive, kit, read_when_present, testkit};

fn pipeline_file(dir: &Path, name: &str, args: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: {name}\nspec:\n  sources:\n\
         \x20   - id: forker\n      command: {}\n      args: [{args}]\n      stop:\n        timeout: 2s\n",
        testkit().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `flowctl run` in process-group mode: no cgroups, even where the host allows them.
fn flowctl_run(dir: &Path, file: &Path) -> Child {
    flowctl_run_with(dir, file, &["--no-cgroups"])
}

fn flowctl_run_with(dir: &Path, file: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("run")
        .arg(file)
        .args(extra)
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--no-registry")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_pid_file(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn session_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn component_that_double_forks_and_setsids_is_ended_with_its_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let daemon_file = dir.path().join("daemon.pid");
    let main_file = dir.path().join("main.pid");
    let file = pipeline_file(
        dir.path(),
        "forks",
        &format!(
            "--daemonize, {}, --pid-file, {}",
            daemon_file.display(),
            main_file.display()
        ),
    );
    let mut run = flowctl_run(dir.path(), &file);
    let daemon = wait_pid_file(&daemon_file);
    let main = wait_pid_file(&main_file);
    assert!(alive(daemon));
    assert_ne!(
        session_of(daemon),
        session_of(main),
        "the daemon has a session of its own"
    );
    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while run.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "flowctl run did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(main));
    assert!(
        !alive(daemon),
        "the double-forked daemon {daemon} outlived flowctl run"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_double_forked_daemon_that_ignores_sigterm_is_killed_when_its_component_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let daemon_file = dir.path().join("daemon.pid");
    let mut c = kit(
        "forker",
        &[
            "--ignore-sigterm",
            "--daemonize",
            daemon_file.to_str().unwrap(),
        ],
    );
    c.stop.timeout = Duration::from_secs(1);
    let running = supervisor_common::start(flowctl::supervisor::testplan::pipeline("p", vec![c]));
    let daemon: i32 = read_when_present(&daemon_file, Duration::from_secs(20))
        .await
        .trim()
        .parse()
        .unwrap();
    let reply = running
        .handle
        .request(Request::Stop {
            component: "forker".into(),
        })
        .await;
    assert!(reply.ok, "{reply:?}");
    let asked = Instant::now();
    while alive(daemon) {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "daemon {daemon} still alive {:?} after the stop (timeout 1 s)",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It ignores SIGTERM: only the SIGKILL after the stop timeout ended it.
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    running.handle.shutdown();
    running.task.await.unwrap();
}

#[test]
fn descendants_left_by_a_killed_supervisor_are_ended_when_the_next_one_starts() {
    let dir = tempfile::tempdir().unwrap();
    let daemon_file = dir.path().join("daemon.pid");
    let first = pipeline_file(
        dir.path(),
        "first",
        &format!("--daemonize, {}", daemon_file.display()),
    );
    let mut run = flowctl_run(dir.path(), &first);
    let daemon = wait_pid_file(&daemon_file);
    let record = descendants::record_path(&dir.path().join("run"));
    wait_until(
        "the daemon is in the supervisor's record",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&record)
                .is_ok_and(|r| r.contains(&format!("leftover {daemon} ")))
        },
    );
    run.kill().unwrap();
    run.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(daemon),
        "the daemon survives the SIGKILLed supervisor"
    );
    let second = pipeline_file(dir.path(), "second", "--exit-code, '0'");
    let mut next = flowctl_run(dir.path(), &second);
    wait_until(
        "the next supervisor ends the daemon",
        Duration::from_secs(20),
        || !alive(daemon),
    );
    let status = next.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_recorded_pid_whose_start_time_differs_is_never_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = bystander.id() as i32;
    let start = descendants::stat(pid).unwrap().id.start;
    let record = Record {
        boot: descendants::boot_id(),
        // A supervisor that is gone: a pid that cannot exist.
        supervisor: Some(ProcId {
            pid: i32::MAX,
            start: 1,
        }),
        mains: [ProcId {
            pid,
            start: start + 1,
        }]
        .into(),
        leftovers: [ProcId {
            pid,
            start: start + 1,
        }]
        .into(),
    };
    let path = descendants::record_path(dir.path());
    record.save(&path).unwrap();
    let ended = descendants::end_predecessors(&path, Duration::from_millis(200));
    assert!(ended.is_empty(), "{ended:?}");
    assert!(
        alive(pid),
        "a process with another start time was signalled"
    );
    // The same pid with its real start time is ended.
    let record = Record {
        leftovers: [ProcId { pid, start }].into(),
        mains: Default::default(),
        ..record
    };
    record.save(&path).unwrap();
    let ended = descendants::end_predecessors(&path, Duration::from_secs(5));
    assert_eq!(ended, vec![ProcId { pid, start }]);
    let status = bystander.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[tokio::test(flavor = "current_thread")]
async fn a_double_forked_daemon_shows_in_status_under_its_component_while_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let daemon_file = dir.path().join("daemon.pid");
    let c = kit("forker", &["--daemonize", daemon_file.to_str().unwrap()]);
    let running = supervisor_common::start(flowctl::supervisor::testplan::pipeline("p", vec![c]));
    let daemon: i32 = read_when_present(&daemon_file, Duration::from_secs(20))
        .await
        .trim()
        .parse()
        .unwrap();
    let shown =
        supervisor_common::wait_for(&running.handle, "forker", Duration::from_secs(20), |c| {
            c.outside_group.contains(&daemon)
        })
        .await;
    assert_eq!(shown.outside_group, vec![daemon]);
    let table = flowctl::api::render::table(&supervisor_common::status(&running.handle).await);
    assert!(
        table.contains(&format!("outside its group: {daemon}")),
        "{table}"
    );
    // SAFETY: killing the daemon this test's component started.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    supervisor_common::wait_for(&running.handle, "forker", Duration::from_secs(20), |c| {
        c.outside_group.is_empty()
    })
    .await;
    running.handle.shutdown();
    running.task.await.unwrap();
}

#[test]
fn flowctl_run_gives_each_component_a_cgroup_of_its_own_when_the_host_allows_and_removes_it() {
    let Ok(own) = flowctl::systemd::cgroup::own_cgroup_dir() else {
        eprintln!("skipped: no cgroup v2 here");
        return;
    };
    if nix::unistd::access(&own.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_err() {
        eprintln!("skipped: {} is not writable", own.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon_file = dir.path().join("daemon.pid");
    let file = pipeline_file(
        dir.path(),
        "grouped",
        &format!("--daemonize, {}", daemon_file.display()),
    );
    let mut run = flowctl_run_with(dir.path(), &file, &[]);
    let daemon = wait_pid_file(&daemon_file);
    let subtree = own.join(format!("flowctl-{}", run.id()));
    let cgroup = std::fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap();
    let leaf = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    assert!(
        leaf.ends_with(&format!("/flowctl-{}/grouped/forker", run.id())),
        "the daemon's cgroup is {leaf}"
    );
    assert!(subtree.join("grouped/forker").is_dir());
    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    run.wait().unwrap();
    assert!(!alive(daemon));
    assert!(!subtree.exists(), "{} is left behind", subtree.display());
}

#[test]
fn a_killed_supervisors_own_cgroup_subtree_is_ended_and_removed_when_the_next_one_starts() {
    let Ok(own) = flowctl::systemd::cgroup::own_cgroup_dir() else {
        eprintln!("skipped: no cgroup v2 here");
        return;
    };
    if nix::unistd::access(&own.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_err() {
        eprintln!("skipped: {} is not writable", own.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon_file = dir.path().join("daemon.pid");
    let first = pipeline_file(
        dir.path(),
        "first",
        &format!("--daemonize, {}", daemon_file.display()),
    );
    let mut run = flowctl_run_with(dir.path(), &first, &[]);
    let daemon = wait_pid_file(&daemon_file);
    let subtree = own.join(format!("flowctl-{}", run.id()));
    assert!(subtree.is_dir());
    run.kill().unwrap();
    run.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(daemon),
        "the daemon survives the SIGKILLed supervisor"
    );
    // Only the cgroup tells the next supervisor about it.
    let _ = std::fs::remove_file(descendants::record_path(&dir.path().join("run")));
    let second = pipeline_file(dir.path(), "second", "--exit-code, '0'");
    let mut next = flowctl_run_with(dir.path(), &second, &[]);
    wait_until(
        "the next supervisor ends the daemon",
        Duration::from_secs(20),
        || !alive(daemon),
    );
    assert_eq!(next.wait().unwrap().code(), Some(0));
    assert!(!subtree.exists(), "{} is left behind", subtree.display());
}

#[test]
fn a_record_that_others_could_have_written_is_not_acted_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = bystander.id() as i32;
    let start = descendants::stat(pid).unwrap().id.start;
    let record = Record {
        boot: descendants::boot_id(),
        supervisor: Some(ProcId {
            pid: i32::MAX,
            start: 1,
        }),
        mains: Default::default(),
        leftovers: [ProcId { pid, start }].into(),
    };
    let path = descendants::record_path(dir.path());
    record.save(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ended = descendants::end_predecessors(&path, Duration::from_millis(200));
    assert!(ended.is_empty(), "{ended:?}");
    assert!(alive(pid));
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn group_members_left_by_a_killed_supervisor_are_ended_when_the_next_one_starts() {
    let dir = tempfile::tempdir().unwrap();
    let grandchild_file = dir.path().join("grandchild.pid");
    let main_file = dir.path().join("main.pid");
    // The grandchild stays in the component's group and ignores SIGTERM.
    let first = pipeline_file(
        dir.path(),
        "first",
        &format!(
            "--grandchild, {}, --pid-file, {}",
            grandchild_file.display(),
            main_file.display()
        ),
    );
    let mut run = flowctl_run(dir.path(), &first);
    let grandchild = wait_pid_file(&grandchild_file);
    let main = wait_pid_file(&main_file);
    run.kill().unwrap();
    run.wait().unwrap();
    wait_until(
        "the main process dies with its supervisor",
        Duration::from_secs(10),
        || !alive(main),
    );
    assert!(
        alive(grandchild),
        "the grandchild survives the SIGKILLed supervisor"
    );
    let second = pipeline_file(dir.path(), "second", "--exit-code, '0'");
    let mut next = flowctl_run(dir.path(), &second);
    wait_until(
        "the next supervisor ends the grandchild",
        Duration::from_secs(20),
        || !alive(grandchild),
    );
    assert_eq!(next.wait().unwrap().code(), Some(0));
}
