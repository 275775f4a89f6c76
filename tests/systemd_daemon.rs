//! `flowctl-sup run`, the daemon flowctl.service starts, driven the way systemd drives it: a
//! notify socket bound by the test, SIGTERM to stop.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUP: &str = env!("CARGO_BIN_EXE_flowctl-sup");

struct Daemon {
    child: std::process::Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("good.yaml"),
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: good}\nspec:\n  sources:\n    \
         - id: ticker\n      command: sleep\n      args: [\"1000\"]\n",
    )
    .unwrap();
    std::fs::write(pipelines.join("broken.yaml"), "kind: [\n").unwrap();
    let config = dir.path().join("flowctl.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nlisten = \"127.0.0.1:0\"\n\
             [paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\npipelines_dir = \"{1}\"\n\
             [log]\nchildren = \"stderr\"\n[cgroups]\nmode = \"off\"\n",
            dir.path().display(),
            pipelines.display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

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
    let out = Command::new(SUP)
        .arg("--socket")
        .arg(&socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
    let code = daemon.child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    let mut stderr = String::new();
    daemon
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
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
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    for name in ["ttp", "other"] {
        std::fs::write(
            pipelines.join(format!("{name}.yaml")),
            format!(
                "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  \
                 sources:\n    - id: s\n      command: sleep\n      args: [\"1000\"]\n"
            ),
        )
        .unwrap();
    }
    let config = dir.path().join("flowctl.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nlisten = \"127.0.0.1:0\"\n\
             [paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\npipelines_dir = \"{1}\"\n\
             [log]\nchildren = \"stderr\"\n[cgroups]\nmode = \"off\"\n",
            dir.path().display(),
            pipelines.display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
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
    let out = Command::new(SUP)
        .arg("--socket")
        .arg(dir.path().join("run/ttp/flowctl.sock"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pipelines"][0]["name"], "ttp", "{status}");
    assert_eq!(status["pipelines"].as_array().unwrap().len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.child.wait().unwrap().success());
}
