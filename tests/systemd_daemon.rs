//! `flowctl-sup run`, the daemon flowctl.service starts, driven the way systemd drives it: a
//! notify socket bound by the test, SIGTERM to stop.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod daemon_common;
use daemon_common::{config_text, notify_socket, sup_status, write_config, SUP};

struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    /// Waits for a clean exit and returns everything the daemon wrote to stderr.
    fn exit_stderr(&mut self) -> String {
        let code = self.child.wait().unwrap();
        assert!(code.success(), "{code:?}");
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `flowctl-sup --socket SOCKET reload`, as `systemctl reload` runs it.
fn sup_reload(socket: impl AsRef<std::path::Path>) -> std::process::Output {
    Command::new(SUP)
        .arg("--socket")
        .arg(socket.as_ref())
        .arg("reload")
        .output()
        .unwrap()
}

/// Notifications until one contains `want` (or the deadline passes).
fn wait_for(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            seen.push(msg.clone());
            if msg.contains(want) {
                return msg;
            }
        }
    }
    panic!("no {want:?} among {seen:#?}");
}

#[test]
fn daemon_runs_the_pipelines_dir_reports_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    std::fs::write(pipelines.join("good.yaml"), sleeper("good", "ticker", 1000)).unwrap();
    std::fs::write(pipelines.join("broken.yaml"), "kind: [\n").unwrap();
    let (notify_path, sock) = notify_socket(dir.path());

    let child = Command::new(SUP)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child };
    let mut seen = Vec::new();
    let ready = wait_for(&sock, "READY=1", &mut seen);
    assert!(
        ready.contains("STATUS=1 pipeline, 1/1 ready, 0 failed"),
        "{ready}"
    );
    wait_for(&sock, "WATCHDOG=1", &mut seen);

    let socket = dir.path().join("run/flowctl.sock");
    let status = sup_status(&socket);
    let pipelines_json = status["pipelines"].as_array().unwrap();
    assert_eq!(pipelines_json.len(), 1, "{status}");
    let ticker = &pipelines_json[0]["components"][0];
    assert_eq!(ticker["id"], "ticker");
    let pid = ticker["pid"].as_i64().unwrap() as i32;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = wait_for(&sock, "STOPPING=1", &mut seen);
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    let stderr = daemon.exit_stderr();
    assert!(
        stderr.contains("pipeline skipped") && stderr.contains("broken.yaml"),
        "{stderr}"
    );
    // The component was stopped with the daemon.
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err());
    assert!(!socket.exists());
}

#[test]
fn daemon_with_a_bad_config_exits_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flowctl.toml");
    std::fs::write(&config, "[log]\nchildren = \"syslog\"\n").unwrap();
    let out = Command::new(SUP)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:12: key `log.children`", config.display())),
        "{err}"
    );
}

#[test]
fn instance_mode_runs_one_pipeline_with_its_own_runtime_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    for name in ["ttp", "other"] {
        std::fs::write(
            pipelines.join(format!("{name}.yaml")),
            sleeper(name, "s", 1000),
        )
        .unwrap();
    }
    let (notify_path, sock) = notify_socket(dir.path());
    let child = Command::new(SUP)
        .args(["run", "--instance", "ttp", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child };
    let mut seen = Vec::new();
    let ready = wait_for(&sock, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=1 pipeline, 1/1 ready"), "{ready}");
    let status = sup_status(&dir.path().join("run/ttp/flowctl.sock"));
    assert_eq!(status["pipelines"][0]["name"], "ttp", "{status}");
    assert_eq!(status["pipelines"].as_array().unwrap().len(), 1);
    // A reload re-reads the instance's own file only.
    let out = sup_reload(dir.path().join("run/ttp/flowctl.sock"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ttp: unchanged\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.child.wait().unwrap().success());
}

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");

fn sleeper(name: &str, id: &str, secs: u32) -> String {
    format!(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  sources:\n    \
         - id: {id}\n      command: sleep\n      args: [\"{secs}\"]\n"
    )
}

/// Each component's pid by `PIPELINE/ID`, from `flowctl-sup status --json`.
fn pids(socket: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    let status = sup_status(socket);
    let mut pids = std::collections::BTreeMap::new();
    for p in status["pipelines"].as_array().unwrap() {
        for c in p["components"].as_array().unwrap() {
            if let Some(pid) = c["pid"].as_i64() {
                pids.insert(
                    format!(
                        "{}/{}",
                        p["name"].as_str().unwrap(),
                        c["id"].as_str().unwrap()
                    ),
                    pid,
                );
            }
        }
    }
    pids
}

/// Polls the pids until `pred` holds.
fn wait_pids(
    socket: &std::path::Path,
    pred: impl Fn(&std::collections::BTreeMap<String, i64>) -> bool,
) -> std::collections::BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = pids(socket);
        if pred(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "timed out; pids now {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn daemon_reloads_on_sighup_and_flowctl_sup_reload_and_installs_with_apply_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    std::fs::write(pipelines.join("keep.yaml"), sleeper("keep", "steady", 1000)).unwrap();
    std::fs::write(pipelines.join("edit.yaml"), sleeper("edit", "worker", 1000)).unwrap();
    let (notify_path, sock) = notify_socket(dir.path());
    let child = Command::new(SUP)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child };
    let mut seen = Vec::new();
    wait_for(&sock, "READY=1", &mut seen);
    let socket = dir.path().join("run/flowctl.sock");
    let before = pids(&socket);
    let steady = before["keep/steady"];
    let worker = before["edit/worker"];

    // SIGHUP: one component changed, one pipeline added; systemd hears RELOADING then READY.
    std::fs::write(pipelines.join("edit.yaml"), sleeper("edit", "worker", 1001)).unwrap();
    std::fs::write(pipelines.join("new.yaml"), sleeper("new", "fresh", 1000)).unwrap();
    seen.clear();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let reloading = wait_for(&sock, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_for(&sock, "READY=1", &mut seen);
    let after = wait_pids(&socket, |p| {
        p.contains_key("new/fresh") && p.get("edit/worker").is_some_and(|&w| w != worker)
    });
    assert_eq!(
        after["keep/steady"], steady,
        "unchanged component kept its pid"
    );
    assert!(
        !alive(worker),
        "the changed component's old process is gone"
    );

    // `flowctl-sup reload` with nothing changed: nothing restarts, and it says so.
    let out = sup_reload(&socket);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("edit: unchanged") && stdout.contains("keep: unchanged"),
        "{stdout}"
    );
    assert_eq!(pids(&socket), after);

    // A broken pipeline file: rejected with its error, the running version keeps running,
    // the other change (fresh's pipeline removed) still applies.
    std::fs::write(pipelines.join("edit.yaml"), "kind: [\n").unwrap();
    std::fs::remove_file(pipelines.join("new.yaml")).unwrap();
    let out = sup_reload(&socket);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("edit.yaml"), "{stderr}");
    assert!(stdout.contains("new: removed"), "{stdout}");
    let now = wait_pids(&socket, |p| !p.contains_key("new/fresh"));
    assert_eq!(now["edit/worker"], after["edit/worker"]);
    assert_eq!(now["keep/steady"], steady);
    assert!(!alive(after["new/fresh"]));

    // A config file that does not parse rejects the whole reload.
    std::fs::write(&config, "[log]\nchildren = \"syslog\"\n").unwrap();
    let out = sup_reload(&socket);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reload rejected, nothing changed") && stderr.contains("log.children"),
        "{stderr}"
    );
    std::fs::write(&config, config_text(dir.path(), "")).unwrap();
    std::fs::write(pipelines.join("edit.yaml"), sleeper("edit", "worker", 1001)).unwrap();

    // `flowctl apply -f`: an invalid file is refused like `flowctl validate` refuses it…
    let elsewhere = dir.path().join("applied-src.yaml");
    std::fs::write(
        &elsewhere,
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: applied}\nspec: {}\n",
    )
    .unwrap();
    let apply = |file: &std::path::Path| {
        Command::new(FLOWCTL)
            .args(["apply", "-f"])
            .arg(file)
            .arg("--pipelines-dir")
            .arg(&pipelines)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap()
    };
    let out = apply(&elsewhere);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("applied-src.yaml:") && stderr.contains("error:"),
        "{stderr}"
    );
    assert!(!pipelines.join("applied.yaml").exists());
    // …a valid one is installed as <name>.yaml and started, the others untouched.
    std::fs::write(&elsewhere, sleeper("applied", "extra", 1000)).unwrap();
    let out = apply(&elsewhere);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("applied: added, starting extra"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(pipelines.join("applied.yaml")).unwrap(),
        sleeper("applied", "extra", 1000)
    );
    let with_applied = wait_pids(&socket, |p| p.contains_key("applied/extra"));
    assert_eq!(with_applied["keep/steady"], steady);
    assert_eq!(with_applied["edit/worker"], now["edit/worker"]);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&pipelines)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // `flowctl get pipelines` asks the daemon for each pipeline's state.
    let out = Command::new(FLOWCTL)
        .args(["get", "pipelines", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let applied_row = table
        .lines()
        .find(|l| l.starts_with("applied"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        applied_row.contains("running") && applied_row.contains("1/1"),
        "{table}"
    );

    // `flowctl delete`: the file goes, the pipeline is drained and stopped.
    let extra = with_applied["applied/extra"];
    let out = Command::new(FLOWCTL)
        .args(["delete", "applied", "--pipelines-dir"])
        .arg(&pipelines)
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("applied: removed"), "{stdout}");
    assert!(!pipelines.join("applied.yaml").exists());
    let last = wait_pids(&socket, |p| !p.contains_key("applied/extra"));
    assert!(!alive(extra));
    assert_eq!(last["keep/steady"], steady);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stderr = daemon.exit_stderr();
    assert!(
        stderr.contains("pipeline rejected on reload; `edit` keeps running unchanged"),
        "{stderr}"
    );
}

#[test]
fn second_file_with_a_running_pipelines_name_is_rejected_and_the_running_one_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    // At startup the first file in sorted order wins.
    std::fs::write(pipelines.join("b.yaml"), sleeper("dup", "first", 1000)).unwrap();
    std::fs::write(pipelines.join("c.yaml"), sleeper("dup", "later", 1000)).unwrap();
    let (notify_path, sock) = notify_socket(dir.path());
    let child = Command::new(SUP)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _daemon = Daemon { child };
    wait_for(&sock, "READY=1", &mut Vec::new());
    let socket = dir.path().join("run/flowctl.sock");
    let before = wait_pids(&socket, |p| p.contains_key("dup/first"));
    assert!(!before.contains_key("dup/later"), "{before:?}");

    // A newcomer sorting before the running file does not replace it; both files are named.
    std::fs::write(pipelines.join("a.yaml"), sleeper("dup", "newcomer", 1000)).unwrap();
    let out = sup_reload(&socket);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("a.yaml: pipeline \"dup\" is already running from")
            && stderr.contains("b.yaml"),
        "{stderr}"
    );
    assert!(!stderr.contains("rejected b.yaml"), "{stderr}");
    assert!(stdout.contains("dup: unchanged"), "{stdout}");
    assert_eq!(pids(&socket), before);

    // Even while the running file does not load, the newcomer does not take over.
    std::fs::write(pipelines.join("b.yaml"), "kind: [\n").unwrap();
    let out = sup_reload(&socket);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a.yaml") && stderr.contains("b.yaml"),
        "{stderr}"
    );
    assert_eq!(pids(&socket), before);
    assert!(alive(before["dup/first"]));
}
